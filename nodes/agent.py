"""The AgentPlanner node: instruction -> validated plan -> the plan's nodes, expanded in place.

ComfyUI itself runs the expanded steps (each one cached, each one with its progress), a record
node after every step keeps its outputs in the run folder, and a trace node writes trace.json.

With a model planner (openai, local) a plan that grounds something runs in two stages, so that a
grounding that finds nothing never feeds an empty mask to an edit: first its grounding steps
(set to report "not found" instead of stopping) and the AgentContinue node
(nodes/agent_continue.py), which looks at what they found and expands the rest of the plan, or
asks the planner once more. The offline planner's plans run in one stage: its grounding steps
stop the run with a clear message when they find nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Mapping

import folder_paths
from comfy_api.latest import io
from comfy_execution.graph_utils import GraphBuilder, add_graph_prefix

from ..agent.compile import bind_placeholders, bind_value, compile_plan, source, step_closure
from ..agent.plan import Plan
from ..agent.planners import ImageInfo, PlannerDeclined, get_planner
from ..agent.planners.llm import ChatPlanner
from ..agent.trace import new_run_id, run_dir, write_plan
from ..catalogue import all_tools
from ..catalogue.agent import AGENT_CONTINUE, AGENT_EDIT
from ..catalogue.spec import Tool
from .convert import image_batch_to_arrays
from .schema import tool_schema
from .web_events import announce_plan

log = logging.getLogger(__name__)


class PlanningError(ValueError):
    """The planner declined or failed; the message says why and what to do."""


# A grounding tool says whether it found anything (``found``) and can be told to go on when it did
# not (``if_nothing_found``): the catalogue, not a list of names, says which tools these are.
NOTHING_FOUND = "if_nothing_found"
FOUND = "found"
CONTINUE_NODE = "_continue"  # not a valid step id (those start with a letter), so it never clashes
PLANNER_SETTINGS = ("planner", "base_url", "model", "temperature", "local_model", "grounding_model", "sam_model")


def chat_planner(planner: str, base_url: str, model: str, temperature: float, local_model: str) -> ChatPlanner:
    if planner == "openai":
        from ..engines.llm_client import ChatClient

        client = ChatClient(base_url, model, temperature=temperature)
        return ChatPlanner(lambda messages, images, fmt: client.complete(messages, images=images, response_format=fmt),
                           name=f"openai:{model}")
    from ..engines.grounding import GroundingEngine

    engine = GroundingEngine(local_model)
    return ChatPlanner(lambda messages, images, fmt: engine.chat(messages, images=images),
                       name=f"local:{local_model}", structured=False)


def make_plan(instruction: str, image_rgb, planner: str, base_url: str, model: str, temperature: float,
              local_model: str, references: int):
    tools = all_tools()
    info = ImageInfo(width=image_rgb.shape[1], height=image_rgb.shape[0], pixels=image_rgb)
    chosen = (get_planner("offline", tools=tools) if planner == "offline"
              else chat_planner(planner, base_url, model, temperature, local_model))
    try:
        return chosen.plan(instruction, info, references=references), chosen.name
    except PlannerDeclined as declined:
        raise PlanningError(f"agent ({planner} planner): {declined.reason}") from None


def export_plan_workflows(plan, settings: dict, folder, run_id: str, images: dict) -> None:
    """Write the plan as ordinary workflows beside the trace: ``workflow_api.json`` (for /prompt)
    and ``workflow.json`` (UI format, opens on the canvas). Their LoadImage nodes read copies of
    this run's input images, saved into ComfyUI's input folder."""
    import numpy as np
    from PIL import Image

    from ..agent.compile import export_api_workflow
    from ..agent.trace import write_json_atomic
    from ..agent.workflow_format import api_to_ui
    from .object_info import definitions

    files = {}
    for name, tensor in images.items():
        if tensor is None:
            continue
        files[name] = f"agentic_edit_{run_id}_{name}.png"
        pixels = np.clip(np.rint(tensor[0, ..., :3].cpu().numpy() * 255), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(Path(folder_paths.get_input_directory()) / files[name])
    api = export_api_workflow(plan, all_tools(), files, filename_prefix=f"agentic_edit/{run_id}/replay",
                              settings=settings)
    write_json_atomic(folder / "workflow_api.json", api)
    write_json_atomic(folder / "workflow.json", api_to_ui(api, definitions(n["class_type"] for n in api.values())))


def is_grounding(tool: Tool) -> bool:
    return any(a.name == NOTHING_FOUND for a in tool.args) and any(o.name == FOUND for o in tool.outputs)


def grounding_steps(plan: Plan, tools: Iterable[Tool]) -> list[str]:
    catalogue = {t.name: t for t in tools}
    return [s.id for s in plan.steps if is_grounding(catalogue[s.tool])]


def first_stage_checks(plan: Plan, tools: Iterable[Tool]) -> list[str]:
    """The grounding steps that can run before anything is edited with a grounding's result.

    A grounding step that needs such an edit (find the cat in the image the dog was removed from)
    waits for the second stage, where finding nothing stops the run with a clear message.
    """
    grounding = set(grounding_steps(plan, tools))
    fed = set()  # steps that use a grounding's output, directly or not
    for step in plan.steps:
        if {ref.split(".", 1)[0] for ref in step.inputs.values() if "." in ref} & (grounding | fed):
            fed.add(step.id)
    return [g for g in (s.id for s in plan.steps) if g in grounding
            and not any(x in fed and x not in grounding for x in step_closure(plan, [g]))]


def grounding_overrides(plan: Plan, tools: Iterable[Tool], value: str, skip: Iterable[str] = ()) -> dict:
    """``if_nothing_found`` set to ``value`` on every grounding step of the plan but ``skip``."""
    skip = set(skip)
    return {s: {NOTHING_FOUND: value} for s in grounding_steps(plan, tools) if s not in skip}


def expand(graph: dict, outputs: tuple, prefix: str, sources: Mapping[str, object],
           ran_nodes: Mapping[str, str] | None = None) -> tuple[dict, tuple]:
    """``graph`` (ids local to one plan) as nodes to add to the running prompt: ids under ``prefix``,
    the instruction's images bound to the input tensors and, where a step already ran in an earlier
    stage, links to the node that ran it (``ran_nodes``: step id -> node id)."""
    prefixed, outs = add_graph_prefix(graph, outputs, prefix)
    bind_ran = (lambda step, index: [ran_nodes[step], index]) if ran_nodes else None
    bind_source = sources.__getitem__
    return (bind_placeholders(prefixed, bind_source, bind_ran),
            tuple(bind_value(o, bind_source, bind_ran) for o in outs))


def first_stage(plan: Plan, tools: list[Tool], checks: list[str], prefix: str, node_settings: Mapping[str, object],
                instruction: str, run_id: str, with_reference: bool) -> dict:
    """The grounding steps ``checks`` (and what they need), set to report "not found" instead of
    stopping, and the AgentContinue node that takes their ``found`` outputs and goes on; it gets the
    agent node's settings (``node_settings``) and the ids the steps will have under ``prefix``."""
    settings = {k: node_settings[k] for k in ("grounding_model", "sam_model")}
    stage = compile_plan(plan, tools, settings=settings, steps=checks,
                         overrides={c: {NOTHING_FOUND: "empty"} for c in checks})
    catalogue = {t.name: t for t in tools}
    found = {f"found_{c}": [stage.step_nodes[c], catalogue[plan.step(c).tool].output_index(FOUND)] for c in checks}
    ran = {step: prefix + node for step, node in stage.step_nodes.items()}
    inputs = {"image": source("image"), "instruction": instruction, "plan": plan.to_json(), "run_id": run_id,
              **{k: node_settings[k] for k in PLANNER_SETTINGS}, "stage": json.dumps(ran), **found}
    if with_reference:
        inputs["reference"] = source("reference")
    graph = dict(stage.graph)
    graph[CONTINUE_NODE] = {"class_type": AGENT_CONTINUE.node_id, "inputs": inputs}
    return graph


class AgentPlanner(io.ComfyNode):
    TOOL = AGENT_EDIT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL, enable_expand=True)

    @classmethod
    def fingerprint_inputs(cls, session_id="", **_):
        from .session_host import session_fingerprint  # the session's version: no stale turn from the cache

        return session_fingerprint(session_id)

    @classmethod
    def execute(cls, image, instruction, planner, base_url, model, temperature, local_model, grounding_model,
                sam_model, reference=None, session_id="") -> io.NodeOutput:
        if (session_id or "").strip():  # one turn of a session: nodes/agent_session.py
            from .agent_session import session_turn

            settings = dict(planner=planner, base_url=base_url, model=model, temperature=temperature,
                            local_model=local_model, grounding_model=grounding_model, sam_model=sam_model)
            return session_turn(image, instruction, settings, reference, session_id)
        rgb = image_batch_to_arrays(image)[0]
        plan, planner_name = make_plan(instruction, rgb, planner, base_url, model, temperature, local_model,
                                       references=0 if reference is None else 1)
        run_id = new_run_id("edit")
        folder = run_dir(folder_paths.get_output_directory(), run_id)
        write_plan(folder, instruction, plan.to_dict(), planner_name)
        announce_plan(run_id, instruction, plan.to_dict(), planner_name)  # the panel shows it on the node
        settings = {"grounding_model": grounding_model, "sam_model": sam_model}
        tools = all_tools()
        export_plan_workflows(plan, settings, folder, run_id, {"image": image, "reference": reference})
        sources = {"image": image, "reference": reference}
        prefix = GraphBuilder.alloc_prefix()
        checks = first_stage_checks(plan, tools) if planner != "offline" else []
        if checks:
            node_settings = dict(planner=planner, base_url=base_url, model=model, temperature=temperature,
                                 local_model=local_model, grounding_model=grounding_model, sam_model=sam_model)
            graph = first_stage(plan, tools, checks, prefix, node_settings, instruction, run_id,
                                with_reference=reference is not None)
            expanded, (output, plan_json, trace) = expand(
                graph, tuple([CONTINUE_NODE, i] for i in range(3)), prefix, sources)
            log.info("agent: %s planned %s -> run %s; grounding %s runs first", planner_name, plan.tool_names,
                     run_id, checks)
            return io.NodeOutput(output, plan_json, trace, expand=expanded)
        overrides = grounding_overrides(plan, tools, "error") if planner != "offline" else None
        compiled = compile_plan(plan, tools, run_id=run_id, settings=settings, overrides=overrides)
        expanded, (output, trace) = expand(compiled.graph, (compiled.output, ["trace", 0]), prefix, sources)
        log.info("agent: %s planned %s -> run %s", planner_name, plan.tool_names, run_id)
        return io.NodeOutput(output, plan.to_json(indent=1), trace, expand=expanded)


NODES = [AgentPlanner]

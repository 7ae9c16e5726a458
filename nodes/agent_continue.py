"""The AgentContinue node: the second stage of a model-planned edit, after its grounding ran.

The AgentPlanner expands a plan's grounding steps (set to report "not found" rather than stop)
and this node, which gets their ``found`` outputs as extra inputs named ``found_<step>``. When
everything was found it expands the rest of the plan: the steps that already ran are linked to,
not added again, so nothing runs twice. (Adding identical nodes would run them again: ComfyUI
caches each expanding node's subgraph apart, and the bound input tensors have no hashable
signature, so the cache cannot match them.) When something was not found it asks the planner once
more, saying what was not there, writes the re-plan into the run folder (plan.json gets
``replanned``, which trace.json keeps) and expands the new plan, whose grounding now stops the run
with a clear message if it finds nothing either.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import folder_paths
from comfy_api.latest import io
from comfy_execution.graph_utils import GraphBuilder

from ..agent.compile import compile_plan
from ..agent.plan import Plan, PlanError, validate
from ..agent.planners import ImageInfo, PlannerDeclined
from ..agent.trace import run_dir, write_json_atomic, write_plan
from ..catalogue import all_tools
from ..catalogue.agent import AGENT_CONTINUE
from .agent import PlanningError, chat_planner, expand, export_plan_workflows, grounding_overrides
from .convert import image_batch_to_arrays
from .schema import tool_schema

log = logging.getLogger(__name__)

FOUND_PREFIX = "found_"
REPLAN_REQUEST = ("{instruction}\n\n"
                  "(Not from the user: a first plan was run and its grounding found nothing: {misses}. "
                  "The first plan was: {plan}. Plan again using only what is in the image, or refuse.)")


class ContinueInputError(ValueError):
    """An input of the continuation node that the agent did not make (wired by hand, or edited)."""


def _stage_nodes(stage: str) -> dict[str, str]:
    try:
        nodes = json.loads(stage or "{}")
    except ValueError:
        nodes = None
    if not isinstance(nodes, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in nodes.items()):
        raise ContinueInputError(f"agent_continue: 'stage' must be JSON {{step id: node id}}, got {stage[:200]!r}")
    return nodes


def _misses(found: dict, plan: Plan, ran: dict[str, str]) -> list[str]:
    """The steps whose ``found_<step>`` input says they found nothing, in plan order."""
    flags = {}
    for name, value in found.items():
        step = name[len(FOUND_PREFIX):]
        if not name.startswith(FOUND_PREFIX) or step not in ran:
            raise ContinueInputError(f"agent_continue: unexpected input {name!r}; extra inputs are "
                                     f"found_<step> for the steps in 'stage' ({', '.join(ran) or 'none'})")
        flags[step] = bool(value)
    return [s.id for s in plan.steps if flags.get(s.id) is False]


def describe_miss(plan: Plan, step_id: str) -> str:
    step = plan.step(step_id)
    query = step.args.get("query")
    return f"step {step.id}: {step.tool} {query!r} found nothing in the image" if query else \
        f"step {step.id}: {step.tool} found nothing in the image"


def replan(plan: Plan, misses: list[str], instruction: str, image, reference, settings: dict, folder: Path,
           run_id: str) -> Plan:
    """Ask the planner once more, told what was not found; record the answer in ``folder``."""
    told = "; ".join(describe_miss(plan, m) for m in misses)
    request = REPLAN_REQUEST.format(instruction=instruction.strip(), misses=told,
                                    plan=json.dumps(plan.to_dict()["steps"], separators=(",", ":")))
    planner = chat_planner(settings["planner"], settings["base_url"], settings["model"], settings["temperature"],
                           settings["local_model"])
    rgb = image_batch_to_arrays(image)[0]
    info = ImageInfo(width=rgb.shape[1], height=rgb.shape[0], pixels=rgb)
    replanned = {"not_found": [{"step": m, "tool": plan.step(m).tool, "query": plan.step(m).args.get("query")}
                               for m in misses],
                 "told_planner": told, "first_plan": plan.to_dict(), "at": time.time()}
    log.info("agent: %s; asking the %s planner once more", told, planner.name)
    try:
        new_plan = planner.plan(request, info, references=0 if reference is None else 1)
    except PlannerDeclined as declined:
        _record_replan(folder, {**replanned, "declined": declined.reason}, None, planner.name)
        raise PlanningError(f"agent ({settings['planner']} planner): {told}; asked to plan again, "
                            f"{declined.reason}") from None
    new_plan.instruction = instruction
    _record_replan(folder, replanned, new_plan, planner.name)
    export_plan_workflows(new_plan, {k: settings[k] for k in ("grounding_model", "sam_model")}, folder, run_id,
                          {"image": image, "reference": reference})
    return new_plan


def _record_replan(folder: Path, replanned: dict, new_plan: Plan | None, planner_name: str) -> None:
    """plan.json (and so trace.json) holds the plan that runs, and under ``replanned`` the first one,
    what it did not find and what the planner was told. The run's start time is kept."""
    path = folder / "plan.json"
    header = json.loads(path.read_text()) if path.is_file() else {"started_at": time.time()}
    if new_plan is not None:
        header["plan"], header["planner"] = new_plan.to_dict(), planner_name
    write_json_atomic(path, {**header, "replanned": replanned})


class AgentContinue(io.ComfyNode):
    TOOL = AGENT_CONTINUE

    @classmethod
    def define_schema(cls):
        # found_<step> inputs come from the expanded grounding steps: as many as the plan has.
        return tool_schema(cls.TOOL, enable_expand=True, accept_all_inputs=True)

    @classmethod
    def execute(cls, image, instruction, plan, run_id, planner, base_url, model, temperature, local_model,
                grounding_model, sam_model, stage, reference=None, **found) -> io.NodeOutput:
        tools = all_tools()
        try:
            plan = validate(plan, tools, references=0 if reference is None else 1)
        except PlanError as err:
            raise ContinueInputError(f"agent_continue: {err}") from None
        ran = _stage_nodes(stage)
        unknown = [s for s in ran if s not in {step.id for step in plan.steps}]
        if unknown:
            raise ContinueInputError(f"agent_continue: 'stage' names steps the plan does not have: {unknown}")
        misses = _misses(found, plan, ran)
        settings = dict(planner=planner, base_url=base_url, model=model, temperature=temperature,
                        local_model=local_model, grounding_model=grounding_model, sam_model=sam_model)
        folder = run_dir(folder_paths.get_output_directory(), run_id)
        if misses:
            if planner == "offline":
                raise PlanningError(f"agent: {'; '.join(describe_miss(plan, m) for m in misses)}. Rephrase the "
                                    "instruction so it names what is in the image.")
            plan = replan(plan, misses, instruction, image, reference, settings, folder, run_id)
            ran = {}  # the new plan runs whole; its grounding stops the run if it finds nothing
        elif not (folder / "plan.json").is_file():  # wired by hand: the trace needs the plan
            write_plan(folder, instruction, plan.to_dict(), planner)
        compiled = compile_plan(plan, tools, run_id=run_id, ran=ran,
                                settings={"grounding_model": grounding_model, "sam_model": sam_model},
                                overrides=grounding_overrides(plan, tools, "error", skip=ran))
        expanded, (output, trace) = expand(compiled.graph, (compiled.output, ["trace", 0]),
                                           GraphBuilder.alloc_prefix(), {"image": image, "reference": reference},
                                           ran)
        log.info("agent: run %s goes on with %s (%s)", run_id, plan.tool_names,
                 "re-planned" if misses else f"reusing {sorted(ran)}")
        return io.NodeOutput(output, plan.to_json(indent=1), trace, expand=expanded)


NODES = [AgentContinue]

"""Plan -> ComfyUI graph: a pure function to the API format.

Each step becomes one node of its tool, with the step id as node id, so the same step with the same
inputs has the same id in every run and ComfyUI's cache makes a repeated step free. The
instruction's images are placeholders (``source("image")``) that the caller binds: to the agent
node's own input tensors when it expands the plan, or to LoadImage nodes when the plan is exported
as a workflow.

With ``run_id`` set, a record node follows every step (its image, mask, boxes and text go to the run
folder, in plan order) and a trace node writes ``trace.json`` after the last one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ..catalogue.spec import Tool
from .plan import INPUT_IMAGE, Plan

SOURCE_KEY = "__agentic_edit_source__"
RECORD_NODE = "AgenticEditRecordStep"
TRACE_NODE = "AgenticEditWriteTrace"


class CompileError(ValueError):
    """A plan the compiler cannot turn into a graph (it should have been validated first)."""


def source(name: str) -> dict:
    """A placeholder for one of the instruction's images ("image", "reference", "reference_2", ...)."""
    return {SOURCE_KEY: name}


def is_source(value) -> bool:
    return isinstance(value, dict) and set(value) == {SOURCE_KEY}


@dataclass
class CompiledPlan:
    graph: dict                 # API-format nodes, ids local to this plan
    output: list                # [node_id, index] of the final image
    step_nodes: dict[str, str]  # plan step id -> node id
    sources: list[str]          # the placeholders the graph needs bound

    def bind(self, bind_source: Callable[[str], object]) -> dict:
        """The graph with every placeholder replaced by ``bind_source(name)`` (a tensor or a link)."""
        bound = {}
        for node_id, node in self.graph.items():
            inputs = {k: bind_source(v[SOURCE_KEY]) if is_source(v) else v for k, v in node["inputs"].items()}
            bound[node_id] = {**node, "inputs": inputs}
        return bound


def _tools_by_name(tools: Iterable[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


def compile_plan(plan: Plan, tools: Iterable[Tool], *, run_id: str | None = None,
                 settings: Mapping[str, object] | None = None) -> CompiledPlan:
    """``plan`` (already validated) as an API-format graph; see the module docstring.

    ``settings`` gives values for arguments the planner does not choose (``agent=False``), by
    name, wherever a step's tool has such an argument: the models the user picked on the agent
    node (``grounding_model``, ``sam_model``, ...) reach every step that loads one.
    """
    settings = dict(settings or {})
    catalogue = _tools_by_name(tools)
    graph: dict[str, dict] = {}
    step_nodes: dict[str, str] = {}
    sources: list[str] = []
    previous_record = None

    def resolve(ref: str):
        if "." not in ref:
            if ref not in sources:
                sources.append(ref)
            return source(ref)
        step_id, output = ref.split(".", 1)
        if step_id not in step_nodes:
            raise CompileError(f"reference {ref!r} names no earlier step")
        producer = catalogue[plan.step(step_id).tool]
        return [step_nodes[step_id], producer.output_index(output)]

    for step in plan.steps:
        tool = catalogue.get(step.tool)
        if tool is None:
            raise CompileError(f"step {step.id}: tool {step.tool!r} is not in the catalogue")
        inputs: dict = {}
        for arg in tool.args:
            if arg.name in step.inputs:
                inputs[arg.name] = resolve(step.inputs[arg.name])
            elif arg.name in step.args:
                inputs[arg.name] = step.args[arg.name]
            elif not arg.agent and arg.name in settings:
                inputs[arg.name] = settings[arg.name]
            elif not arg.is_link and arg.default is not None:
                inputs[arg.name] = arg.default  # options the planner does not choose keep the node's default
            elif not arg.optional:
                raise CompileError(f"step {step.id}: argument {arg.name!r} of {tool.name} has no value")
        node_id = step.id
        graph[node_id] = {"class_type": tool.node_id, "inputs": inputs, "_meta": {"title": f"{step.id}: {tool.name}"}}
        step_nodes[step.id] = node_id
        if run_id is not None:
            previous_record = _add_record(graph, step, tool, node_id, run_id, previous_record)

    output = resolve(plan.output or INPUT_IMAGE) if plan.output else None
    if output is None or is_source(output):
        raise CompileError("the plan produces no image: its last image-producing step is its output")
    if run_id is not None:
        trace_inputs = {"run_id": run_id, "image": output}
        if previous_record is not None:
            trace_inputs["last_record"] = [previous_record, 0]
        graph["trace"] = {"class_type": TRACE_NODE, "inputs": trace_inputs, "_meta": {"title": "trace"}}
    return CompiledPlan(graph, output, step_nodes, sources)


def _add_record(graph: dict, step, tool: Tool, node_id: str, run_id: str, previous: str | None) -> str:
    inputs: dict = {"run_id": run_id, "step": step.id, "tool": tool.name,
                    "args_json": json.dumps({**step.args, **{f"<{k}>": v for k, v in step.inputs.items()}},
                                            sort_keys=True, default=str)}
    if previous is not None:
        inputs["after"] = [previous, 0]
    wanted = {"image": "image", "mask": "mask", "boxes": "boxes", "string": "text"}
    for index, out in enumerate(tool.outputs):
        slot = wanted.get(out.kind)
        if slot and slot not in inputs:
            inputs[slot] = [node_id, index]
    record_id = f"{step.id}_record"
    graph[record_id] = {"class_type": RECORD_NODE, "inputs": inputs, "_meta": {"title": f"{step.id}: record"}}
    return record_id


def export_api_workflow(plan: Plan, tools: Iterable[Tool], image_files: Mapping[str, str],
                        filename_prefix: str = "agentic_edit/plan",
                        settings: Mapping[str, object] | None = None) -> dict:
    """The plan as a standalone API workflow: LoadImage nodes for the instruction's images
    (``image_files`` maps "image"/"reference"/... to file names in ComfyUI's input folder) and a
    SaveImage of the result. No record nodes: the workflow runs as an ordinary one."""
    compiled = compile_plan(plan, tools, settings=settings)
    loaders: dict[str, str] = {}
    graph: dict = {}
    for name in compiled.sources:
        if name not in image_files:
            raise CompileError(f"the plan uses the {name!r} image; give its file name")
        loaders[name] = f"load_{name}"
        graph[loaders[name]] = {"class_type": "LoadImage", "inputs": {"image": image_files[name]},
                                "_meta": {"title": f"Load {name}"}}
    graph.update(compiled.bind(lambda name: [loaders[name], 0]))
    graph["save"] = {"class_type": "SaveImage", "inputs": {"images": compiled.output, "filename_prefix": filename_prefix},
                     "_meta": {"title": "Save result"}}
    return graph

"""Plan -> ComfyUI graph: a pure function to the API format.

Each step becomes one node of its tool, with the step id as node id, so the same step with the same
inputs has the same id in every run and ComfyUI's cache makes a repeated step free. The
instruction's images are placeholders (``source("image")``) that the caller binds: to the agent
node's own input tensors when it expands the plan, or to LoadImage nodes when the plan is exported
as a workflow.

With ``run_id`` set, a record node follows every step (its image, mask, boxes and text go to the run
folder, in plan order) and a trace node writes ``trace.json`` after the last one.

A plan can also be compiled in stages (the agent checks its grounding before it edits): ``steps``
compiles only some steps, and ``ran`` names steps an earlier stage already ran, whose outputs the
graph then takes from placeholders (``ran_output``) that the caller binds to those nodes' links.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

from ..catalogue.spec import Tool
from .plan import INPUT_IMAGE, Plan

SOURCE_KEY = "__agentic_edit_source__"
RAN_KEY = "__agentic_edit_ran__"
RECORD_NODE = "AgenticEditRecordStep"
TRACE_NODE = "AgenticEditWriteTrace"


class CompileError(ValueError):
    """A plan the compiler cannot turn into a graph (it should have been validated first)."""


def source(name: str) -> dict:
    """A placeholder for one of the instruction's images ("image", "reference", "reference_2", ...)."""
    return {SOURCE_KEY: name}


def is_source(value) -> bool:
    return isinstance(value, dict) and set(value) == {SOURCE_KEY}


def ran_output(step_id: str, index: int) -> dict:
    """A placeholder for output ``index`` of a step that an earlier stage already ran."""
    return {RAN_KEY: [step_id, index]}


def is_ran_output(value) -> bool:
    return isinstance(value, dict) and set(value) == {RAN_KEY}


def bind_value(value, bind_source: Callable[[str], object], bind_ran: Callable[[str, int], object] | None = None):
    """``value`` itself, or what its placeholder stands for: ``bind_source(name)`` for one of the
    instruction's images, ``bind_ran(step_id, index)`` for an output of a step that already ran."""
    if is_source(value):
        return bind_source(value[SOURCE_KEY])
    if is_ran_output(value):
        if bind_ran is None:
            raise CompileError(f"the graph needs an output of step {value[RAN_KEY][0]!r}, which ran earlier; "
                               "say which node ran it (bind_ran)")
        return bind_ran(*value[RAN_KEY])
    return value


def bind_placeholders(graph: dict, bind_source: Callable[[str], object],
                      bind_ran: Callable[[str, int], object] | None = None) -> dict:
    """``graph`` with every placeholder input bound (``bind_value``). Works on any API-format graph,
    also after ``add_graph_prefix``, which leaves placeholders alone: links to nodes outside the
    prefixed graph are made after prefixing, so they keep their own ids."""
    return {node_id: {**node, "inputs": {k: bind_value(v, bind_source, bind_ran) for k, v in node["inputs"].items()}}
            for node_id, node in graph.items()}


@dataclass
class CompiledPlan:
    graph: dict                 # API-format nodes, ids local to this plan
    output: list | dict | None  # [node_id, index] of the final image (a placeholder when a ran step made it;
                                # None when only some ``steps`` were compiled)
    step_nodes: dict[str, str]  # plan step id -> node id
    sources: list[str]          # the placeholders the graph needs bound

    def bind(self, bind_source: Callable[[str], object],
             bind_ran: Callable[[str, int], object] | None = None) -> dict:
        """The graph with every placeholder replaced (see ``bind_placeholders``)."""
        return bind_placeholders(self.graph, bind_source, bind_ran)


def _tools_by_name(tools: Iterable[Tool]) -> dict[str, Tool]:
    return {t.name: t for t in tools}


def step_closure(plan: Plan, step_ids: Iterable[str]) -> list[str]:
    """``step_ids`` and every step they take an output from, directly or not, in plan order."""
    wanted = set(step_ids)
    for step in reversed(plan.steps):  # a step only uses earlier steps: one backward pass is enough
        if step.id in wanted:
            wanted.update(ref.split(".", 1)[0] for ref in step.inputs.values() if "." in ref)
    return [s.id for s in plan.steps if s.id in wanted]


def compile_plan(plan: Plan, tools: Iterable[Tool], *, run_id: str | None = None,
                 settings: Mapping[str, object] | None = None, steps: Iterable[str] | None = None,
                 overrides: Mapping[str, Mapping[str, object]] | None = None,
                 ran: Iterable[str] = ()) -> CompiledPlan:
    """``plan`` (already validated) as an API-format graph; see the module docstring.

    ``settings`` gives values for arguments the planner does not choose (``agent=False``), by
    name, wherever a step's tool has such an argument: the models the user picked on the agent
    node (``grounding_model``, ``sam_model``, ...) reach every step that loads one.

    ``steps`` compiles only those steps (with everything they use: ``step_closure``); the graph
    then has no trace and ``output`` is None. ``overrides`` maps a step id to argument values that
    replace the plan's (``{"s1": {"if_nothing_found": "empty"}}``). ``ran`` lists steps that an
    earlier stage already ran: they get no node (their record, with ``run_id``, still does), and
    what uses their outputs gets ``ran_output`` placeholders.
    """
    settings = dict(settings or {})
    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    ran = set(ran)
    only = None if steps is None else set(step_closure(plan, steps))
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
        if step_id not in step_nodes and step_id not in ran:
            raise CompileError(f"reference {ref!r} names no earlier step")
        index = catalogue[plan.step(step_id).tool].output_index(output)
        return ran_output(step_id, index) if step_id in ran else [step_nodes[step_id], index]

    for step in plan.steps:
        if only is not None and step.id not in only:
            continue
        tool = catalogue.get(step.tool)
        if tool is None:
            raise CompileError(f"step {step.id}: tool {step.tool!r} is not in the catalogue")
        if step.id in ran:
            if run_id is not None:
                previous_record = _add_record(graph, step, step.args, tool,
                                              lambda index, s=step.id: ran_output(s, index), run_id, previous_record)
            continue
        args = {**step.args, **overrides.get(step.id, {})}
        inputs: dict = {}
        for arg in tool.args:
            if arg.name in step.inputs:
                inputs[arg.name] = resolve(step.inputs[arg.name])
            elif arg.name in args:
                inputs[arg.name] = args[arg.name]
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
            previous_record = _add_record(graph, step, args, tool, lambda index, n=node_id: [n, index], run_id,
                                          previous_record)

    if only is not None:
        return CompiledPlan(graph, None, step_nodes, sources)
    output = resolve(plan.output or INPUT_IMAGE) if plan.output else None
    if output is None or is_source(output):
        raise CompileError("the plan produces no image: its last image-producing step is its output")
    if run_id is not None:
        trace_inputs = {"run_id": run_id, "image": output}
        if previous_record is not None:
            trace_inputs["last_record"] = [previous_record, 0]
        graph["trace"] = {"class_type": TRACE_NODE, "inputs": trace_inputs, "_meta": {"title": "trace"}}
    return CompiledPlan(graph, output, step_nodes, sources)


def _add_record(graph: dict, step, args: Mapping[str, object], tool: Tool, output: Callable[[int], object],
                run_id: str, previous: str | None) -> str:
    inputs: dict = {"run_id": run_id, "step": step.id, "tool": tool.name,
                    "args_json": json.dumps({**args, **{f"<{k}>": v for k, v in step.inputs.items()}},
                                            sort_keys=True, default=str)}
    if previous is not None:
        inputs["after"] = [previous, 0]
    wanted = {"image": "image", "mask": "mask", "boxes": "boxes", "string": "text"}
    for index, out in enumerate(tool.outputs):
        slot = wanted.get(out.kind)
        if slot and slot not in inputs:
            inputs[slot] = output(index)
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

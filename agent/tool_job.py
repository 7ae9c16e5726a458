"""One catalogued tool as a ComfyUI job, for callers outside ComfyUI (the MCP server): its arguments
as JSON (images and masks as file paths, boxes and points as JSON values), a graph of the tool's
node fed by LoadImage / LoadImageMask / MakeBoxes, and a record node per output that keeps it in a
run folder (agent/trace.py), from which the outputs are downloaded.

The input schema comes from the catalogue through ``tool_schema.value_schema``, so it cannot drift
from the node; only what the planner may set (``agent=True``) is offered, the rest keeps the node's
default.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..catalogue.boxes import MAKE_BOXES
from ..catalogue.spec import Tool
from .arg_values import ArgValueError, coerce_value
from .client import ComfyClient, EventCallback, FileRef
from .client_errors import BadInput, PackMissing
from .client_files import check_image_file
from .compile import RECORD_NODE
from .jobs import download_folder, fill_inputs
from .tool_schema import describe_outputs, value_schema
from .trace import RUNS_SUBFOLDER, new_run_id

_BOX = {"type": "object", "properties": {k: {"type": "number"} for k in ("x", "y", "width", "height")},
        "required": ["x", "y", "width", "height"]}
_POINT = {"oneOf": [{"type": "object", "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                     "required": ["x", "y"]},
                    {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2}]}
_LINK_SCHEMAS = {
    "image": {"type": "string", "description": "Path of an image file (PNG, JPEG, WebP) on the machine running this server."},
    "mask": {"type": "string", "description": "Path of a mask image file: white is selected, black is not (grayscale PNG)."},
    "boxes": {"type": "array", "items": {"anyOf": [_BOX, {"type": "array", "items": _BOX}]},
              "description": "Boxes in pixels: [{\"x\", \"y\", \"width\", \"height\", \"label\"?}, ...] "
                             "(one list for every image, or one list per image)."},
    "points": {"type": "array", "items": _POINT, "description": "Points in pixels: [{\"x\": .., \"y\": ..}, ...]."},
}
_RECORD_SLOTS = {"image": "image", "mask": "mask", "boxes": "boxes", "points": "text", "string": "text"}


def input_schema(tool: Tool) -> dict:
    """The JSON schema of a tool's arguments as an MCP tool takes them."""
    properties, required = {}, []
    for arg in tool.args:
        if not arg.agent:
            continue
        if arg.is_link:
            properties[arg.name] = {**_LINK_SCHEMAS[arg.kind],
                                    "description": f"{arg.description} {_LINK_SCHEMAS[arg.kind]['description']}"}
            if not arg.optional:
                required.append(arg.name)
        else:
            properties[arg.name] = value_schema(arg)
            if arg.default is None and not arg.optional:
                required.append(arg.name)
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def description(tool: Tool) -> str:
    kept = [o for o in tool.outputs if o.kind in _RECORD_SLOTS]
    return f"{tool.description} Returns: {describe_outputs(dataclasses.replace(tool, outputs=tuple(kept)))}"


@dataclass
class ToolResult:
    tool: str
    run_id: str
    prompt_id: str
    folder: Path
    outputs: dict[str, dict] = field(default_factory=dict)  # name -> {"kind", "files": [Path], "text"?, "boxes"?}


def tool_prompt(tool: Tool, info_of, arguments: dict, upload, run_id: str) -> dict:
    """The API graph running ``tool`` once on ``arguments`` (checked against the catalogue);
    ``info_of(node_class)`` gives a node's ``/object_info`` entry, ``upload(path, arg)`` a file's
    name in the server's input folder."""
    unknown = sorted(set(arguments) - {a.name for a in tool.args if a.agent})
    if unknown:
        raise BadInput(f"{tool.name}: unknown argument(s) {unknown}; it takes {[a.name for a in tool.args if a.agent]}")
    graph, given = {}, {}
    for arg in tool.args:
        if arg.name not in arguments:
            if arg.agent and arg.is_link and not arg.optional:
                raise BadInput(f"{tool.name}: argument {arg.name!r} ({arg.kind}) is required")
            continue
        value = arguments[arg.name]
        if arg.kind == "image":
            graph[f"load_{arg.name}"] = {"class_type": "LoadImage", "inputs": {"image": upload(value, arg.name)}}
            given[arg.name] = [f"load_{arg.name}", 0]
        elif arg.kind == "mask":
            graph[f"load_{arg.name}"] = {"class_type": "LoadImageMask",
                                         "inputs": {"image": upload(value, arg.name), "channel": "red"}}
            given[arg.name] = [f"load_{arg.name}", 0]
        elif arg.kind in ("boxes", "points"):
            field_name, index = ("boxes_json", 0) if arg.kind == "boxes" else ("positive_points", 1)
            graph[f"make_{arg.name}"] = {"class_type": MAKE_BOXES.node_id, "inputs": fill_inputs(
                info_of(MAKE_BOXES.node_id), {field_name: json.dumps(value)})}
            given[arg.name] = [f"make_{arg.name}", index]
        else:
            try:
                given[arg.name] = coerce_value(arg, value)
            except ArgValueError as exc:
                raise BadInput(f"{tool.name}: argument {arg.name!r} {exc}") from None
    graph["tool"] = {"class_type": tool.node_id, "inputs": fill_inputs(info_of(tool.node_id), given)}
    args_json = json.dumps({k: v for k, v in arguments.items()}, sort_keys=True, default=str)
    for index, out in enumerate(tool.outputs):
        slot = _RECORD_SLOTS.get(out.kind)
        if slot is not None:
            graph[f"record_{out.name}"] = {"class_type": RECORD_NODE, "inputs": {
                "run_id": run_id, "step": out.name, "tool": tool.name, "args_json": args_json, slot: ["tool", index]}}
    return graph


def run_tool(client: ComfyClient, tool: Tool, arguments: dict, out_dir, *, on_event: EventCallback | None = None,
             timeout: float | None = None, cancel: threading.Event | None = None) -> ToolResult:
    """Run ``tool`` on ``client``'s server and download its outputs to ``out_dir/<run_id>``."""
    if not isinstance(arguments, dict):
        raise BadInput(f"{tool.name}: arguments must be an object, not {type(arguments).__name__}")
    def info_of(node_class: str) -> dict:
        info = client.object_info(node_class).get(node_class)
        if not info:
            raise PackMissing(f"ComfyUI at {client.url} has no {node_class} node (tool {tool.name}): install or "
                              "update the Agentic Edit pack there")
        return info

    def upload(path, name):
        if not isinstance(path, str):
            raise BadInput(f"{tool.name}: argument {name!r} must be a file path, not {type(path).__name__}")
        return client.upload_image(check_image_file(path, f"argument {name!r}"))

    run_id = new_run_id("tool")
    prompt = tool_prompt(tool, info_of, arguments, upload, run_id)
    job = client.run(prompt, on_event=on_event, timeout=timeout, cancel=cancel)
    folder_ref = FileRef("", f"{RUNS_SUBFOLDER}/{run_id}", "output")
    records = {out.name: client.view_json(folder_ref.sibling(f"{out.name}.json"))
               for out in tool.outputs if out.kind in _RECORD_SLOTS}
    names = [f"{n}.json" for n in records] + [f for r in records.values() for fs in r["files"].values() for f in fs]
    folder = Path(out_dir) / run_id
    download_folder(client, folder_ref, dict.fromkeys(names), folder)
    result = ToolResult(tool.name, run_id, job.prompt_id, folder)
    for out in tool.outputs:
        record = records.get(out.name)
        if record is None:
            continue
        entry = {"kind": out.kind, "files": [folder / f for fs in record["files"].values() for f in fs]}
        if "text" in record:
            entry["text"] = record["text"]
        if out.kind == "boxes":
            entry["boxes"] = json.loads((folder / f"{out.name}_boxes.json").read_text())
        result.outputs[out.name] = entry
    return result


__all__ = ["input_schema", "description", "tool_prompt", "run_tool", "ToolResult"]

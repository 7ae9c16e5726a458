"""The MCP server's tools, described from the catalogue: an agent edit turn, each catalogued agent tool
on its own, and the session operations. Each entry has its JSON input schema and a synchronous
``run(backend, arguments, on_event, cancel)`` that returns the result's content blocks; the server
(mcp_server.py) validates arguments, runs it in a worker thread and forwards progress.

Images come back as downscaled previews (``ImageContent``) plus a ``resource_link`` to the full file,
which the server also serves through ``resources/read``.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import mcp_types as types

from ..catalogue import all_tools
from ..catalogue.agent import AGENT_EDIT
from .tool_schema import value_schema

PREVIEW_SIZE = 512
EDIT_TOOL = "edit_image"
_EDIT_ARGS = ("instruction", "planner", "base_url", "model", "temperature")


@dataclass
class McpTool:
    name: str
    description: str
    input_schema: dict
    run: Callable  # (backend, arguments, on_event, cancel) -> (content blocks, structured content)


# -- content ---------------------------------------------------------------------------------------
def image_blocks(path: Path, what: str) -> list:
    """A preview no larger than PREVIEW_SIZE (PNG) and a link to the full-size file."""
    from PIL import Image

    with Image.open(path) as image:
        preview = image.convert("L" if image.mode in ("L", "I", "I;16", "F") else "RGB")
        full_size = image.size
    preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buffer = io.BytesIO()
    preview.save(buffer, format="PNG")
    return [types.ImageContent(data=base64.b64encode(buffer.getvalue()).decode(), mime_type="image/png"),
            types.ResourceLink(uri=path.resolve().as_uri(), name=path.name, mime_type="image/png",
                               size=path.stat().st_size,
                               description=f"{what}, full size {full_size[0]}x{full_size[1]}")]


def text_block(text: str) -> types.TextContent:
    return types.TextContent(text=text)


def json_blocks(value) -> list:
    return [text_block(json.dumps(value, indent=1, default=str))]


# -- the edit turn ---------------------------------------------------------------------------------
def edit_schema() -> dict:
    properties = {
        "image": {"type": "string", "description": "Path of the image to edit (PNG, JPEG, WebP) on the machine "
                                                   "running this server."},
        **{a.name: value_schema(a) for a in AGENT_EDIT.args if a.name in _EDIT_ARGS},
        "reference": {"type": "string", "description": "Path of a reference image (a garment, a style, an object)."},
        "session": {"type": "string", "description": "Continue this session (multi-turn memory), when the "
                                                     "server's pack has sessions."},
    }
    return {"type": "object", "properties": properties, "required": ["image", "instruction"],
            "additionalProperties": False}


def run_edit_tool(backend, arguments: dict, on_event, cancel):
    from .jobs import run_edit

    options = {k: arguments[k] for k in ("base_url", "model", "temperature") if k in arguments}
    result = run_edit(backend.client(), arguments["image"], arguments["instruction"], backend.out_dir,
                      planner=arguments.get("planner", "offline"), reference=arguments.get("reference"),
                      session=arguments.get("session"), on_event=on_event, cancel=cancel, timeout=backend.timeout,
                      **options)
    steps = [{"step": s["step"], "tool": s.get("tool"), "seconds": s.get("seconds"), "status": s.get("status")}
             for s in result.steps()]
    summary = "; ".join(f"{s['step']} {s['tool']}" for s in steps)
    content = [text_block(f"Edited in {len(steps)} step(s) ({summary}). Run {result.run_id}: result "
                          f"{result.result}, trace {result.folder / 'trace.json'}.")]
    content += image_blocks(result.result, "the edited image")
    content.append(types.ResourceLink(uri=(result.folder / "trace.json").resolve().as_uri(), name="trace.json",
                                      mime_type="application/json",
                                      description="every step's tool, arguments, time and files"))
    structured = {"result": str(result.result), "folder": str(result.folder), "run_id": result.run_id,
                  "trace": str(result.folder / "trace.json"), "server_folder": result.server_folder,
                  "steps": steps, "files": [str(p) for p in result.files]}
    return content, structured


# -- one catalogued tool ---------------------------------------------------------------------------
def catalogue_tool(tool) -> McpTool:
    from .tool_job import description, input_schema

    def run(backend, arguments, on_event, cancel):
        from .tool_job import run_tool

        result = run_tool(backend.client(), tool, arguments, backend.out_dir, on_event=on_event, cancel=cancel,
                          timeout=backend.timeout)
        content, outputs = [], {}
        for name, output in result.outputs.items():
            entry = {"kind": output["kind"], "files": [str(p) for p in output["files"]]}
            if output["kind"] in ("image", "mask"):
                for path in output["files"]:
                    content += image_blocks(path, f"output {name!r} of {tool.name}")
            elif output["kind"] == "boxes":
                entry["boxes"] = output["boxes"]
                content.append(text_block(f"{name}: {json.dumps(output['boxes'])}"))
            elif "text" in output:
                entry["text"] = output["text"]
                content.append(text_block(f"{name}: {output['text']}"))
            outputs[name] = entry
        content.insert(0, text_block(f"{tool.name} ran as run {result.run_id}; files in {result.folder}"))
        return content, {"tool": tool.name, "run_id": result.run_id, "folder": str(result.folder), "outputs": outputs}

    return McpTool(tool.name, description(tool), input_schema(tool), run)


# -- session memory --------------------------------------------------------------------------------
_SESSION_ID = {"session_id": {"type": "string", "minLength": 1, "description": "The session's id (list_sessions)."}}


def _session_tool(name: str, description: str, call, extra: dict | None = None) -> McpTool:
    schema = {"type": "object", "properties": {**({} if name == "list_sessions" else _SESSION_ID), **(extra or {})},
              "required": ([] if name == "list_sessions" else ["session_id"]) + list(extra or {}),
              "additionalProperties": False}

    def run(backend, arguments, on_event, cancel):
        answer = call(backend.client(), arguments)
        return json_blocks(answer), {"result": answer}

    return McpTool(name, description, schema, run)


def session_tools() -> list[McpTool]:
    return [
        _session_tool("list_sessions", "List the editing sessions kept by the ComfyUI server (multi-turn memory).",
                      lambda client, a: client.sessions()),
        _session_tool("session_history", "A session's turns: each instruction, its plan and its result.",
                      lambda client, a: client.session(a["session_id"])),
        _session_tool("undo", "Undo the last turn of a session (its image goes back to the turn before).",
                      lambda client, a: client.undo(a["session_id"])),
        _session_tool("redo", "Redo the turn the last undo took back (only until a new turn is made).",
                      lambda client, a: client.redo(a["session_id"])),
        _session_tool("rollback", "Roll a session back to an earlier turn; later turns are undone.",
                      lambda client, a: client.rollback(a["session_id"], a["turn"]),
                      {"turn": {"type": "integer", "minimum": 0, "description": "The turn to go back to."}}),
        _session_tool("branch", "Start a branch at an earlier turn: the next edit continues from that turn's image, "
                                "and the turns after it stay in the history.",
                      lambda client, a: client.branch(a["session_id"], a["turn"]),
                      {"turn": {"type": "integer", "minimum": 0, "description": "The turn to branch from."}}),
    ]


def all_mcp_tools() -> dict[str, McpTool]:
    tools = [McpTool(EDIT_TOOL, "Edit an image with a plain instruction ('remove the cat and write SALE at the top'): "
                                "the pack plans the steps from its tools, ComfyUI runs them, and the result, every "
                                "intermediate and a trace are kept. " + AGENT_EDIT.description,
                     edit_schema(), run_edit_tool)]
    tools += [catalogue_tool(t) for t in all_tools() if t.agent]
    tools += session_tools()
    return {t.name: t for t in tools}

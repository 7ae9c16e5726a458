"""The MCP server driven by the ``mcp`` SDK's own client, against a real ComfyUI: the tool list comes
from the catalogue, an edit turn streams progress and returns a preview plus a link to the full
file, single tools run, and bad calls come back as error results. Also over stdio, started through
the launcher script as an MCP host would."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

mcp = pytest.importorskip("mcp")
anyio = pytest.importorskip("anyio")

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from agentic_edit.agent.mcp_server import Backend, build_server  # noqa: E402
from agentic_edit.agent.mcp_tools import PREVIEW_SIZE  # noqa: E402
from agentic_edit.agent.tool_schema import value_schema  # noqa: E402
from agentic_edit.catalogue import all_tools, get_tool  # noqa: E402
from tests.comfy_harness import free_port  # noqa: E402
from tests.pack import PACK_ROOT  # noqa: E402

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


@pytest.fixture
def photo(tmp_path, photo_astronaut):
    path = tmp_path / "astronaut.png"
    Image.fromarray(photo_astronaut[::2, ::2]).save(path)  # 256 x 256
    return path


@pytest.fixture
def mcp_server(comfy_server, tmp_path):
    backend = Backend(comfy_server.url, tmp_path / "results", start_local=False)
    return build_server(backend), backend


def call(server, name, arguments, progress=None):
    async def go():
        async with Client(server) as client:
            return await client.call_tool(name, arguments, progress_callback=progress)

    return anyio.run(go)


def test_tools_are_the_catalogue(mcp_server):
    server, _ = mcp_server

    async def go():
        async with Client(server) as client:
            return {t.name: t for t in (await client.list_tools()).tools}

    tools = anyio.run(go)
    agent_tools = [t for t in all_tools() if t.agent]
    assert {t.name for t in agent_tools} | {"edit_image", "list_sessions", "session_history", "undo",
                                            "redo", "rollback", "branch"} == set(tools)
    draw = tools["draw_text"].input_schema
    tool = get_tool("draw_text")
    assert draw["properties"]["padding"] == value_schema(tool.arg("padding"))
    assert "font" not in draw["properties"], "an argument hidden from agents was offered"
    assert draw["properties"]["image"]["type"] == "string" and "image" in draw["required"]
    assert draw["properties"]["boxes"]["type"] == "array"
    assert tools["edit_image"].input_schema["required"] == ["image", "instruction"]
    assert tools["edit_image"].input_schema["properties"]["planner"]["enum"] == ["offline", "openai", "local"]


def test_edit_turn_streams_progress_and_returns_a_preview_and_the_file(mcp_server, photo, tmp_path):
    server, backend = mcp_server
    updates = []

    async def progress(value, total, message):
        updates.append((value, message))

    result = call(server, "edit_image", {"image": str(photo), "instruction": "write 'MCP' at the top"}, progress)
    assert not result.is_error, result.content
    text, preview, link, trace_link = result.content
    assert "place_region" in text.text and "draw_text" in text.text
    values = [v for v, _ in updates]
    assert values == sorted(values) and len(values) >= 4, updates
    assert any(m == "s1 done" for _, m in updates) and any(m == "s2 done" for _, m in updates)

    full = Path(link.uri.removeprefix("file://"))
    assert full.is_file() and full.is_relative_to(backend.out_dir) and link.mime_type == "image/png"
    assert Path(result.structured_content["result"]) == full
    shown = Image.open(io.BytesIO(base64.b64decode(preview.data)))
    assert shown.size == Image.open(full).size and max(shown.size) <= PREVIEW_SIZE
    assert np.array_equal(np.asarray(shown.convert("RGB")), np.asarray(Image.open(full).convert("RGB")))
    assert json.loads(Path(trace_link.uri.removeprefix("file://")).read_text())["steps"][1]["tool"] == "draw_text"

    async def read_back():
        async with Client(server) as client:
            listed = {r.uri for r in (await client.list_resources()).resources}
            contents = (await client.read_resource(link.uri)).contents[0]
            with pytest.raises(MCPError, match="not a result file"):
                await client.read_resource(f"file://{photo}")
            return listed, contents

    listed, contents = anyio.run(read_back)
    assert link.uri in listed
    assert base64.b64decode(contents.blob) == full.read_bytes()


def test_a_large_result_comes_back_downscaled(mcp_server, tmp_path, photo_astronaut):
    server, _ = mcp_server
    big = tmp_path / "big.png"
    Image.fromarray(np.concatenate([photo_astronaut, photo_astronaut], axis=1)).save(big)  # 1024 x 512
    result = call(server, "edit_image", {"image": str(big), "instruction": "write 'WIDE' at the bottom"})
    assert not result.is_error, result.content
    preview = Image.open(io.BytesIO(base64.b64decode(result.content[1].data)))
    assert preview.size == (PREVIEW_SIZE, PREVIEW_SIZE // 2)
    assert "full size 1024x512" in result.content[2].description


def test_a_catalogued_tool_runs_on_its_own(mcp_server, photo):
    server, _ = mcp_server
    box = {"x": 20, "y": 180, "width": 200, "height": 50}
    result = call(server, "draw_text", {"image": str(photo), "text": "SOLO", "boxes": [box], "color": "#ff0000"})
    assert not result.is_error, result.content
    outputs = result.structured_content["outputs"]
    image = np.asarray(Image.open(outputs["image"]["files"][0]).convert("RGB")).astype(int)
    before = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    changed = np.abs(image - before).sum(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert ys.size and ys.min() >= 180 and ys.max() < 230 and xs.min() >= 20 and xs.max() < 220
    mask = np.asarray(Image.open(outputs["mask"]["files"][0]))
    assert (mask > 0).sum() > 0 and not mask[:180].any()
    kinds = [block.type for block in result.content]
    assert kinds == ["text", "image", "resource_link", "image", "resource_link"]

    boxes = call(server, "place_region", {"image": str(photo), "position": "bottom", "size": 0.25})
    [[region]] = boxes.structured_content["outputs"]["boxes"]["boxes"]
    assert region["label"] == "bottom" and region["y"] + region["height"] <= 256 and region["y"] > 128


def test_bad_calls_are_error_results_the_model_can_act_on(mcp_server, photo, tmp_path):
    server, _ = mcp_server
    cases = {
        ("edit_image", json.dumps({"image": 7, "instruction": ["x"]})): "argument 'image': 7 is not of type 'string'",
        ("edit_image", json.dumps({"instruction": "x"})): "'image' is a required property",
        ("draw_text", json.dumps({"image": str(photo), "padding": "lots"})): "argument 'padding': 'lots' is not of type",
        ("draw_text", json.dumps({"image": str(photo), "shout": True})): "'shout' was unexpected",
        ("edit_image", json.dumps({"image": str(tmp_path / "nope.png"), "instruction": "write 'X' at the top"})):
            "does not exist",
        ("refine_mask", json.dumps({"mask": str(PACK_ROOT / "README.md")})): "is not an image",
        ("draw_text", json.dumps({"image": str(photo), "padding": 7.5})): "7.5 is greater than the maximum of 0.45",
        ("edit_image", json.dumps({"image": str(photo), "instruction": "summon a KSampler"})): "offline planner",
        ("no_such_tool", "{}"): "no tool named 'no_such_tool'",
        ("rollback", json.dumps({"session_id": "x", "turn": -1})): "-1 is less than the minimum of 0",
        ("branch", json.dumps({"session_id": "x"})): "'turn' is a required property",
    }
    for (name, arguments), expected in cases.items():
        result = call(server, name, json.loads(arguments))
        assert result.is_error, (name, arguments)
        assert expected in result.content[0].text, (name, result.content[0].text)


def test_session_tools_follow_the_servers_routes(mcp_server, comfy_server):
    server, _ = mcp_server
    from agentic_edit.agent.client import ComfyClient

    routes = ComfyClient(comfy_server.url).request("GET", "/agentic_edit/sessions")[0] != 404
    listed = call(server, "list_sessions", {})
    missing = call(server, "session_history", {"session_id": "no-such-session"})
    assert missing.is_error
    if routes:
        assert not listed.is_error and "no session 'no-such-session'" in missing.content[0].text
    else:
        assert listed.is_error and "has no session routes yet" in listed.content[0].text
        assert "has no session routes yet" in missing.content[0].text


def test_undo_redo_and_branch_move_a_real_session(mcp_server, photo):
    server, _ = mcp_server
    sid = "mcp-redo-branch"
    for text in ("A", "B"):
        edit = call(server, "edit_image", {"image": str(photo), "instruction": f"write '{text}' at the top",
                                           "session": sid})
        assert not edit.is_error, edit.content

    def turns():
        history = call(server, "session_history", {"session_id": sid})
        assert not history.is_error, history.content
        return history.structured_content["result"]

    def head():
        state = turns()
        return state["head"]["artifact"], state["head"]["turn"], state["can_redo"]

    before = head()
    assert before[1] == 2 and before[2] is False
    assert not call(server, "undo", {"session_id": sid}).is_error
    assert head()[1:] == (1, True)
    redone = call(server, "redo", {"session_id": sid})
    assert not redone.is_error, redone.content
    assert head() == before
    assert call(server, "redo", {"session_id": sid}).is_error  # nothing left to redo
    branched = call(server, "branch", {"session_id": sid, "turn": 0})
    assert not branched.is_error, branched.content
    beyond = call(server, "branch", {"session_id": sid, "turn": 99})
    assert beyond.is_error and "turn" in beyond.content[0].text


def test_stdio_server_through_the_launcher(comfy_server, photo, tmp_path):
    params = StdioServerParameters(command=sys.executable, cwd=str(tmp_path), args=[
        str(PACK_ROOT / "agentic_edit_cli.py"), "mcp", "--server", comfy_server.url, "--no-local",
        "--out", str(tmp_path / "results")])

    async def go():
        async with Client(params) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("place_region", {"image": str(photo), "position": "top"})
            return names, result

    names, result = anyio.run(go)
    assert "edit_image" in names and "draw_text" in names
    assert not result.is_error, result.content
    [[region]] = result.structured_content["outputs"]["boxes"]["boxes"]
    assert region["label"] == "top" and region["y"] < 64


def test_unreachable_comfyui_is_an_error_result(tmp_path, photo):
    server = build_server(Backend(f"http://127.0.0.1:{free_port()}", tmp_path, start_local=False))
    result = call(server, "edit_image", {"image": str(photo), "instruction": "write 'X' at the top"})
    assert result.is_error and "no ComfyUI answers at" in result.content[0].text


def test_streamable_http_transport(comfy_server, photo, tmp_path):
    port = free_port()
    process = subprocess.Popen([sys.executable, str(PACK_ROOT / "agentic_edit_cli.py"), "mcp", "--transport", "http",
                                "--port", str(port), "--server", comfy_server.url, "--no-local",
                                "--out", str(tmp_path / "results")], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait for uvicorn to listen (any HTTP answer will do)
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            except urllib.error.HTTPError:
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "the HTTP MCP server did not start"
                time.sleep(0.2)
        updates = []

        async def progress(value, total, message):
            updates.append(message)

        async def go():
            async with Client(f"http://127.0.0.1:{port}/mcp") as client:
                return await client.call_tool("edit_image", {"image": str(photo),
                                                             "instruction": "write 'HTTP' at the bottom"},
                                              progress_callback=progress)

        result = anyio.run(go)
        assert not result.is_error, result.content
        assert Path(result.structured_content["result"]).is_file()
        assert "s2 done" in updates
    finally:
        process.terminate()
        process.wait(20)

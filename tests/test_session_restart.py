"""A ComfyUI killed in the middle of a session turn: after a restart on the same folders the session
is at its last good checkpoint, nothing keeps it busy, and the next turn edits that checkpoint."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.comfy_harness import ComfyServer, comfyui_missing_reason
from tests.session_comfy import detail, picture, post, say, turn_prompt

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


def kill_while_running(server: ComfyServer, prompt: dict, step: str, timeout: float = 120.0) -> None:
    """Queues ``prompt`` and kills the server (SIGKILL, as a crash) as soon as the expanded ``step``
    of the agent node "2" starts."""
    import websocket  # websocket-client

    client_id = uuid.uuid4().hex
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=timeout)
    try:
        prompt_id = server.queue(prompt, client_id)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = ws.recv()
            if isinstance(frame, bytes):
                continue
            message = json.loads(frame)
            data = message.get("data", {})
            node = data.get("node") or ""
            if message["type"] == "executing" and data.get("prompt_id") == prompt_id and \
                    node.startswith("2.") and node.endswith(f".{step}"):
                server.kill()
                return
            assert message["type"] not in ("execution_success", "execution_error"), message
        raise TimeoutError(f"step {step} never started")
    finally:
        ws.close()


def test_killing_comfyui_mid_turn_keeps_the_last_good_checkpoint(tmp_path, tiny_models_dir):
    reason = comfyui_missing_reason()
    if reason:
        pytest.skip(reason)
    sid = "crash"
    first = ComfyServer(tmp_path, models_dir=tiny_models_dir).start()
    try:
        name = first.upload_image(picture("chelsea"), "restart.png")
        say(first, name, sid, "write 'A' at the top")
        before = detail(first, sid)
        kill_while_running(first, turn_prompt(name, "recolor the cat to red", sid), "s1")  # while it grounds
    finally:
        first.stop()
    [killed] = [r for r in (first.output_dir / "agentic_edit" / "runs").iterdir() if not (r / "trace.json").exists()]
    assert (killed / "plan.json").is_file(), "the killed turn had started"

    second = ComfyServer(tmp_path, models_dir=tiny_models_dir).start()  # the same folders, a new process
    try:
        after = detail(second, sid)
        assert (after["version"], after["head"], len(after["turns"])) == (before["version"], before["head"], 2)
        assert post(second, sid, "undo")[0] == 200 and post(second, sid, "redo")[0] == 200, \
            "the dead process's turn keeps nothing busy"
        say(second, name, sid, "recolor the cat to red")
        s = detail(second, sid)
        assert s["turns"][2]["base"]["artifact"] == before["head"]["artifact"]
        assert [st["tool"] for st in s["turns"][2]["steps"]] == ["segment_by_text", "recolor"]
        pending = second.output_dir / "agentic_edit" / "sessions" / sid / "pending"
        assert not pending.is_dir() or not any(pending.iterdir()), "what the killed turn left was cleaned up"
    finally:
        second.stop()

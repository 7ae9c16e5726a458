"""A real ComfyUI server for tests: started headless on a free 127.0.0.1 port, all state in a
temporary folder, its model folders pointed at the tiny checkpoints and its custom nodes at this
pack. Helpers upload images, queue API-format prompts, follow ``/ws`` and read ``/history``.

Found through ``COMFYUI_PATH``, else ``~/comfy/ComfyUI`` (comfy-cli's default). The server runs on
the interpreter running the tests, which must have ComfyUI's requirements installed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.pack import PACK_NAME, PACK_ROOT


def find_comfyui() -> Path | None:
    candidates = [os.environ.get("COMFYUI_PATH"), str(Path.home() / "comfy" / "ComfyUI")]
    for candidate in candidates:
        if candidate and (Path(candidate).expanduser() / "main.py").is_file():
            return Path(candidate).expanduser().resolve()
    return None


def comfyui_missing_reason() -> str | None:
    """Why the real-ComfyUI tests cannot run here, or None when they can."""
    root = find_comfyui()
    if root is None:
        return ("no ComfyUI checkout: set COMFYUI_PATH or put one at ~/comfy/ComfyUI "
                "(see README, 'Running the tests')")
    try:
        import aiohttp  # noqa: F401  (one of ComfyUI's requirements: a cheap check the venv has them)
        import torchaudio  # noqa: F401
    except ImportError as exc:
        return f"ComfyUI's requirements are not installed in this interpreter ({exc}); pip install -r {root}/requirements.txt"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PromptRejected(RuntimeError):
    def __init__(self, body: dict):
        self.body = body
        error = body.get("error", {})
        details = "; ".join(
            f"node {nid} ({ne.get('class_type')}): " + ", ".join(e.get("details") or e.get("message", "") for e in ne.get("errors", []))
            for nid, ne in (body.get("node_errors") or {}).items())
        super().__init__(f"prompt rejected: {error.get('message', error)} {details}".strip())


class PromptFailed(RuntimeError):
    def __init__(self, message: str, history: dict):
        self.history = history
        super().__init__(message)


@dataclass
class RunResult:
    prompt_id: str
    history: dict
    events: list[dict] = field(default_factory=list)

    @property
    def outputs(self) -> dict:
        return self.history.get("outputs", {})

    def executed_nodes(self) -> list[str]:
        return [e["data"]["node"] for e in self.events if e["type"] == "executing" and e["data"].get("node")]

    def images(self) -> list[dict]:
        return [img for out in self.outputs.values() for img in out.get("images", [])]


class ComfyServer:
    """One ComfyUI process. Use as a context manager, or call ``start()``/``stop()``."""

    def __init__(self, workdir: Path, models_dir: Path | None = None, comfy_root: Path | None = None,
                 extra_args: tuple[str, ...] = ()):
        self.root = comfy_root or find_comfyui()
        if self.root is None:
            raise RuntimeError(comfyui_missing_reason())
        self.workdir = Path(workdir)
        self.models_dir = models_dir
        self.extra_args = extra_args
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "server.log"

    # -- lifecycle ---------------------------------------------------------------------------
    def _write_paths_yaml(self) -> Path:
        packs = self.workdir / "packs"
        packs.mkdir(parents=True, exist_ok=True)
        link = packs / PACK_NAME
        if not link.exists():
            link.symlink_to(PACK_ROOT, target_is_directory=True)
        lines = ["agentic_edit_tests:", f"  custom_nodes: {packs}"]
        if self.models_dir is not None:
            lines.insert(1, f"  base_path: {self.models_dir}")
            for sub in sorted(p.name for p in Path(self.models_dir).iterdir() if p.is_dir() and not p.name.startswith(".")):
                lines.append(f"  {sub}: {sub}")
        path = self.workdir / "extra_model_paths.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        base = self.workdir / "base"
        for sub in ("custom_nodes", "user", "input", "output"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        paths_yaml = self._write_paths_yaml()
        cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base),
               "--extra-model-paths-config", str(paths_yaml), "--database-url", "sqlite:///:memory:",
               *self.extra_args]
        env = dict(os.environ)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # byte-compiled ComfyUI starts ~25% faster
        env.setdefault("PYTHONPYCACHEPREFIX", str(Path.home() / ".cache" / "agentic-edit" / "pycache"))
        env["HF_HUB_OFFLINE"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        # Tiny test models: one thread beats two contending ones on a small CI machine.
        env.setdefault("OMP_NUM_THREADS", "1")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode}; log:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer within {timeout:.0f} s; log:\n{self.log_tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._log.close()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would (no cleanup runs)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- folders -----------------------------------------------------------------------------
    @property
    def input_dir(self) -> Path:
        return self.workdir / "base" / "input"

    @property
    def output_dir(self) -> Path:
        return self.workdir / "base" / "output"

    # -- HTTP --------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 30) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str, timeout: float = 30):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def post_json(self, path: str, payload) -> tuple[int, object]:
        status, body = self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        try:
            return status, json.loads(body) if body else None
        except json.JSONDecodeError:
            return status, body.decode(errors="replace")

    def object_info(self) -> dict:
        return self.get_json("/object_info")

    def upload_image(self, image, name: str | None = None) -> str:
        """Upload a PIL image, an ``[H,W,C]`` uint8/float array or a file path; returns the name to
        give LoadImage."""
        from PIL import Image
        import numpy as np

        if isinstance(image, (str, Path)):
            data = Path(image).read_bytes()
            name = name or Path(image).name
        else:
            if not isinstance(image, Image.Image):
                array = np.asarray(image)
                if array.dtype != np.uint8:
                    array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
                image = Image.fromarray(array)
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            data = buf.getvalue()
            name = name or f"upload_{uuid.uuid4().hex[:8]}.png"
        from agentic_edit.agent.client_files import multipart_image_body  # the product client's encoding

        body, content_type = multipart_image_body(name, data)
        status, resp = self.request("POST", "/upload/image", body, {"Content-Type": content_type})
        if status != 200:
            raise RuntimeError(f"upload failed ({status}): {resp[:300]!r}")
        return json.loads(resp)["name"]

    def queue(self, prompt: dict, client_id: str | None = None) -> str:
        payload = {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}
        status, body = self.post_json("/prompt", payload)
        if status != 200:
            raise PromptRejected(body if isinstance(body, dict) else {"error": {"message": str(body)}})
        return body["prompt_id"]

    def run(self, prompt: dict, timeout: float = 300.0) -> RunResult:
        """Queue ``prompt``, follow its websocket messages until it ends, return its history.
        Raises ``PromptRejected`` (validation) or ``PromptFailed`` (execution error/interrupt)."""
        import websocket  # websocket-client

        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        events: list[dict] = []
        try:
            prompt_id = self.queue(prompt, client_id)
            deadline = time.monotonic() + timeout
            while True:
                ws.settimeout(max(0.1, deadline - time.monotonic()))
                try:
                    frame = ws.recv()
                except websocket.WebSocketTimeoutException:
                    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s; log:\n{self.log_tail()}")
                if isinstance(frame, bytes):
                    continue  # binary preview frames
                message = json.loads(frame)
                data = message.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                events.append(message)
                kind = message.get("type")
                if kind in ("execution_error", "execution_interrupted"):
                    history = self.wait_history(prompt_id)
                    detail = data.get("exception_message") or kind
                    raise PromptFailed(f"{kind} in node {data.get('node_id')} ({data.get('node_type')}): {detail}", history)
                if kind == "execution_success" or (kind == "executing" and data.get("node") is None
                                                   and data.get("prompt_id") == prompt_id):
                    break
        finally:
            ws.close()
        return RunResult(prompt_id, self.wait_history(prompt_id), events)

    def wait_history(self, prompt_id: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            if prompt_id in history:
                return history[prompt_id]
            time.sleep(0.1)
        raise TimeoutError(f"no history for prompt {prompt_id}")

    def output_path(self, image_ref: dict) -> Path:
        """The file behind a history image entry ``{filename, subfolder, type}``."""
        base = {"output": self.output_dir, "temp": self.workdir / "base" / "temp",
                "input": self.input_dir}[image_ref.get("type", "output")]
        return base / image_ref.get("subfolder", "") / image_ref["filename"]

    def view(self, image_ref: dict) -> bytes:
        query = urllib.parse.urlencode({k: image_ref.get(k, "") for k in ("filename", "subfolder", "type")})
        status, body = self.request("GET", f"/view?{query}")
        if status != 200:
            raise RuntimeError(f"/view {image_ref} -> {status}")
        return body

"""A ComfyUI started for one job when no server answers: headless, on a free 127.0.0.1 port, from the
local install (``COMFYUI_PATH``, else ``~/comfy/ComfyUI``), with this pack made visible to it through an
``--extra-model-paths-config`` whose ``custom_nodes`` entry is a temporary folder holding a symlink to
the pack (nothing is written into the install's custom_nodes). It keeps the install's own model,
input and output folders, so sessions and results persist as with any ComfyUI run; extra start
arguments come from ``AGENTIC_EDIT_COMFY_ARGS`` (e.g. ``--cpu``). Stopped (SIGTERM, then SIGKILL)
when the job is done.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import ComfyClient, normalize_url
from .client_errors import ComfyError, ServerUnreachable

log = logging.getLogger(__name__)

PACK_ROOT = Path(__file__).resolve().parent.parent
_PACK_MARKERS = ("catalogue/spec.py", "agent/client.py")


def find_comfyui() -> Path | None:
    for candidate in (os.environ.get("COMFYUI_PATH"), str(Path.home() / "comfy" / "ComfyUI")):
        if candidate and (Path(candidate).expanduser() / "main.py").is_file():
            return Path(candidate).expanduser().resolve()
    return None


def find_python(root: Path) -> str:
    """ComfyUI's interpreter: ``COMFYUI_PYTHON``, a venv inside or beside the install, else ours."""
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for venv in (root / "venv", root / ".venv", root.parent / "venv", root.parent / ".venv"):
        for python in (venv / "bin" / "python", venv / "Scripts" / "python.exe"):
            if python.is_file():
                return str(python)
    return sys.executable


def installed_copy(root: Path) -> Path | None:
    """A copy of this pack already in the install's custom_nodes (then it is not added again)."""
    folder = root / "custom_nodes"
    if not folder.is_dir():
        return None
    for entry in folder.iterdir():
        if entry.is_dir() and all((entry / marker).is_file() for marker in _PACK_MARKERS):
            return entry
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_accelerator() -> bool:
    """A CUDA driver (Linux/Windows) or Apple silicon (MPS): without either, ComfyUI needs --cpu.
    Decided without importing torch, which this light command never loads."""
    import platform

    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    if sys.platform.startswith("linux"):
        return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/kfd") or os.path.exists("/dev/dxg")
    return shutil.which("nvidia-smi") is not None


class LocalComfyUI:
    """One ComfyUI process for the duration of a ``with`` block."""

    def __init__(self, root: Path | None = None, python: str | None = None, extra_args: tuple[str, ...] | None = None,
                 port: int | None = None):
        self.root = root or find_comfyui()
        if self.root is None:
            raise ServerUnreachable("no ComfyUI install found to start: set COMFYUI_PATH to a ComfyUI checkout "
                                    "(or put one at ~/comfy/ComfyUI), or give --server URL of a running one")
        self.python = python or find_python(self.root)
        self.extra_args = tuple(shlex.split(os.environ.get("AGENTIC_EDIT_COMFY_ARGS", ""))) if extra_args is None \
            else tuple(extra_args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.folder: Path | None = None
        self._log = None

    @property
    def log_path(self) -> Path | None:
        return self.folder / "comfyui.log" if self.folder else None

    def command(self) -> list[str]:
        cmd = [self.python, "main.py", "--listen", "127.0.0.1", "--port", str(self.port), "--disable-auto-launch"]
        existing = installed_copy(self.root)
        if existing is None:
            packs = self.folder / "custom_nodes"
            packs.mkdir(parents=True, exist_ok=True)
            (packs / PACK_ROOT.name).symlink_to(PACK_ROOT, target_is_directory=True)
            paths = self.folder / "extra_model_paths.yaml"
            paths.write_text(f"agentic_edit_cli:\n  custom_nodes: {packs}\n")
            cmd += ["--extra-model-paths-config", str(paths)]
        else:
            log.info("the pack is installed in %s; ComfyUI loads that copy", existing)
        if not _has_accelerator() and "--cpu" not in self.extra_args:
            # ComfyUI asks torch for a CUDA device at start and dies on a machine without one.
            cmd.append("--cpu")
        return cmd + list(self.extra_args)

    def start(self, timeout: float = 300.0) -> "LocalComfyUI":
        self.folder = Path(tempfile.mkdtemp(prefix="agentic_edit_comfyui_"))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "wb")
        cmd = self.command()
        log.info("starting ComfyUI: %s", " ".join(cmd))
        self.process = subprocess.Popen(cmd, cwd=self.root, stdout=self._log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        probe = ComfyClient(self.url, timeout=2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise ComfyError(f"the local ComfyUI ({self.root}) exited with code {self.process_code} while "
                                 f"starting; its log ends with:\n{tail}")
            try:
                probe.system_stats()
                return self
            except ServerUnreachable:
                time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise ComfyError(f"the local ComfyUI did not answer within {timeout:.0f} s; its log ends with:\n{tail}")

    @property
    def process_code(self):
        return None if self.process is None else self.process.returncode

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except (OSError, AttributeError):
            return ""

    def __enter__(self) -> "LocalComfyUI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def connect(url: str | None, *, start_local: bool = True, notify=None, **client_options):
    """A client for ``url`` when a ComfyUI with this pack answers there; otherwise, when allowed and a
    local install exists, a client for a ComfyUI started for the job. Returns ``(client, local)``;
    the caller stops ``local`` (None when nothing was started)."""
    client = ComfyClient(normalize_url(url), **client_options)
    try:
        client.system_stats()
        return client, None
    except ServerUnreachable as unreachable:
        if not start_local or find_comfyui() is None:
            raise unreachable
    local = LocalComfyUI()
    if notify is not None:
        notify(f"no ComfyUI answers at {client.url}; starting the local one in {local.root} for this job")
    local.start()
    return ComfyClient(local.url, **client_options), local

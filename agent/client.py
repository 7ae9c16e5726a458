"""A ComfyUI API client: upload inputs, queue an API-format prompt, follow its websocket messages,
read its history and outputs, cancel it. Used by the ``agentic-edit`` command, the batch runner and
the MCP server. Standard library plus ``websocket-client``; without that package the client polls
``/history`` instead (no live progress, same results).

The websocket is opened before the prompt is queued, so no message of the job is missed; if it drops,
the client reconnects with the same client id and asks ``/history`` whether the job ended meanwhile.
The routes and the message sequence are ComfyUI's own (server.py, execution.py); see
``research/comfyui-host.md`` section 7.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..catalogue.agent import AGENT_EDIT
from .client_errors import (BadInput, ComfyError, JobFailed, JobInterrupted, JobLost, JobTimeout, PackMissing,
                            PromptRejected, ServerUnreachable, SessionNotFound, SessionRoutesMissing)
from .client_files import FileRef, image_bytes, multipart_image_body, upload_name

log = logging.getLogger(__name__)

DEFAULT_URL = os.environ.get("AGENTIC_EDIT_SERVER", "http://127.0.0.1:8188")
PLANNER_NODE = AGENT_EDIT.node_id  # the AgentPlanner: its presence says the pack is loaded
SESSION_ROUTES = "/agentic_edit/sessions"


def normalize_url(url: str) -> str:
    url = (url or DEFAULT_URL).strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


@dataclass
class JobEvent:
    """One thing that happened to a job, for progress displays.

    ``kind``: "queued", "started", "cached", "executing" (node started), "progress" (node value/max
    changed), "executed" (node wrote UI output), "reconnecting", "success".
    """

    kind: str
    prompt_id: str
    node: str | None = None
    value: float | None = None
    max: float | None = None
    data: dict = field(default_factory=dict)


@dataclass
class JobResult:
    prompt_id: str
    server: str
    history: dict

    @property
    def outputs(self) -> dict:
        return self.history.get("outputs", {})

    def files(self, node: str | None = None) -> list[FileRef]:
        """Every file the job's output nodes reported (``images`` and other lists of file dicts)."""
        refs = []
        for node_id, output in self.outputs.items():
            if node is not None and node_id != node:
                continue
            for value in output.values():
                if isinstance(value, list):
                    refs.extend(FileRef.from_dict(v) for v in value if isinstance(v, dict) and "filename" in v)
        return refs


EventCallback = Callable[[JobEvent], None]


class ComfyClient:
    """One ComfyUI server. ``timeout`` bounds each HTTP request; a job's own time limit is given to
    ``run``/``wait``. ``reconnect_window`` is how long a dropped websocket is retried before the
    server counts as gone."""

    def __init__(self, url: str | None = None, timeout: float = 30.0, reconnect_window: float = 30.0):
        self.url = normalize_url(url)
        self.timeout = timeout
        self.reconnect_window = reconnect_window
        self.client_id = uuid.uuid4().hex
        self._planner_info: dict | None = None
        # A proxy from the environment must not carry requests to a ComfyUI on this machine.
        loopback = urllib.parse.urlsplit(self.url).hostname in ("127.0.0.1", "localhost", "::1")
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))

    def __repr__(self) -> str:
        return f"ComfyClient({self.url!r})"

    # -- HTTP ------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        timeout = timeout or self.timeout
        try:
            with self._opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, ConnectionError, socket.timeout, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise ServerUnreachable(f"ComfyUI at {self.url} did not answer {method} {path} within "
                                        f"{timeout:g} s; it may be overloaded or hung") from None
            raise ServerUnreachable(
                f"no ComfyUI answers at {self.url} ({reason}); start ComfyUI (python main.py --listen 127.0.0.1 "
                f"--port 8188) or give the right --server URL") from None

    def get_json(self, path: str, timeout: float | None = None):
        status, body = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyError(f"GET {self.url}{path} answered {status}: {body[:300].decode(errors='replace')}")
        return _loads(body, f"GET {path}")

    def post_json(self, path: str, payload) -> tuple[int, object]:
        status, body = self.request("POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
        try:
            return status, (json.loads(body) if body else None)
        except ValueError:
            return status, body.decode(errors="replace")

    # -- server facts ----------------------------------------------------------------------------
    def system_stats(self) -> dict:
        return self.get_json("/system_stats", timeout=min(self.timeout, 10))

    def object_info(self, node_class: str | None = None) -> dict:
        return self.get_json(f"/object_info/{node_class}" if node_class else "/object_info")

    def planner_info(self) -> dict:
        """The AgentPlanner's ``/object_info`` entry; ``PackMissing`` when the server lacks the pack."""
        if self._planner_info is None:
            info = self.object_info(PLANNER_NODE).get(PLANNER_NODE)
            if not info:
                raise PackMissing(
                    f"ComfyUI at {self.url} runs without the Agentic Edit pack (no {PLANNER_NODE} in /object_info): "
                    "clone the pack into its custom_nodes folder and restart it; if it is there, its start-up log "
                    "names the import error ('IMPORT FAILED')")
            self._planner_info = info
        return self._planner_info

    def queue_length(self) -> int:
        """Jobs running plus waiting on this server (everyone's, not only ours)."""
        queue = self.get_json("/queue")
        return len(queue.get("queue_running", [])) + len(queue.get("queue_pending", []))

    def _job_state(self, prompt_id: str) -> str:
        """'done' (in history), 'queued' (running or waiting) or 'unknown'."""
        if prompt_id in self.get_json(f"/history/{prompt_id}"):
            return "done"
        queue = self.get_json("/queue")
        for item in queue.get("queue_running", []) + queue.get("queue_pending", []):
            if len(item) > 1 and item[1] == prompt_id:
                return "queued"
        return "unknown"

    # -- inputs ----------------------------------------------------------------------------------
    def upload_image(self, image, name: str | None = None) -> str:
        """Upload a file path (checked: it exists and is an image) or raw image bytes into the
        server's input folder; returns the name a LoadImage node takes. Names carry a content hash,
        so the same image is stored once and ComfyUI's cache still recognises it."""
        data, original = image_bytes(image)
        name = upload_name(data, name or original)
        body, content_type = multipart_image_body(name, data)
        status, resp = self.request("POST", "/upload/image", body, {"Content-Type": content_type})
        if status != 200:
            raise ComfyError(f"uploading {name} to {self.url} failed ({status}): {resp[:300].decode(errors='replace')}")
        return _loads(resp, "upload")["name"]

    # -- jobs ------------------------------------------------------------------------------------
    def queue_prompt(self, prompt: dict, prompt_id: str | None = None) -> str:
        payload = {"prompt": prompt, "client_id": self.client_id}
        if prompt_id:
            payload["prompt_id"] = prompt_id
        status, body = self.post_json("/prompt", payload)
        if status != 200:
            raise PromptRejected(body if isinstance(body, dict) else {"error": {"message": f"{status}: {body}"}})
        return body["prompt_id"]

    def run(self, prompt: dict, on_event: EventCallback | None = None, timeout: float | None = None,
            cancel: threading.Event | None = None) -> JobResult:
        """Queue ``prompt`` and follow it to its end. Raises ``PromptRejected``, ``JobFailed``,
        ``JobInterrupted``, ``JobTimeout``, ``ServerUnreachable``/``JobLost``. Setting ``cancel``
        interrupts the job on the server (then ``JobInterrupted``)."""
        socket_ = self._open_ws(required=False)
        try:
            prompt_id = self.queue_prompt(prompt)
        except BaseException:
            _close(socket_)
            raise
        _emit(on_event, JobEvent("queued", prompt_id))
        return self._follow(prompt_id, socket_, on_event, timeout, cancel)

    def wait(self, prompt_id: str, on_event: EventCallback | None = None, timeout: float | None = None,
             cancel: threading.Event | None = None) -> JobResult:
        """Follow a job queued earlier to its end. Live progress comes only for jobs this client
        queued (ComfyUI sends it to the queuing client id); any other job is seen ending through
        ``/history``."""
        return self._follow(prompt_id, self._open_ws(required=False), on_event, timeout, cancel)

    def history(self, prompt_id: str) -> dict | None:
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def interrupt(self, prompt_id: str) -> None:
        """Cancel a job: stop it if it runs, drop it from the queue if it waits."""
        self.post_json("/interrupt", {"prompt_id": prompt_id})
        self.post_json("/queue", {"delete": [prompt_id]})

    def _follow(self, prompt_id, ws, on_event, timeout, cancel) -> JobResult:
        from .client_follow import Follower

        return Follower(self, prompt_id, ws, on_event, timeout, cancel).run()

    def _open_ws(self, required: bool = True):
        try:
            import websocket  # websocket-client
        except ImportError:
            if required:
                raise
            log.info("websocket-client is not installed: following jobs by polling /history (no live progress)")
            return None
        parsed = urllib.parse.urlsplit(self.url)
        scheme = "wss" if parsed.scheme == "https" else "ws"
        address = f"{scheme}://{parsed.netloc}{parsed.path}/ws?clientId={self.client_id}"
        try:
            return websocket.create_connection(address, timeout=self.timeout)
        except (OSError, websocket.WebSocketException) as exc:
            raise ServerUnreachable(f"cannot open ComfyUI's websocket at {address} ({exc})") from None

    # -- outputs ---------------------------------------------------------------------------------
    def view(self, ref: FileRef) -> bytes:
        status, body = self.request("GET", f"/view?{ref.query()}", timeout=max(self.timeout, 120))
        if status != 200:
            raise ComfyError(f"{ref.path} is not on {self.url} (/view answered {status})")
        return body

    def download(self, ref: FileRef, dest: str | os.PathLike) -> Path:
        """Save a server file to ``dest`` through a temporary name, so no half file is ever left."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = self.view(ref)
        partial = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:6]}.part")
        try:
            partial.write_bytes(data)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest

    def view_json(self, ref: FileRef):
        return _loads(self.view(ref), ref.path)

    # -- session memory (routes added by the pack under /agentic_edit/) ---------------------------
    def sessions(self) -> list:
        body = self._session_call("GET", SESSION_ROUTES)
        return body.get("sessions", []) if isinstance(body, dict) else list(body or [])

    def session(self, session_id: str) -> dict:
        return self._session_call("GET", f"{SESSION_ROUTES}/{_quote(session_id)}", session_id=session_id)

    def undo(self, session_id: str) -> dict:
        return self._session_call("POST", f"{SESSION_ROUTES}/{_quote(session_id)}/undo", {}, session_id)

    def redo(self, session_id: str) -> dict:
        return self._session_call("POST", f"{SESSION_ROUTES}/{_quote(session_id)}/redo", {}, session_id)

    def rollback(self, session_id: str, turn: int) -> dict:
        return self._go_to("rollback", session_id, turn)

    def branch(self, session_id: str, turn: int) -> dict:
        """Like rollback, said the way the panel offers it: the next edit starts a branch there."""
        return self._go_to("branch", session_id, turn)

    def _go_to(self, action: str, session_id: str, turn: int) -> dict:
        if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
            raise BadInput(f"{action}: turn must be a whole number of at least 0, not {turn!r}")
        return self._session_call("POST", f"{SESSION_ROUTES}/{_quote(session_id)}/{action}", {"turn": turn},
                                  session_id)

    def _session_call(self, method: str, path: str, payload=None, session_id: str | None = None):
        if method == "GET":
            status, raw = self.request("GET", path)
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
        else:
            status, body = self.post_json(path, payload if payload is not None else {})
        if status == 200:
            return body
        if status == 404 and isinstance(body, dict) and body.get("kind") not in (None, "SessionNotFound"):
            raise BadInput(f"{method} {path}: {body.get('error')}")  # a turn or file the session does not have
        if status in (404, 405):
            # "No such session" or "no such route" (aiohttp answers 405 to a POST on a path that only
            # its catch-all GET serves): the list route tells them apart.
            if session_id is None or self.request("GET", SESSION_ROUTES)[0] == 404:
                raise SessionRoutesMissing(
                    f"this server's pack has no session routes yet ({method} {path} -> {status} at {self.url}): "
                    "update the Agentic Edit pack on that ComfyUI and restart it")
            raise SessionNotFound(f"no session {session_id!r} on {self.url}; 'agentic-edit sessions' lists them")
        message = body.get("error", body) if isinstance(body, dict) else body
        if status == 400:
            raise BadInput(f"{method} {path}: {message}")
        raise ComfyError(f"{method} {self.url}{path} answered {status}: {message}")


def _quote(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"a session id must be a non-empty string, not {text!r}")
    return urllib.parse.quote(text, safe="")


def _loads(raw: bytes, what: str):
    try:
        return json.loads(raw)
    except ValueError:
        raise ComfyError(f"{what}: the server did not answer with JSON: {raw[:200]!r}") from None


def _emit(callback: EventCallback | None, event: JobEvent) -> None:
    if callback is not None:
        callback(event)


def _close(ws) -> None:
    if ws is not None:
        try:
            ws.close()
        except Exception:  # closing a dead socket must not hide the error that killed it
            pass


__all__ = ["ComfyClient", "JobEvent", "JobResult", "FileRef", "DEFAULT_URL", "PLANNER_NODE", "normalize_url",
           "ComfyError", "BadInput", "ServerUnreachable", "JobLost", "PackMissing", "PromptRejected", "JobFailed",
           "JobInterrupted", "JobTimeout", "SessionRoutesMissing", "SessionNotFound"]

"""Following one queued job to its end: ComfyUI's websocket messages become ``JobEvent``s, a dropped
socket is reopened, and ``/history`` decides the outcome.

Message sequence for a run (ComfyUI execution.py): ``execution_start``, ``execution_cached``, then
per node ``executing`` / ``progress`` / ``progress_state`` / ``executed``, and finally
``execution_success`` (or ``execution_error`` / ``execution_interrupted``) and ``executing`` with
``node: null``. V3 nodes report progress only through ``progress_state``, so both are read.
"""

from __future__ import annotations

import json
import logging
import time

from .client_errors import (ComfyError, JobFailed, JobInterrupted, JobLost, JobTimeout, ServerUnreachable)

log = logging.getLogger(__name__)

_SLICE = 1.0          # seconds per websocket read, so cancel and the deadline are checked often
_HISTORY_CHECK = 5.0  # a quiet socket for this long: ask /history in case a message was missed
_END_MESSAGES = ("execution_success", "execution_error", "execution_interrupted")
_RECONNECTED = {"type": "reconnected"}


class Follower:
    def __init__(self, client, prompt_id: str, ws, on_event, timeout: float | None, cancel):
        self.client = client
        self.prompt_id = prompt_id
        self.ws = ws
        self.on_event = on_event
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout if timeout else None
        self.cancel = cancel
        self.cancel_sent = False
        self.last_error: dict | None = None
        self.states: dict[str, tuple] = {}

    # -- main loop -------------------------------------------------------------------------------
    def run(self):
        try:
            quiet_since = time.monotonic()
            while True:
                self._check_deadline()
                if self._check_cancel():
                    break
                if self.ws is None:
                    if self._job_ended():
                        break
                    time.sleep(0.3)
                    continue
                message = self._receive()
                if message is _RECONNECTED:  # messages sent meanwhile are lost: ask /history at once
                    if self._job_ended():
                        break
                    continue
                if message is None:  # a quiet slice
                    if time.monotonic() - quiet_since > _HISTORY_CHECK:
                        quiet_since = time.monotonic()
                        if self._job_ended():
                            break
                    continue
                quiet_since = time.monotonic()
                if self._handle(message):
                    break
        finally:
            self._close()
        return self._outcome()

    def _receive(self) -> dict | None:
        import websocket

        self.ws.settimeout(_SLICE)
        try:
            frame = self.ws.recv()
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketException, OSError) as exc:
            log.info("websocket to %s dropped (%s); reconnecting", self.client.url, exc)
            self._reconnect()
            return _RECONNECTED
        if isinstance(frame, bytes) or not frame:
            return None  # binary preview frames
        try:
            return json.loads(frame)
        except ValueError:
            return None

    def _handle(self, message: dict) -> bool:
        kind, data = message.get("type"), message.get("data") or {}
        if data.get("prompt_id") != self.prompt_id:
            return False  # status broadcasts and other clients' jobs
        if kind in _END_MESSAGES:
            if kind != "execution_success":
                self.last_error = {"type": kind, **data}
            return True
        if kind == "executing":
            if data.get("node") is None:
                return True
            self._emit("executing", data.get("node"), data=data)
        elif kind == "execution_start":
            self._emit("started")
        elif kind == "execution_cached":
            self._emit("cached", data={"nodes": data.get("nodes", [])})
        elif kind == "progress":
            self._progress(data.get("node"), data.get("value"), data.get("max"), "running")
        elif kind == "progress_state":
            for node_id, state in (data.get("nodes") or {}).items():
                self._progress(node_id, state.get("value"), state.get("max"), state.get("state"))
        elif kind == "executed":
            self._emit("executed", data.get("node"), data={"output": data.get("output")})
        return False

    def _progress(self, node, value, maximum, state) -> None:
        key = (value, maximum, state)
        if node is None or self.states.get(node) == key:
            return
        self.states[node] = key
        self._emit("progress", node, value, maximum, {"state": state})

    def _emit(self, kind: str, node=None, value=None, maximum=None, data=None) -> None:
        if self.on_event is not None:
            from .client import JobEvent

            self.on_event(JobEvent(kind, self.prompt_id, node, value, maximum, data or {}))

    # -- when things go wrong --------------------------------------------------------------------
    def _check_deadline(self) -> None:
        if self.deadline is None or time.monotonic() < self.deadline:
            return
        try:
            self.client.interrupt(self.prompt_id)
            what = "it was cancelled on the server"
        except ComfyError:
            what = "the server could not be told to cancel it"
        raise JobTimeout(f"job {self.prompt_id} did not finish within {self.timeout:g} s on {self.client.url}; "
                         f"{what} (give a longer --timeout for big images or slow models)")

    def _check_cancel(self) -> bool:
        """Send the interrupt once ``cancel`` is set; True when the job is gone for good (it was still
        waiting, so ComfyUI dropped it without a history entry)."""
        if self.cancel is None or not self.cancel.is_set():
            return False
        if not self.cancel_sent:
            self.cancel_sent = True
            self.client.interrupt(self.prompt_id)
        if self._state() == "unknown":
            raise JobInterrupted(self.prompt_id)
        return False

    def _job_ended(self) -> bool:
        state = self._state()
        if state == "unknown":
            raise JobLost(f"{self.client.url} no longer knows job {self.prompt_id}: the server restarted while it "
                          "was queued or running; queue it again")
        return state == "done"

    def _state(self) -> str:
        """The job's state, riding out a short outage of the server (``reconnect_window``)."""
        return self._retrying(lambda: self.client._job_state(self.prompt_id))

    def _reconnect(self) -> None:
        self._close()
        self._emit("reconnecting")
        self.ws = self._retrying(self.client._open_ws)

    def _retrying(self, call):
        """``call()``, retried every 0.5 s while the server does not answer, for at most
        ``reconnect_window`` seconds (and never past the job's own deadline)."""
        until = time.monotonic() + self.client.reconnect_window
        while True:
            try:
                return call()
            except ServerUnreachable:
                if time.monotonic() > until:
                    raise ServerUnreachable(f"lost ComfyUI at {self.client.url} while job {self.prompt_id} ran "
                                            f"(no answer for {self.client.reconnect_window:g} s)") from None
                self._check_deadline()
                time.sleep(0.5)

    def _close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:  # a dead socket cannot be closed cleanly; nothing to report
                pass
            self.ws = None

    # -- the outcome -----------------------------------------------------------------------------
    def _outcome(self):
        from .client import JobResult

        history = self._wait_history()
        status = history.get("status") or {}
        if status.get("status_str") == "success" or (not status and not self.last_error):
            self._emit("success")
            return JobResult(self.prompt_id, self.client.url, history)
        error = self.last_error
        for name, data in status.get("messages", []):
            if name in ("execution_error", "execution_interrupted"):
                error = {"type": name, **data}
        if error and error["type"] == "execution_interrupted":
            raise JobInterrupted(self.prompt_id, error)
        raise JobFailed(self.prompt_id, error or {})

    def _wait_history(self, seconds: float = 30.0) -> dict:
        until = time.monotonic() + seconds
        while True:
            entry = self.client.history(self.prompt_id)
            if entry is not None:
                return entry
            if time.monotonic() > until:
                raise ComfyError(f"job {self.prompt_id} ended but {self.client.url} wrote no history for it")
            time.sleep(0.1)

"""What can go wrong when a program drives ComfyUI from outside, one exception class per cause, each
with a message that says what happened and what to do. ``exit_code`` is what the ``agentic-edit``
command returns for it: 2 bad input, 3 the server (down, without this pack, without a route), 1 the
job itself (rejected, failed, interrupted, timed out)."""

from __future__ import annotations


class ComfyError(RuntimeError):
    """Base of every client error."""

    exit_code = 1


class BadInput(ComfyError, ValueError):
    """A missing input file, a file that is not an image, an argument of the wrong type."""

    exit_code = 2


class ServerUnreachable(ComfyError):
    """No ComfyUI answers at the URL (or it stopped answering while a job ran)."""

    exit_code = 3


class JobLost(ServerUnreachable):
    """The server no longer knows the job (it restarted while the job was queued or running)."""


class PackMissing(ComfyError):
    """ComfyUI answers but does not have this pack loaded."""

    exit_code = 3


class SessionRoutesMissing(ComfyError):
    """The server's copy of the pack predates session memory (no /agentic_edit/sessions routes)."""

    exit_code = 3


class SessionNotFound(ComfyError):
    """The session routes exist but know no session of that id."""

    exit_code = 2


class PromptRejected(ComfyError):
    """``POST /prompt`` refused the graph; ``node_errors`` maps node id -> ComfyUI's errors for it."""

    def __init__(self, body: dict):
        self.body = body if isinstance(body, dict) else {"error": {"message": str(body)}}
        self.error = self.body.get("error") or {}
        if not isinstance(self.error, dict):
            self.error = {"message": str(self.error)}
        self.node_errors = self.body.get("node_errors") or {}
        lines = [f"ComfyUI rejected the prompt: {self.error.get('message', 'no reason given')}"]
        if self.error.get("details"):
            lines[0] += f" ({self.error['details']})"
        for node_id, entry in self.node_errors.items():
            reasons = "; ".join(e.get("details") or e.get("message", "") for e in entry.get("errors", []))
            lines.append(f"  node {node_id} ({entry.get('class_type', '?')}): {reasons}")
        super().__init__("\n".join(lines))


class JobFailed(ComfyError):
    """The job ran and a node raised; ``node_id``/``node_type``/``reason`` say which and why."""

    def __init__(self, prompt_id: str, data: dict | None = None, message: str | None = None):
        data = data or {}
        self.prompt_id = prompt_id
        self.node_id = data.get("node_id")
        self.node_type = data.get("node_type")
        self.reason = data.get("exception_message") or message or "no reason given"
        where = f" in node {self.node_id} ({self.node_type})" if self.node_id else ""
        super().__init__(message or f"the job failed{where}: {str(self.reason).strip()}")


class JobInterrupted(JobFailed):
    """The job was cancelled (``POST /interrupt``) before it finished."""

    def __init__(self, prompt_id: str, data: dict | None = None):
        node = (data or {}).get("node_id")
        super().__init__(prompt_id, data, f"the job was interrupted{f' at node {node}' if node else ''}")


class JobTimeout(ComfyError):
    """The job did not finish in the time allowed."""

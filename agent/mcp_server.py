"""An MCP server for external agents: the pack's edit turn, each catalogued tool and the session
operations (mcp_tools.py), run by a ComfyUI server through the API client, with progress
notifications while a job runs. Transports: stdio (``agentic-edit mcp``) and streamable HTTP
(``agentic-edit mcp --transport http --port 8765``, served at ``/mcp``).

Arguments are checked against each tool's JSON schema before anything runs; every failure (bad
arguments, a missing file, ComfyUI down or without the pack, a failed job) comes back as a tool
result with ``isError`` and a message the calling model can act on. Result files stay under
``--out``; ``resources/read`` serves them (and nothing else) to clients on another machine.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread
import jsonschema
import mcp_types as types
from mcp.server.lowlevel import Server

from .client import ComfyClient
from .client_errors import ComfyError
from .jobs import node_label
from .mcp_tools import all_mcp_tools

log = logging.getLogger(__name__)


class Backend:
    """Where jobs run and results go. The ComfyUI connection is made at the first call (starting a
    local ComfyUI when none answers and ``start_local``) and kept until ``close``."""

    def __init__(self, server_url: str | None = None, out_dir="agentic_edit_out/mcp", start_local: bool = True,
                 timeout: float = 1800.0):
        self.server_url = server_url
        self.out_dir = Path(out_dir).expanduser().resolve()
        self.start_local = start_local
        self.timeout = timeout
        self._client: ComfyClient | None = None
        self._local = None
        self._lock = threading.Lock()

    def client(self) -> ComfyClient:
        with self._lock:
            if self._client is None:
                from .local_server import connect

                self._client, self._local = connect(self.server_url, start_local=self.start_local,
                                                    notify=lambda text: log.warning("%s", text))
            return self._client

    def close(self) -> None:
        if self._local is not None:
            self._local.stop()
            self._local = None


class _Progress:
    """Job events -> MCP progress notifications (monotonic: finished nodes + the running one's share)."""

    def __init__(self, session):
        self.session = session
        self.finished = 0
        self.last = -1.0

    def __call__(self, event) -> None:
        label = node_label(event.node)
        if event.kind == "queued":
            value, message = 0.0, "queued on ComfyUI"
        elif event.kind == "progress" and event.data.get("state") == "finished":
            self.finished += 1
            value, message = float(self.finished), f"{label} done"
        elif event.kind == "progress" and event.max:
            value = self.finished + min(0.99, (event.value or 0) / event.max)
            message = f"{label} {100 * (event.value or 0) / event.max:.0f}%"
        else:
            return
        if value <= self.last:
            return
        self.last = value
        try:
            anyio.from_thread.run(self.session.report_progress, value, None, message)
        except Exception as exc:  # a client that went away must not stop the job
            log.debug("progress notification not sent: %s", exc)


def _error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=text)], is_error=True)


def argument_problems(schema: dict, arguments) -> list[str]:
    problems = []
    for error in jsonschema.Draft202012Validator(schema).iter_errors(arguments):
        where = "/".join(str(p) for p in error.absolute_path)
        problems.append(f"argument {where!r}: {error.message}" if where else error.message)
    return sorted(problems)


def build_server(backend: Backend) -> Server:
    tools = all_mcp_tools()

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name=t.name, description=t.description,
                                                       input_schema=t.input_schema) for t in tools.values()])

    async def call_tool(ctx, params) -> types.CallToolResult:
        tool = tools.get(params.name)
        if tool is None:
            return _error(f"no tool named {params.name!r}; the tools are: {', '.join(tools)}")
        arguments = params.arguments or {}
        problems = argument_problems(tool.input_schema, arguments)
        if problems:
            return _error(f"{tool.name}: invalid arguments: " + "; ".join(problems))
        cancel = threading.Event()
        progress = _Progress(ctx.session)
        try:
            content, structured = await anyio.to_thread.run_sync(
                lambda: tool.run(backend, arguments, progress, cancel), abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            cancel.set()  # the worker interrupts the ComfyUI job
            raise
        except ComfyError as exc:
            return _error(f"{tool.name}: {exc}")
        except Exception as exc:  # report, do not crash the server
            log.exception("tool %s failed", tool.name)
            return _error(f"{tool.name}: unexpected {type(exc).__name__}: {exc}")
        return types.CallToolResult(content=content, structured_content=structured)

    async def list_resources(ctx, params) -> types.ListResourcesResult:
        files = sorted((p for p in backend.out_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
                        and (p.name == "trace.json" or p.suffix == ".png")),
                       key=lambda p: p.stat().st_mtime, reverse=True)[:200]
        return types.ListResourcesResult(resources=[
            types.Resource(uri=p.as_uri(), name=f"{p.parent.name}/{p.name}", mime_type=_mime(p)) for p in files])

    async def read_resource(ctx, params) -> types.ReadResourceResult:
        path = _local_file(params.uri, backend.out_dir)
        data = path.read_bytes()
        if path.suffix == ".json":
            contents = types.TextResourceContents(uri=params.uri, mime_type=_mime(path), text=data.decode())
        else:
            contents = types.BlobResourceContents(uri=params.uri, mime_type=_mime(path),
                                                  blob=base64.b64encode(data).decode())
        return types.ReadResourceResult(contents=[contents])

    return Server("agentic-edit", version="0.1.0",
                  instructions="Image editing tools run by ComfyUI. Give images as file paths on this machine. "
                               "edit_image takes a plain instruction and plans the steps itself; the other tools "
                               "are its single steps. Results come back as previews plus links to the full files.",
                  on_list_tools=list_tools, on_call_tool=call_tool, on_list_resources=list_resources,
                  on_read_resource=read_resource)


def _mime(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _local_file(uri: str, root: Path) -> Path:
    """The file a ``file://`` URI names, when it lies under ``root`` (results only, never other files)."""
    from mcp.shared.exceptions import MCPError

    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme != "file":
        raise MCPError(code=types.INVALID_PARAMS, message=f"only file:// results of this server can be read: {uri}")
    path = Path(urllib.request.url2pathname(parsed.path)).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise MCPError(code=types.INVALID_PARAMS, message=f"{uri} is not a result file of this server")
    return path


def serve(transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765, server_url: str | None = None,
          out_dir="agentic_edit_out/mcp", start_local: bool = True) -> None:
    backend = Backend(server_url, out_dir, start_local)
    server = build_server(backend)
    try:
        if transport == "stdio":
            from mcp.server.stdio import stdio_server

            async def run_stdio() -> None:
                async with stdio_server() as (read_stream, write_stream):
                    await server.run(read_stream, write_stream, server.create_initialization_options())

            anyio.run(run_stdio)
        else:
            import uvicorn

            uvicorn.run(server.streamable_http_app(host=host), host=host, port=port, log_level="warning")
    finally:
        backend.close()

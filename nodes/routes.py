"""HTTP routes of session memory on ComfyUI's own server (ComfyUI also serves them under ``/api``):

    GET  /agentic_edit/sessions                          {"sessions": [...]}, most recently changed first
    GET  /agentic_edit/sessions/{id}                     its turns, steps, regions, files; can_undo / can_redo
    POST /agentic_edit/sessions/{id}/undo                {"count": 1}
    POST /agentic_edit/sessions/{id}/redo                {"count": 1}
    POST /agentic_edit/sessions/{id}/rollback            {"turn": 2, "step": "s1"}   (step optional)
    POST /agentic_edit/sessions/{id}/branch              {"turn": 2}: rollback, said as "the next edit branches"
    GET  /agentic_edit/sessions/{id}/artifacts/{n}       an artifact's file
    DELETE /agentic_edit/sessions/{id}                   {"deleted": id}
    GET  /agentic_edit/sessions/{id}?limit=30&before=N   one page of turns, newest last (the web panel)
    GET  /agentic_edit/sessions/{id}/turns/{n}/plan      the plan the turn ran; "workflow": exported or not
    GET  /agentic_edit/sessions/{id}/turns/{n}/workflow  the plan as a UI workflow (?format=api: API format)

Files are ``{"filename", "subfolder", "type"}`` for ComfyUI's ``/view`` plus the ready ``url``.
Errors are ``{"error": message, "kind": exception class name}`` with 400 (bad id or body), 404
(unknown session, turn or artifact), 409 (another client's turn is running, nothing to undo or
redo), 507 (disk full). The work is ``agent/session/routes_logic.py``; this module parses requests
and sends answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.parse

from aiohttp import web

from ..agent.session import SessionError, routes_logic
from ..agent.session.files import check_session_id
from .session_host import end_stale_turns, output_root, sessions_store

log = logging.getLogger(__name__)

ROOT = "/agentic_edit/sessions"
_REGISTERED: set[int] = set()


def with_urls(value):
    """``value`` with a ``url`` beside every ``/view`` file reference in it."""
    if isinstance(value, list):
        return [with_urls(v) for v in value]
    if not isinstance(value, dict):
        return value
    found = {k: with_urls(v) for k, v in value.items()}
    if {"filename", "subfolder", "type"} <= set(value):
        query = urllib.parse.urlencode({k: value[k] for k in ("filename", "subfolder", "type")})
        found["url"] = f"/view?{query}"
    return found


def _error(exc: Exception) -> web.Response:
    status = routes_logic.http_status(exc)
    if status >= 500:
        log.error("session route failed: %s", exc, exc_info=status == 500)
    # ``kind`` lets a client tell "no such session" from "no such turn" (both 404).
    return web.json_response({"error": str(exc), "kind": type(exc).__name__}, status=status)


async def _answer(work, *args, **kwargs) -> web.Response:
    """Runs a store operation off the event loop (SQLite and file I/O) and answers with its JSON."""
    try:
        return web.json_response(with_urls(await asyncio.to_thread(work, *args, **kwargs)))
    except Exception as exc:  # every failure answers with its status; the server goes on
        return _error(exc)


async def _body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SessionError("the request body must be JSON, e.g. {\"turn\": 2}") from None
    if not isinstance(body, dict):
        raise SessionError(f"the request body must be a JSON object, not {type(body).__name__}")
    return body


def _list():
    return {"sessions": routes_logic.list_sessions(sessions_store(), output_root())}


def _detail(session_id: str, query=None):
    detail = routes_logic.session_detail(sessions_store(), session_id, output_root())
    query = query or {}
    if "limit" in query or "before" in query:
        return routes_logic.detail_page(detail, query.get("before"), query.get("limit"))
    return detail


def _plan(session_id: str, turn: str):
    return routes_logic.turn_plan(sessions_store(), session_id, turn, output_root())


def _workflow(session_id: str, turn: str, kind: str):
    return routes_logic.turn_workflow(sessions_store(), session_id, turn, output_root(), kind)


def _delete(session_id: str):
    store = sessions_store()
    check_session_id(session_id)
    end_stale_turns(store, session_id)
    return routes_logic.delete_session(store, session_id)


def _move(action: str, session_id: str, body: dict):
    store = sessions_store()
    check_session_id(session_id)
    end_stale_turns(store, session_id)  # a turn whose run failed must not keep the session busy
    if action in ("undo", "redo"):
        return getattr(routes_logic, action)(store, session_id, body.get("count", 1), output_root=output_root())
    if "turn" not in body:
        raise SessionError(f"{action} needs the turn to go to: {{\"turn\": N}} (0: the original picture)")
    step = body.get("step")
    if step is not None and not isinstance(step, str):
        raise SessionError(f"step must be a step id such as \"s1\", not {step!r}")
    return getattr(routes_logic, action)(store, session_id, body["turn"], step, output_root=output_root())


def _artifact(session_id: str, artifact: str):
    return routes_logic.artifact_file(sessions_store(), session_id, artifact)


async def list_sessions(request: web.Request) -> web.Response:
    return await _answer(_list)


async def session_detail(request: web.Request) -> web.Response:
    return await _answer(_detail, request.match_info["session_id"], dict(request.query))


async def turn_plan(request: web.Request) -> web.Response:
    return await _answer(_plan, request.match_info["session_id"], request.match_info["turn"])


async def turn_workflow(request: web.Request) -> web.Response:
    kind = request.query.get("format", "ui")
    return await _answer(_workflow, request.match_info["session_id"], request.match_info["turn"], kind)


async def delete_session(request: web.Request) -> web.Response:
    return await _answer(_delete, request.match_info["session_id"])


def _mover(action: str):
    async def handler(request: web.Request) -> web.Response:
        try:
            body = await _body(request)
        except SessionError as exc:
            return _error(exc)
        return await _answer(_move, action, request.match_info["session_id"], body)

    handler.__name__ = f"session_{action}"
    return handler


async def artifact_file(request: web.Request) -> web.StreamResponse:
    try:
        path = await asyncio.to_thread(_artifact, request.match_info["session_id"], request.match_info["artifact"])
    except Exception as exc:
        return _error(exc)
    return web.FileResponse(path)


def register_routes(routes=None) -> bool:
    """Adds the routes to ``routes`` (ComfyUI's ``PromptServer.instance.routes`` when None), once.
    Must run before ComfyUI builds its app (the pack's ``on_load`` does); False without a server."""
    if routes is None:
        try:
            from server import PromptServer

            routes = PromptServer.instance.routes
        except (ImportError, AttributeError) as exc:
            log.warning("agentic_edit: no ComfyUI server to add the session routes to (%s)", exc)
            return False
    if id(routes) in _REGISTERED:
        return True
    _REGISTERED.add(id(routes))
    routes.get(ROOT)(list_sessions)
    routes.get(ROOT + "/{session_id}")(session_detail)
    for action in ("undo", "redo", "rollback", "branch"):
        routes.post(f"{ROOT}/{{session_id}}/{action}")(_mover(action))
    routes.get(ROOT + "/{session_id}/artifacts/{artifact}")(artifact_file)
    routes.delete(ROOT + "/{session_id}")(delete_session)
    routes.get(ROOT + "/{session_id}/turns/{turn}/plan")(turn_plan)
    routes.get(ROOT + "/{session_id}/turns/{turn}/workflow")(turn_workflow)
    return True

"""Session nodes for the canvas (start/load, undo, roll back, history) and the node that commits a
session turn after its trace. The store and the bookkeeping of running turns: session_host.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from comfy_api.latest import io

from ..agent.session import SessionNotFound, TurnExpired
from ..agent.session.files import check_session_id, pixel_digest, to_rgb8
from ..agent.trace import RUNS_SUBFOLDER
from ..catalogue.session import COMMIT_TURN, SESSION_HISTORY, SESSION_ROLLBACK, SESSION_START, SESSION_UNDO
from .convert import image_batch_to_arrays
from .schema import tool_schema
from .session_host import (end_stale_turns, forget_turn, image_tensor, output_root, session_fingerprint,
                           sessions_store, turn_owner)

log = logging.getLogger(__name__)


class SessionInputError(ValueError):
    """A session node input that cannot be used; the message says what to give instead."""


def picture_session_id(rgb) -> str:
    """The id of "the session of this picture": the same pixels always give the same id."""
    return f"img-{pixel_digest(to_rgb8(rgb))[:16]}"


def session_id_of(node: str, session_id) -> str:
    sid = session_id.strip() if isinstance(session_id, str) else ""
    if not sid:
        raise SessionInputError(f"{node}: session_id is empty; wire the session_id output of Start or Load Session, "
                                "or type the id of an existing session")
    return check_session_id(sid)


def head_image(store, session_id: str) -> torch.Tensor:
    return image_tensor(store.load_image(session_id, store.session(session_id).head))


def summary(store, session_id: str) -> str:
    """One line per turn (oldest first) and where the session is now."""
    state = store.state(session_id)
    lines = [f"session {session_id}: {state.info.turns} edit(s); now at {state.head.label}"]
    for number, turn in sorted(state.turns.items()):
        if number == 0:
            lines.append(f"turn 0: the original picture ({state.artifacts[turn.result].width}x"
                         f"{state.artifacts[turn.result].height})")
            continue
        base = state.checkpoint(turn.base).label if turn.base in state.artifacts else "an image given with it"
        tools = ", ".join(s.tool for s in turn.steps) or "no steps"
        here = "  <- current" if state.info.head == turn.result else ""
        lines.append(f"turn {number}: {turn.instruction!r} ({tools}) on {base}{here}")
    return "\n".join(lines)


class _SessionNode(io.ComfyNode):
    """A node that reads a session: its schema from the catalogue, and a fingerprint on the
    session's version, so ComfyUI's cache never serves a session that has moved since."""

    TOOL = None

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def fingerprint_inputs(cls, session_id="", **_):
        return session_fingerprint(session_id)


class SessionStart(_SessionNode):
    TOOL = SESSION_START

    @classmethod
    def fingerprint_inputs(cls, session_id="", **_):
        if not (session_id or "").strip():
            return os.urandom(8).hex()  # the id comes from the picture: look the session up every run
        return session_fingerprint(session_id)

    @classmethod
    def execute(cls, session_id="", image=None) -> io.NodeOutput:
        store = sessions_store()
        rgb = image_batch_to_arrays(image)[0] if image is not None else None
        if (session_id or "").strip():
            sid = check_session_id(session_id.strip())
        elif rgb is not None:
            sid = picture_session_id(rgb)
        else:
            raise SessionInputError("session_start: give an image to start a session, or the id of one to load")
        end_stale_turns(store, sid)
        try:
            store.session(sid)
        except SessionNotFound:
            if rgb is None:
                raise SessionInputError(f"session_start: there is no session {sid!r} yet; connect an image to start "
                                        "it, or use the id of an existing one") from None
            store.create_session(rgb, session_id=sid)
        return io.NodeOutput(sid, head_image(store, sid), summary(store, sid))


class SessionUndo(_SessionNode):
    TOOL = SESSION_UNDO

    @classmethod
    def execute(cls, session_id, count=1) -> io.NodeOutput:
        store = sessions_store()
        sid = session_id_of("session_undo", session_id)
        end_stale_turns(store, sid)
        checkpoint = store.undo(sid, int(count), owner=turn_owner())
        log.info("session %s: undo x%d -> %s", sid, count, checkpoint.label)
        return io.NodeOutput(sid, head_image(store, sid))


class SessionRollback(_SessionNode):
    TOOL = SESSION_ROLLBACK

    @classmethod
    def execute(cls, session_id, turn=0, step="") -> io.NodeOutput:
        store = sessions_store()
        sid = session_id_of("session_rollback", session_id)
        end_stale_turns(store, sid)
        checkpoint = store.rollback(sid, int(turn), (step or "").strip() or None, owner=turn_owner())
        log.info("session %s: rolled back to %s", sid, checkpoint.label)
        return io.NodeOutput(sid, head_image(store, sid))


class SessionHistory(_SessionNode):
    TOOL = SESSION_HISTORY

    @classmethod
    def execute(cls, session_id) -> io.NodeOutput:
        store = sessions_store()
        sid = session_id_of("session_history", session_id)
        state = store.state(sid)
        results = [turn.result for _, turn in sorted(state.turns.items())]
        text = summary(store, sid)
        if len({(state.artifacts[a].width, state.artifacts[a].height) for a in results}) == 1:
            images = torch.cat([image_tensor(store.load_image(sid, a)) for a in results])
        else:  # a turn started from another picture: one batch cannot hold them all
            images = head_image(store, sid)
            text += "\n(the turns' images differ in size: only the current image is given)"
        return io.NodeOutput(images, text)


class CommitTurn(io.ComfyNode):
    TOOL = COMMIT_TURN

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL, is_output_node=True)

    @classmethod
    def execute(cls, session_id, token, trace_path) -> io.NodeOutput:
        store = sessions_store()
        sid = session_id_of("commit_turn", session_id)
        folder = Path(trace_path).parent
        runs = (output_root() / RUNS_SUBFOLDER).resolve()
        if folder.resolve().parent != runs:
            raise SessionInputError(f"commit_turn: {trace_path!r} is not the trace of a run under {runs}")
        try:
            result = store.commit_turn(sid, token, folder)
        except TurnExpired:
            forget_turn(store, sid, token)
            raise
        except BaseException:
            store.abort_turn(sid, token)  # the session stays at its last checkpoint
            forget_turn(store, sid, token)
            raise
        forget_turn(store, sid, token)
        log.info("session %s: turn %d committed (%s, %.3f s)", sid, result.turn, folder.name, result.seconds)
        return io.NodeOutput(image_tensor(store.load_image(sid, result.result)), trace_path)


NODES = [SessionStart, SessionUndo, SessionRollback, SessionHistory, CommitTurn]

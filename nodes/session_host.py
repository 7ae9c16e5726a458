"""The session store as ComfyUI hosts it: one store under the output folder, who holds a running
turn, and turns whose run ended without a commit.

A turn is started by the Agent Edit node and committed by the Commit Turn node at the end of the
expanded run. When a step fails or the run is interrupted, ComfyUI never reaches the commit and
tells no node; the turn's lease would keep the session busy for other clients until it expired.
So every turn started here is remembered with its prompt, and the next session operation in this
process (a turn, a session node, an HTTP route) first ends the turns whose prompt is no longer
running (``end_stale_turns``). The session itself was never changed by them: a turn changes it only
when it commits. A killed ComfyUI needs none of this: its leases name a dead process, which the
store treats as ended.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import folder_paths
import numpy as np
import torch

from ..agent.session import SESSIONS_SUBFOLDER, SessionStore, shared_store
from ..agent.session.store import HOST

log = logging.getLogger(__name__)

_OPEN: dict[tuple[str, str, str], str | None] = {}  # (store root, session id, token) -> prompt id
_OPEN_LOCK = threading.Lock()


def output_root() -> Path:
    return Path(folder_paths.get_output_directory())


def sessions_store() -> SessionStore:
    """The store under ComfyUI's output folder (one per process, shared by nodes and routes)."""
    return shared_store(output_root() / SESSIONS_SUBFOLDER)


def _executing() -> tuple[str | None, str | None]:
    from comfy_execution.utils import get_executing_context

    context = get_executing_context()
    return (context.prompt_id, context.node_id) if context is not None else (None, None)


def turn_owner() -> str:
    """Who holds a turn started by the running node: this process, prompt and node. Another prompt,
    or an HTTP route (the store's default owner), gets ``SessionBusy`` while it runs."""
    prompt_id, node_id = _executing()
    owner = f"comfyui:{HOST}:{os.getpid()}"
    return f"{owner}:{prompt_id}:{node_id}" if prompt_id else owner


def remember_turn(store: SessionStore, session_id: str, token: str) -> None:
    with _OPEN_LOCK:
        _OPEN[str(store.root), session_id, token] = _executing()[0]


def forget_turn(store: SessionStore, session_id: str, token: str) -> None:
    with _OPEN_LOCK:
        _OPEN.pop((str(store.root), session_id, token), None)


def running_prompts() -> set[str] | None:
    """The ids of the prompts ComfyUI is running now (None when that cannot be known)."""
    try:
        from server import PromptServer

        running, _ = PromptServer.instance.prompt_queue.get_current_queue_volatile()
        return {item[1] for item in running}
    except (ImportError, AttributeError, IndexError, TypeError):
        return None


def end_stale_turns(store: SessionStore, session_id: str | None = None) -> int:
    """Ends the turns started in this process whose prompt is not running any more (it failed or
    was interrupted before its commit). Returns how many were ended."""
    running = running_prompts()
    if running is None:
        return 0
    root = str(store.root)
    with _OPEN_LOCK:
        stale = [key for key, prompt in _OPEN.items() if key[0] == root and prompt is not None
                 and prompt not in running and session_id in (None, key[1])]
        for key in stale:
            del _OPEN[key]
    for _, sid, token in stale:
        if store.abort_turn(sid, token):
            log.info("session %s: the run of turn %s ended without a commit (failed or interrupted); the session "
                     "stays at its last checkpoint", sid, token)
    return len(stale)


# --- session values as ComfyUI values ----------------------------------------------------------------
def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """float32 [H, W, 3] -> IMAGE [1, H, W, 3]."""
    return torch.from_numpy(np.ascontiguousarray(rgb, dtype=np.float32))[None]


def artifact_input(store: SessionStore, session_id: str, artifact: int, kind: str):
    """What a plan's ``session:<name>`` source binds to: IMAGE [1,H,W,3], MASK [1,H,W] or core
    BOUNDING_BOX (one list of boxes per image)."""
    value = store.artifact_value(session_id, artifact, kind)
    if kind == "image":
        return image_tensor(value)
    if kind == "mask":
        return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))[None]
    return value


def session_fingerprint(session_id) -> object:
    """For ``fingerprint_inputs``: changes with every commit, undo, redo and rollback of the session,
    so ComfyUI never serves a node that reads or changes it from its cache after the session moved.
    A session that does not exist yet (or a linked id, which is not known here) is left to the
    node's inputs; an id that is not valid fails in ``execute`` with the reason."""
    from ..agent.session import SessionError, SessionNotFound

    sid = session_id.strip() if isinstance(session_id, str) else ""
    if not sid:
        return None
    try:
        info = sessions_store().session(sid)
    except SessionNotFound:
        return (sid, "new", os.urandom(8).hex())  # created by this run: never the cache of an earlier one
    except SessionError:
        return (sid, "invalid")
    return (sid, info.created_at, info.version)

"""The session store: SQLite (WAL) for sessions, turns, steps and artifacts; image files beside it.

Layout of ``<root>/`` (in ComfyUI: ``<output>/agentic_edit/sessions/``)::

    sessions.sqlite3            the database (schema.py)
    <session_id>/turns/<token>/ one folder per committed turn: result.png, s1_mask.png, s2_image.png, ...
    <session_id>/pending/<token>/ the image and references given to a running turn
    <session_id>/tmp/           files being written; never referenced by the database

Every change is one ``BEGIN IMMEDIATE`` transaction; a turn's files are written and fsynced in
``tmp/`` and renamed into ``turns/`` inside that transaction (commit.py), so a crash leaves the old
state or the new one, and ``repair`` removes what an interrupted write left behind.

One turn runs per session at a time: ``start_turn`` takes a lease (a ``pending`` row) that
``commit_turn`` or ``abort_turn`` ends. Another client's ``start_turn``, undo, redo or rollback
waits up to ``wait_s`` and then gets ``SessionBusy``. A lease ends by itself after ``lease_s``, or at
once when the process that holds it (on this host) has died.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import navigation
from .errors import ArtifactNotFound, SessionBusy, SessionError
from .files import (check_session_id, fsync_dir, new_session_id, new_token, pixel_digest, remove_tree, storage_error,
                    to_rgb8, write_png)
from .reading import SessionReader, db_error
from .schema import migrate
from .state import Checkpoint, SessionInfo, SessionState

if TYPE_CHECKING:
    from .commit import CommitResult

log = logging.getLogger(__name__)
HOST = socket.gethostname()


@dataclass(frozen=True)
class Retention:
    """Disk use: turns are never deleted, but the images and plain masks of steps (not results,
    regions or references) can be. ``keep_step_files``: the newest N turns keep them (None: all);
    ``max_bytes``: older step files go, oldest first, until the session fits (None: no limit)."""

    keep_step_files: int | None = None
    max_bytes: int | None = None


@dataclass(frozen=True)
class TurnTicket:
    """A running turn: what it edits and which session artifacts its plan may reference."""

    session_id: str
    token: str
    base: Checkpoint | None          # None: the turn edits the image given to start_turn
    instruction: str
    run_id: str | None
    owner: str
    expires_at: float
    exposed: dict                    # plan name ("glass") -> artifact id


_SHARED: dict[str, "SessionStore"] = {}
_SHARED_LOCK = threading.Lock()


def shared_store(root, **options) -> "SessionStore":
    """One store per sessions folder in this process (its decoded-checkpoint cache makes the next
    commit cheaper, and the schema is checked once); ``options`` apply when it is first opened."""
    key = str(Path(root).resolve())
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = SessionStore(root, **options)
        return _SHARED[key]


def _default_owner() -> str:
    return f"{HOST}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there: leases end by time or owner instead
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def lease_live(row) -> bool:
    if row is None or row["expires_at"] <= time.time():
        return False
    return not (row["host"] == HOST and not _pid_alive(row["pid"]))


class SessionStore(SessionReader):
    def __init__(self, root, *, busy_timeout_s: float = 5.0, lease_s: float = 900.0, wait_s: float = 0.0,
                 retention: Retention | None = None):
        """``root``: the sessions folder (created). ``busy_timeout_s``: how long a write waits for the
        database; ``lease_s``: how long a started turn holds its session at most; ``wait_s``: how long
        an operation waits for another client's turn before ``SessionBusy``; ``retention``: disk use."""
        super().__init__(root, busy_timeout_s)
        self.lease_s, self.wait_s = lease_s, wait_s
        self.retention = retention or Retention()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, f"creating the sessions folder {self.root}", "no session was touched") from None
        migrate(self._connect(), self.root)

    # --- writing ------------------------------------------------------------------------------
    @contextmanager
    def _write(self, doing: str):
        """One write transaction, taken at once (BEGIN IMMEDIATE) so two writers never interleave."""
        conn = self._connect()
        if conn.in_transaction:
            raise SessionError(f"{doing}: a session write cannot run inside another one")
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise db_error(exc, doing) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise db_error(exc, doing) from None
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # --- sessions -----------------------------------------------------------------------------------
    def create_session(self, image, *, title: str = "", session_id: str | None = None) -> SessionInfo:
        """A new session whose turn 0 (the original) is ``image`` (float 0..1 or uint8 [H, W, 3], PIL, path)."""
        session_id = check_session_id(session_id) if session_id is not None else new_session_id()
        pixels = to_rgb8(image)
        folder, token = self.session_dir(session_id), new_token()
        staging = folder / "tmp" / token
        final = folder / "turns" / token
        unchanged = "no session was created"
        try:
            staging.mkdir(parents=True)
            size = write_png(staging / "result.png", pixels)
            fsync_dir(staging)
        except OSError as exc:
            remove_tree(staging)
            raise storage_error(exc, f"saving the original image of session {session_id}", unchanged) from None
        now = time.time()
        try:
            with self._write(f"creating session {session_id}") as conn:
                if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone():
                    raise SessionError(f"session {session_id!r} already exists; load it, or give another id")
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging, final)
                fsync_dir(final.parent)
                conn.execute("INSERT INTO sessions (id, title, created_at, updated_at, version, next_turn, bytes) "
                             "VALUES (?, ?, ?, ?, 1, 1, ?)", (session_id, str(title), now, now, size))
                turn_id = conn.execute("INSERT INTO turns (session_id, number, folder, created_at, visited) "
                                       "VALUES (?, 0, ?, ?, 1)", (session_id, token, now)).lastrowid
                artifact = conn.execute(
                    "INSERT INTO artifacts (session_id, turn_id, kind, role, file, width, height, digest, bytes, "
                    "created_at) VALUES (?, ?, 'image', 'original', ?, ?, ?, ?, ?, ?)",
                    (session_id, turn_id, f"turns/{token}/result.png", pixels.shape[1], pixels.shape[0],
                     pixel_digest(pixels), size, now)).lastrowid
                conn.execute("UPDATE turns SET result_artifact = ? WHERE id = ?", (artifact, turn_id))
                conn.execute("UPDATE sessions SET head_artifact = ? WHERE id = ?", (artifact, session_id))
                conn.execute("INSERT INTO events (session_id, version, action, head_after, at) "
                             "VALUES (?, 1, 'create', ?, ?)", (session_id, artifact, now))
        except OSError as exc:
            remove_tree(final)
            raise storage_error(exc, f"creating session {session_id}", unchanged) from None
        finally:
            remove_tree(staging)
        self._cache_pixels(artifact, pixels)
        log.info("session %s created (%dx%d)", session_id, pixels.shape[1], pixels.shape[0])
        return self.session(session_id)

    def delete_session(self, session_id: str, *, owner: str | None = None, wait_s: float | None = None) -> None:
        """Deletes a session, its turns and files (the only operation that deletes anything)."""
        folder = self.session_dir(session_id)
        trash = self.root / f".trash-{new_token()}"

        def delete(conn, holder):
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            if folder.exists():
                os.replace(folder, trash)

        self._exclusive(session_id, owner, wait_s, f"deleting session {session_id}", delete)
        remove_tree(trash)

    # --- leases -------------------------------------------------------------------------------------
    def _exclusive(self, session_id, owner, wait_s, doing, fn):
        """Runs ``fn(conn, holder)`` in a write transaction once no other client's turn is running on
        the session (waiting up to ``wait_s``); ``holder`` is the lease row that may be replaced."""
        owner = owner or _default_owner()
        deadline = time.monotonic() + (self.wait_s if wait_s is None else wait_s)
        while True:
            with self._write(doing) as conn:
                self._info(conn, session_id)
                holder = conn.execute("SELECT * FROM pending WHERE session_id = ?", (session_id,)).fetchone()
                if not lease_live(holder) or holder["owner"] == owner:
                    return fn(conn, holder)
                busy = dict(holder)
            if time.monotonic() >= deadline:
                started = time.time() - busy["started_at"]
                raise SessionBusy(
                    f"session {session_id} is being edited by another client ({busy['owner']}, a turn started "
                    f"{started:.0f} s ago: {busy['instruction'][:60]!r}); wait for it to finish (its lease ends "
                    f"in {busy['expires_at'] - time.time():.0f} s at the latest) and try again; nothing was changed")
            time.sleep(0.05)

    def start_turn(self, session_id: str, *, instruction: str = "", base: int | None = None, image=None,
                   references=(), run_id: str | None = None, owner: str | None = None,
                   exposed: dict | None = None, wait_s: float | None = None) -> TurnTicket:
        """Begins a turn that edits checkpoint ``base`` (an artifact id; None: the session's current
        one) or the given ``image``. ``exposed`` maps the names the plan may use as ``session:<name>``
        to artifact ids (memory's ``Route.bindings``). The turn ends with ``commit_turn`` or ``abort_turn``."""
        check_session_id(session_id)
        if base is not None and image is not None:
            raise SessionError("start_turn: give a checkpoint (base) or an image, not both")
        given = to_rgb8(image) if image is not None else None
        refs = [to_rgb8(r, f"reference {i + 1}") for i, r in enumerate(references or ())]
        owner = owner or _default_owner()
        exposed = {str(k): int(getattr(v, "artifact", v)) for k, v in (exposed or {}).items()}
        token, now = new_token(), time.time()
        staged = {"input": "input.png" if given is not None else None,
                  "references": [f"reference_{i + 1}.png" for i in range(len(refs))]}

        def begin(conn, holder):
            checkpoint = None
            if given is None:
                wanted = self._info(conn, session_id).head if base is None else base
                art = navigation.usable_checkpoint(self._artifact_in(conn, session_id, wanted), session_id, wanted)
                checkpoint = Checkpoint(art.id, art.turn, art.step if art.role == "step" else None, art.role)
            for name, artifact in exposed.items():
                if self._artifact_in(conn, session_id, artifact) is None:
                    raise ArtifactNotFound(f"exposed name {name!r}: session {session_id} has no artifact {artifact}")
            if holder is not None:
                conn.execute("DELETE FROM pending WHERE session_id = ?", (session_id,))
            conn.execute("INSERT INTO pending (session_id, token, owner, host, pid, base_artifact, instruction, "
                         "run_id, exposed, staged, started_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (session_id, token, owner, HOST, os.getpid(), checkpoint.artifact if checkpoint else None,
                          str(instruction), run_id, json.dumps(exposed), json.dumps(staged), now, now + self.lease_s))
            return checkpoint, holder

        checkpoint, replaced = self._exclusive(session_id, owner, wait_s, f"starting a turn of {session_id}", begin)
        if replaced is not None:
            log.info("session %s: turn %s replaced the ended turn %s", session_id, token, replaced["token"])
        self.repair(session_id)
        if given is not None or refs:
            folder = self.session_dir(session_id) / "pending" / token
            try:
                folder.mkdir(parents=True)
                if given is not None:
                    write_png(folder / staged["input"], given)
                for name, pixels in zip(staged["references"], refs):
                    write_png(folder / name, pixels)
                fsync_dir(folder)
            except OSError as exc:
                self.abort_turn(session_id, token)
                raise storage_error(exc, f"saving the images given to a turn of {session_id}",
                                    "the turn was not started; the session is unchanged") from None
        return TurnTicket(session_id, token, checkpoint, str(instruction), run_id, owner, now + self.lease_s, exposed)

    def abort_turn(self, session_id: str, token: str) -> bool:
        """Ends a turn without a commit (its run failed); False when it had already ended."""
        with self._write(f"ending a turn of {session_id}") as conn:
            gone = conn.execute("DELETE FROM pending WHERE session_id = ? AND token = ?",
                                (check_session_id(session_id), token)).rowcount
        remove_tree(self.session_dir(session_id) / "pending" / str(token))
        return bool(gone)

    def commit_turn(self, session_id: str, token: str, run_folder, *, faithful: bool = True) -> "CommitResult":
        """Makes a finished run folder (``agent/trace.py`` layout) the session's new checkpoint, its
        masks named as regions; see commit.py. ``faithful``: keep the base's pixels outside the
        edit masks."""
        from .commit import commit_turn

        return commit_turn(self, session_id, token, run_folder, faithful=faithful)

    # --- navigation ---------------------------------------------------------------------------------
    def _move(self, session_id, action, target_of, detail, owner, wait_s, expected_version=None) -> Checkpoint:
        def move(conn, holder):
            state = self._state(conn, session_id)
            if expected_version is not None and state.info.version != expected_version:
                raise SessionBusy(f"session {session_id} changed since the instruction was read (version "
                                  f"{expected_version} -> {state.info.version}); send it again")
            target = target_of(state)
            return self.set_head(conn, state, target, action, detail)

        return self._exclusive(check_session_id(session_id), owner, wait_s, f"{action} on {session_id}", move)

    def undo(self, session_id, count: int = 1, *, owner=None, wait_s=None) -> Checkpoint:
        return self._move(session_id, "undo", lambda s: navigation.undo_target(s, count), {"count": count},
                          owner, wait_s)

    def redo(self, session_id, count: int = 1, *, owner=None, wait_s=None) -> Checkpoint:
        return self._move(session_id, "redo", lambda s: navigation.redo_target(s, count), {"count": count},
                          owner, wait_s)

    def rollback(self, session_id, turn: int, step: str | None = None, *, owner=None, wait_s=None) -> Checkpoint:
        """The head goes to turn ``turn`` (0: the original) or one of its steps; the next edit branches there."""
        return self._move(session_id, "rollback", lambda s: navigation.turn_target(s, turn, step),
                          {"turn": turn, "step": step}, owner, wait_s)

    def checkout(self, session_id, artifact_id: int, *, action: str = "rollback", owner=None, wait_s=None,
                 expected_version: int | None = None) -> Checkpoint:
        """The head goes to any checkpoint artifact of the session (refused with ``SessionBusy`` when
        ``expected_version`` is given and the session has changed since)."""
        return self._move(session_id, action, lambda s: navigation.checkpoint_target(s, artifact_id),
                          {"artifact": artifact_id}, owner, wait_s, expected_version)

    def set_head(self, conn, state: SessionState, target: int, action: str, detail: dict) -> Checkpoint:
        """Moves the head inside an open transaction; stamps the turns left and reached (for redo)."""
        version = state.info.version + 1
        for artifact in (state.info.head, target):
            turn = state.artifacts[artifact].turn
            conn.execute("UPDATE turns SET visited = ? WHERE session_id = ? AND number = ?",
                         (version, state.info.id, turn))
        conn.execute("UPDATE sessions SET head_artifact = ?, version = ?, updated_at = ? WHERE id = ?",
                     (target, version, time.time(), state.info.id))
        conn.execute("INSERT INTO events (session_id, version, action, head_before, head_after, detail, at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)", (state.info.id, version, action, state.info.head, target,
                                                      json.dumps(detail), time.time()))
        return state.checkpoint(target)

    # --- upkeep ----------------------------------------------------------------------------------
    def set_retention(self, session_id: str, retention: Retention | None) -> None:
        """The session's own disk-use policy (None: the store's); see retention.py."""
        from .retention import set_retention

        set_retention(self, session_id, retention)

    def apply_retention(self, session_id: str, retention: Retention | None = None) -> int:
        from .retention import apply_retention

        return apply_retention(self, session_id, retention)

    def repair(self, session_id: str | None = None) -> list[Path]:
        """Removes what interrupted writes left: staging folders, turn folders no row refers to, the
        images of ended leases. Returns what was removed."""
        ids = [check_session_id(session_id)] if session_id else [s.id for s in self.list_sessions()]
        removed = []
        for sid in ids:
            folder = self.session_dir(sid)
            with self._write(f"repairing {sid}") as conn:
                kept = {r[0] for r in conn.execute("SELECT folder FROM turns WHERE session_id = ?", (sid,))}
                holder = conn.execute("SELECT * FROM pending WHERE session_id = ?", (sid,)).fetchone()
                live = holder["token"] if holder is not None and lease_live(holder) else None
                for sub, keep in (("turns", lambda n: n in kept), ("pending", lambda n: n == live),
                                  ("tmp", lambda n: live is not None and n.startswith(live))):
                    for path in sorted((folder / sub).glob("*")) if (folder / sub).is_dir() else ():
                        if not keep(path.name):
                            remove_tree(path)
                            removed.append(path)
        if removed:
            log.info("session repair removed %d leftover folder(s)", len(removed))
        return removed

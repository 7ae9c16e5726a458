"""Reading a session without changing it: its info, the whole state (for memory and the routes),
artifacts and their pixels. ``SessionStore`` adds the writes. Each thread keeps its own
connection, so one store can be shared by ComfyUI's worker thread and its server thread."""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import ArtifactNotFound, SessionBusy, SessionError, SessionNotFound, SessionStorageError
from .files import check_session_id, inside, pixel_digest, read_gray, read_rgb, to_rgb8
from .schema import DB_NAME, connect
from .state import Artifact, Checkpoint, SessionInfo, SessionState, StepInfo, TurnInfo

PIXEL_CACHE = 4  # decoded images kept: the newest checkpoints, which the next commit compares against


def _artifact(row, session_id: str) -> Artifact:
    box = json.loads(row["box"]) if row["box"] else None
    return Artifact(row["id"], session_id, row["number"], row["step"], row["kind"], row["role"], row["file"],
                    row["width"], row["height"], row["name"], row["label"], tuple(box) if box else None,
                    json.loads(row["meta"] or "{}"), row["digest"], row["bytes"])


def db_error(exc: sqlite3.Error, doing: str) -> SessionError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return SessionBusy(f"the sessions database stayed locked by another writer while {doing}; try again "
                           "(nothing was changed)")
    if "full" in text:
        return SessionStorageError(f"the disk is full while {doing}; free some space and try again (nothing was "
                                   "changed)")
    return SessionStorageError(f"the sessions database failed while {doing}: {exc} (nothing was changed)")


class SessionReader:
    """The read side of ``SessionStore``; every method checks that what it reads belongs to the
    session it was asked about."""

    def __init__(self, root, busy_timeout_s: float):
        self.root = Path(root)
        self.busy_timeout_s = busy_timeout_s
        self._pixels: dict[int, np.ndarray] = {}
        self._pixels_lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection, opened once. Keeping it open matters: when the last connection
        to a WAL database closes, SQLite checkpoints and fsyncs the whole log."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self.root / DB_NAME, self.busy_timeout_s)
            with self._pixels_lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        """Closes the store's connections (call when no operation is running)."""
        with self._pixels_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    @contextmanager
    def _read(self):
        """A consistent snapshot for several SELECTs (a read transaction), or the open transaction."""
        conn = self._connect()
        own = not conn.in_transaction
        try:
            if own:
                conn.execute("BEGIN")
            yield conn
        except sqlite3.Error as exc:
            raise db_error(exc, "reading") from None
        finally:
            if own and conn.in_transaction:
                conn.execute("COMMIT")

    def session_dir(self, session_id: str) -> Path:
        return self.root / check_session_id(session_id)

    def session(self, session_id: str) -> SessionInfo:
        with self._read() as conn:
            return self._info(conn, check_session_id(session_id))

    def version(self, session_id: str) -> int:
        """Changes with every commit, undo, redo and rollback: for ComfyUI's cache fingerprint."""
        return self.session(session_id).version

    def list_sessions(self) -> list[SessionInfo]:
        with self._read() as conn:
            ids = [r["id"] for r in conn.execute("SELECT id FROM sessions ORDER BY updated_at DESC, id")]
            return [self._info(conn, i) for i in ids]

    def _info(self, conn, session_id: str) -> SessionInfo:
        row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            known = [r[0] for r in conn.execute("SELECT id FROM sessions ORDER BY updated_at DESC LIMIT 5")]
            hint = f"; recent sessions: {', '.join(known)}" if known else "; there are no sessions yet"
            raise SessionNotFound(f"there is no session {session_id!r}{hint}")
        head = conn.execute("SELECT a.role, a.step, t.number FROM artifacts a JOIN turns t ON a.turn_id = t.id "
                            "WHERE a.id = ?", (row["head_artifact"],)).fetchone()
        return SessionInfo(row["id"], row["title"], row["created_at"], row["updated_at"], row["version"],
                           row["head_artifact"], head["number"] if head else None,
                           head["step"] if head and head["role"] == "step" else None, row["next_turn"] - 1,
                           row["bytes"], json.loads(row["settings"] or "{}"))

    # --- reading ------------------------------------------------------------------------------------
    def state(self, session_id: str) -> SessionState:
        with self._read() as conn:
            return self._state(conn, check_session_id(session_id))

    def _state(self, conn, session_id: str) -> SessionState:
        info = self._info(conn, session_id)
        steps: dict[int, list[StepInfo]] = {}
        for r in conn.execute("SELECT s.*, t.number FROM steps s JOIN turns t ON s.turn_id = t.id "
                              "WHERE t.session_id = ? ORDER BY t.number, s.position", (session_id,)):
            step = StepInfo(r["step"], r["position"], r["tool"], json.loads(r["args"]), json.loads(r["inputs"]),
                            r["text"], r["seconds"])
            steps.setdefault(r["number"], []).append(step)
        turns = {r["number"]: TurnInfo(r["number"], r["base_artifact"], r["result_artifact"], r["instruction"],
                                       r["planner"], r["run_id"], r["created_at"], r["visited"],
                                       json.loads(r["summary"] or "{}"), tuple(steps.get(r["number"], ())))
                 for r in conn.execute("SELECT * FROM turns WHERE session_id = ? ORDER BY number", (session_id,))}
        artifacts = {r["id"]: _artifact(r, session_id) for r in conn.execute(
            "SELECT a.*, t.number FROM artifacts a LEFT JOIN turns t ON a.turn_id = t.id WHERE a.session_id = ? "
            "ORDER BY a.id", (session_id,))}
        return SessionState(info, turns, artifacts)

    def artifact(self, session_id: str, artifact_id: int) -> Artifact:
        """An artifact of this session; one of another session is not found (never shown)."""
        with self._read() as conn:
            art = self._artifact_in(conn, check_session_id(session_id), artifact_id)
        if art is None:
            raise ArtifactNotFound(f"session {session_id} has no artifact {artifact_id!r}")
        return art

    def _artifact_in(self, conn, session_id: str, artifact_id) -> Artifact | None:
        if not isinstance(artifact_id, int) or isinstance(artifact_id, bool):
            return None
        row = conn.execute("SELECT a.*, t.number FROM artifacts a LEFT JOIN turns t ON a.turn_id = t.id "
                           "WHERE a.id = ? AND a.session_id = ?", (artifact_id, session_id)).fetchone()
        return None if row is None else _artifact(row, session_id)

    def artifact_path(self, session_id: str, artifact_id: int) -> Path:
        return self._file(self.artifact(session_id, artifact_id))

    def _file(self, art: Artifact) -> Path:
        if art.pruned:
            raise ArtifactNotFound(f"the file of artifact {art.id} (turn {art.turn}, {art.step or art.role}) was "
                                   "removed by the session's retention setting")
        return inside(self.session_dir(art.session_id), art.file)

    def load_image(self, session_id: str, artifact_id: int) -> np.ndarray:
        """An image artifact as float32 [H, W, 3] in 0..1."""
        return self.pixels(session_id, artifact_id).astype(np.float32) / 255.0

    def load_mask(self, session_id: str, artifact_id: int) -> np.ndarray:
        """A mask or region artifact as float32 [H, W] in 0..1."""
        art = self.artifact(session_id, artifact_id)
        if art.kind != "mask":
            raise SessionError(f"artifact {artifact_id} is {art.kind}, not a mask")
        return read_gray(self._file(art)).astype(np.float32) / 255.0

    def artifact_value(self, session_id: str, artifact_id: int, kind: str):
        """What a ``session:<name>`` reference of ``kind`` binds to: an image [H, W, 3], a mask [H, W]
        (float32 0..1) or boxes (core BOUNDING_BOX: one list per image) of a region."""
        if kind == "image":
            return self.load_image(session_id, artifact_id)
        if kind == "mask":
            return self.load_mask(session_id, artifact_id)
        if kind == "boxes":
            art = self.artifact(session_id, artifact_id)
            if art.box is None:
                raise SessionError(f"artifact {artifact_id} has no box")
            x, y, w, h = art.box
            return [[{"x": x, "y": y, "width": w, "height": h, "label": art.label or art.name or "region"}]]
        raise SessionError(f"a session artifact cannot be bound as {kind!r}; kinds: image, mask, boxes")

    def pixels(self, session_id: str, artifact_id: int) -> np.ndarray:
        """An image artifact as uint8 [H, W, 3], read-only (the newest checkpoints are kept decoded)."""
        art = self.artifact(session_id, artifact_id)
        if art.kind not in ("image", "reference"):
            raise SessionError(f"artifact {artifact_id} is a {art.kind}, not an image")
        # Artifact files never change (retention only removes them), so the id keys the cache.
        with self._pixels_lock:
            hit = self._pixels.get(artifact_id)
        if hit is not None:
            return hit
        pixels = read_rgb(self._file(art))
        self._cache_pixels(artifact_id, pixels)
        return pixels

    def _cache_pixels(self, artifact_id: int, pixels: np.ndarray) -> None:
        pixels.setflags(write=False)
        with self._pixels_lock:
            self._pixels[artifact_id] = pixels
            while len(self._pixels) > PIXEL_CACHE:
                self._pixels.pop(next(iter(self._pixels)))

    def head(self, session_id: str) -> Checkpoint:
        return self.state(session_id).head

    def find_checkpoint(self, session_id: str, image) -> Checkpoint | None:
        """The newest checkpoint with exactly these pixels (an image the user fed back), or None."""
        digest = pixel_digest(to_rgb8(image))
        state = self.state(session_id)
        found = [a for a in state.artifacts.values() if a.is_checkpoint and a.digest == digest and not a.pruned]
        return state.checkpoint(max(found, key=lambda a: a.id).id) if found else None

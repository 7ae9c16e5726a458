"""The sessions database: SQLite in WAL mode, its schema built by a chain of migrations.

A new file and a file from an older version take the same path: every migration after the file's
``user_version`` runs, in one transaction, so an interrupted upgrade leaves the old version intact.
A file from a newer version is refused (its columns would be misread).

Version 1: sessions, turns, steps, artifacts.
Version 2: leases for running turns (``pending``), the navigation log (``events``), per-artifact size,
pixel digest and retention mark, per-turn summary and visit stamp (for redo), per-session settings.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .errors import SessionSchemaError, SessionStorageError

DB_NAME = "sessions.sqlite3"

_V1 = """
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    version INTEGER NOT NULL DEFAULT 0,
    head_artifact INTEGER,
    next_turn INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    base_artifact INTEGER,
    result_artifact INTEGER,
    instruction TEXT NOT NULL DEFAULT '',
    planner TEXT NOT NULL DEFAULT '',
    plan TEXT NOT NULL DEFAULT '{}',
    run_id TEXT,
    folder TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (session_id, number)
);
CREATE INDEX turns_by_base ON turns (base_artifact);
CREATE TABLE steps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    turn_id INTEGER NOT NULL REFERENCES turns(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    step TEXT NOT NULL,
    tool TEXT NOT NULL,
    args TEXT NOT NULL DEFAULT '{}',
    inputs TEXT NOT NULL DEFAULT '{}',
    text TEXT,
    seconds REAL,
    UNIQUE (turn_id, step)
);
CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    turn_id INTEGER REFERENCES turns(id) ON DELETE CASCADE,
    step TEXT,
    kind TEXT NOT NULL,
    role TEXT NOT NULL,
    name TEXT,
    label TEXT,
    box TEXT,
    file TEXT,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX artifacts_by_turn ON artifacts (turn_id);
CREATE INDEX artifacts_by_session ON artifacts (session_id, id);
"""

_V2 = """
ALTER TABLE sessions ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
ALTER TABLE sessions ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE turns ADD COLUMN visited INTEGER NOT NULL DEFAULT 0;
ALTER TABLE turns ADD COLUMN summary TEXT NOT NULL DEFAULT '{}';
ALTER TABLE artifacts ADD COLUMN digest TEXT;
ALTER TABLE artifacts ADD COLUMN bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE artifacts ADD COLUMN pruned_at REAL;
CREATE TABLE pending (
    session_id TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    token TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    base_artifact INTEGER,
    instruction TEXT NOT NULL DEFAULT '',
    run_id TEXT,
    exposed TEXT NOT NULL DEFAULT '{}',
    staged TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    version INTEGER NOT NULL,
    action TEXT NOT NULL,
    head_before INTEGER,
    head_after INTEGER,
    detail TEXT NOT NULL DEFAULT '{}',
    at REAL NOT NULL
);
CREATE INDEX events_by_session ON events (session_id, id);
CREATE INDEX artifacts_unpruned_steps ON artifacts (session_id, turn_id) WHERE role = 'step' AND pruned_at IS NULL;
"""


def _to_v1(conn: sqlite3.Connection, root: Path) -> None:
    _script(conn, _V1)


def _to_v2(conn: sqlite3.Connection, root: Path) -> None:
    _script(conn, _V2)
    conn.execute("UPDATE turns SET visited = id")
    # Sizes of the files already there, for the retention limit.
    rows = conn.execute("SELECT a.id, a.file, a.session_id FROM artifacts a WHERE a.file IS NOT NULL").fetchall()
    for row in rows:
        path = root / row["session_id"] / row["file"]
        size = path.stat().st_size if path.is_file() else 0
        conn.execute("UPDATE artifacts SET bytes = ? WHERE id = ?", (size, row["id"]))
    conn.execute("UPDATE sessions SET bytes = (SELECT COALESCE(SUM(bytes), 0) FROM artifacts "
                 "WHERE artifacts.session_id = sessions.id)")
    from .regions import summarize  # the per-turn summary memory reads, from the stored plans

    for row in conn.execute("SELECT id, plan FROM turns").fetchall():
        summary = summarize(json.loads(row["plan"] or "{}").get("steps", []), {})
        conn.execute("UPDATE turns SET summary = ? WHERE id = ?", (json.dumps(summary), row["id"]))


MIGRATIONS = {1: _to_v1, 2: _to_v2}
LATEST = max(MIGRATIONS)


def _script(conn: sqlite3.Connection, script: str) -> None:
    # executescript would COMMIT the open transaction; run the statements one by one inside it.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are opened explicitly with BEGIN IMMEDIATE)."""
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise SessionStorageError(f"cannot open the sessions database {path}: {exc}") from None
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout = {max(0, int(busy_timeout_s * 1000))}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")  # a committed turn survives a power cut, not only a crash
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise SessionSchemaError(f"{path} is not a sessions database ({exc}); move it away and a new one is "
                                 "created") from None
    return conn


def migrate(conn: sqlite3.Connection, root: Path, upto: int = LATEST) -> int:
    """Brings the database to version ``upto``; returns the version it had."""
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found == upto == LATEST:  # the usual case: no lock taken
            return found
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.DatabaseError as exc:
        raise SessionSchemaError(f"{root / DB_NAME} is not a sessions database ({exc}); move it away and a new "
                                 "one is created") from None
    try:
        found = conn.execute("PRAGMA user_version").fetchone()[0]
        if found > LATEST:
            raise SessionSchemaError(f"{root / DB_NAME} was written by a newer version of the pack (schema "
                                     f"{found}; this version reads up to {LATEST}); update the pack")
        if found == 0 and conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]:
            raise SessionSchemaError(f"{root / DB_NAME} holds tables that are not a sessions database; move it "
                                     "away and a new one is created")
        for version in range(found + 1, upto + 1):
            MIGRATIONS[version](conn, root)
            conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if mode.lower() != "wal":  # a file system without shared memory: still correct, only less concurrent
        import logging

        logging.getLogger(__name__).warning("sessions database %s runs in %s mode, not WAL", root, mode)
    return found

"""Disk use of a session. Turns, results, regions (named masks), references and given images are
never removed: they are the session's memory and every checkpoint undo or rollback can reach. What
can go is the image and plain mask of a step of an older turn (the intermediates): their rows stay,
marked pruned, so the panel still lists the step and rollback to it says why it is not possible.

The policy is the store's ``Retention``, or the session's own (``set_retention``); it runs after
every commit and touches only files that are not pruned yet, so its cost does not grow with the
number of turns.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

from .files import check_session_id, inside, remove_tree
from .store import Retention

log = logging.getLogger(__name__)

_CANDIDATES = """
SELECT a.id, a.file, a.bytes, t.number FROM artifacts a JOIN turns t ON a.turn_id = t.id
WHERE a.session_id = ? AND a.role = 'step' AND a.name IS NULL AND a.pruned_at IS NULL AND a.file IS NOT NULL
  AND a.id != ? AND NOT EXISTS (SELECT 1 FROM turns b WHERE b.base_artifact = a.id)
ORDER BY t.number, a.id
"""


def policy(store, session_id: str, settings: dict | None = None) -> Retention:
    """The session's own policy, else the store's (``settings``: the session's, when already read)."""
    own = (store.session(session_id).settings if settings is None else settings).get("retention")
    return Retention(**own) if own else store.retention


def set_retention(store, session_id: str, retention: Retention | None) -> None:
    """The session's own policy (None: the store's)."""
    for name, value in asdict(retention or Retention()).items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"retention {name} must be a whole number of 0 or more (or None), not {value!r}")
    with store._write(f"setting the retention of {session_id}") as conn:
        info = store._info(conn, check_session_id(session_id))
        settings = dict(info.settings)
        if retention is None:
            settings.pop("retention", None)
        else:
            settings["retention"] = asdict(retention)
        conn.execute("UPDATE sessions SET settings = ? WHERE id = ?", (json.dumps(settings), session_id))


def apply_retention(store, session_id: str, retention: Retention | None = None, settings: dict | None = None) -> int:
    """Removes step files the policy does not keep; returns the bytes freed."""
    rule = retention or policy(store, session_id, settings)
    if rule.keep_step_files is None and rule.max_bytes is None:
        return 0
    folder = store.session_dir(session_id)
    doomed = []
    with store._write(f"applying the retention of {session_id}") as conn:
        session = conn.execute("SELECT head_artifact, next_turn, bytes FROM sessions WHERE id = ?",
                               (session_id,)).fetchone()
        over = session["bytes"] - rule.max_bytes if rule.max_bytes is not None else 0
        newest_dropped = session["next_turn"] - 1 - rule.keep_step_files if rule.keep_step_files is not None else -1
        for row in conn.execute(_CANDIDATES, (session_id, session["head_artifact"])).fetchall():
            if row["number"] <= newest_dropped or over > 0:
                doomed.append(row)
                over -= row["bytes"]
            else:
                break  # ordered oldest first: the rest are newer and within the limits
        freed = sum(r["bytes"] for r in doomed)
        now = time.time()
        conn.executemany("UPDATE artifacts SET file = NULL, pruned_at = ? WHERE id = ?",
                         [(now, r["id"]) for r in doomed])
        conn.execute("UPDATE sessions SET bytes = bytes - ? WHERE id = ?", (freed, session_id))
    for row in doomed:
        path = inside(folder, row["file"])
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            remove_tree(path)
    if over > 0:
        log.warning("session %s stays %d bytes over its limit: the rest are results, regions and references, which "
                    "are never removed", session_id, over)
    if doomed:
        log.info("session %s: retention removed %d step file(s), %d bytes", session_id, len(doomed), freed)
    return freed

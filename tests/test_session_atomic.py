"""Session writes are atomic and shared safely: an unfinished run, a process killed mid-commit, a full
disk or database leave the session at its last good checkpoint; two clients wait or are refused and
nothing is lost; a database from an older version is migrated, a newer or foreign one refused."""

import errno
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from agentic_edit.agent.session import (SessionBusy, SessionSchemaError, SessionStorageError, SessionStore, TurnExpired,
                                        TurnIncomplete)
from agentic_edit.agent.session import commit as commit_module
from agentic_edit.agent.session.files import read_rgb
from agentic_edit.agent.session.schema import DB_NAME, LATEST, connect, migrate
from tests.session_runs import breakfast, scene, u8
from tests.session_runs import StoreWorld as World

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


# --- atomic commits -------------------------------------------------------------------------------
@pytest.mark.parametrize("broken, message", [
    ("trace.json", "did not finish"), ("s2.json", "step s2 .* was not run"), ("result.json", "made no result"),
    ("s1_mask.png", "lists s1_mask.png, which the run folder does not have"),
])
def test_an_unfinished_run_is_refused_and_changes_nothing(world, broken, message):
    ticket = world.store.start_turn(world.sid)
    folder = world.run_folder("remove the spoon", ticket.base.artifact)
    (folder / broken).unlink()
    before, files = world.store.session(world.sid), world.files()
    with pytest.raises(TurnIncomplete, match=message):
        world.store.commit_turn(world.sid, ticket.token, folder)
    assert world.store.session(world.sid) == before and world.files() == files


def test_a_corrupt_result_image_is_refused(world):
    ticket = world.store.start_turn(world.sid)
    folder = world.run_folder("remove the spoon", ticket.base.artifact)
    (folder / "result_image.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(TurnIncomplete, match="cannot be read as an image"):
        world.store.commit_turn(world.sid, ticket.token, folder)
    assert world.store.session(world.sid).turns == 0 and not list((world.store.root / world.sid / "tmp").iterdir())


_CHILD = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from tests.pack import import_pack
import_pack()
import numpy as np
from agentic_edit.agent.session import SessionStore
from agentic_edit.agent.session import commit

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

point = {point!r}
if point == "staging":
    copy, calls = commit.copy_file, []
    def copy_then_die(source, target):
        calls.append(copy(source, target))
        if len(calls) == 2:
            die()
        return calls[-1]
    commit.copy_file = copy_then_die
elif point == "published":
    rows = commit._write_rows
    commit._write_rows = lambda r: (rows(r), die())
elif point == "committed":
    commit._cleanup = die
store = SessionStore({root!r})
ticket = store.start_turn({sid!r}, references=[np.zeros((4, 4, 3), np.float32)])
store.commit_turn({sid!r}, ticket.token, {folder!r})
"""


@pytest.mark.parametrize("point, saved", [("staging", False), ("published", False), ("committed", True)])
def test_a_process_killed_mid_commit_leaves_the_old_or_the_new_state(world, point, saved):
    world.edit("replace the cup with a glass")
    folder = world.run_folder("remove the spoon", world.store.head(world.sid).artifact, run_id="killed")
    before = world.store.session(world.sid)
    child = subprocess.run([sys.executable, "-c", _CHILD.format(repo=str(REPO), point=point, root=str(world.store.root),
                                                                sid=world.sid, folder=str(folder))],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert child.returncode == -signal.SIGKILL, child.stderr
    store = SessionStore(world.store.root)  # a fresh process's view
    after = store.session(world.sid)
    assert (after.turns, after.version) == ((2, before.version + 1) if saved else (1, before.version))
    store.repair(world.sid)
    kept = {p.name for p in (store.root / world.sid / "turns").iterdir()}
    assert len(kept) == after.turns + 1  # one folder per turn, the orphan (if any) removed
    assert not list((store.root / world.sid / "pending").glob("*"))
    assert not list((store.root / world.sid / "tmp").glob("*"))
    # The dead process's lease does not block the session.
    assert store.start_turn(world.sid, wait_s=0)
    if saved:
        assert np.array_equal(store.pixels(world.sid, after.head), read_rgb(folder / "result_image.png"))


def test_a_full_disk_while_saving_files_changes_nothing(world, monkeypatch):
    world.edit("replace the cup with a glass")
    ticket = world.store.start_turn(world.sid)
    folder = world.run_folder("remove the spoon", ticket.base.artifact)
    before, files = world.store.session(world.sid), world.files()
    real = commit_module.copy_file

    def full(source, target):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(commit_module, "copy_file", full)
    with pytest.raises(SessionStorageError, match="the disk is full .* the session is unchanged"):
        world.store.commit_turn(world.sid, ticket.token, folder)
    assert world.store.session(world.sid) == before and world.files() == files
    monkeypatch.setattr(commit_module, "copy_file", real)  # space freed: the same turn commits
    assert world.store.commit_turn(world.sid, ticket.token, folder).turn == 2


def test_a_full_disk_while_starting_a_turn_starts_nothing(world, monkeypatch):
    from agentic_edit.agent.session import store as store_module

    def full(path, pixels):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store_module, "write_png", full)
    with pytest.raises(SessionStorageError, match="disk is full while saving the images given to a turn"):
        world.store.start_turn(world.sid, image=scene(seed=4), owner="alice")
    assert world.store.start_turn(world.sid, owner="bob", wait_s=0).owner == "bob"  # no lease was left behind
    assert not list((world.store.root / world.sid / "pending").glob("*"))


def test_a_full_database_rolls_the_turn_back(world, monkeypatch):
    world.edit("replace the cup with a glass")
    ticket = world.store.start_turn(world.sid)
    folder = world.run_folder("remove the spoon", ticket.base.artifact)
    header = json.loads((folder / "plan.json").read_text())
    header["plan"]["notes"] = "a planner that talks a lot " * 20000  # the turn row needs new pages
    (folder / "plan.json").write_text(json.dumps(header))
    before, files = world.store.session(world.sid), world.files()
    conn = world.store._connect()
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow: SQLITE_FULL
    with pytest.raises(SessionStorageError, match="the disk is full while saving a turn"):
        world.store.commit_turn(world.sid, ticket.token, folder)
    conn.execute("PRAGMA max_page_count = 1073741823")
    assert world.store.session(world.sid) == before and world.files() == files
    assert world.store.commit_turn(world.sid, ticket.token, folder).turn == 2


# --- two clients --------------------------------------------------------------------------------
def test_a_second_client_waits_or_is_refused_and_nothing_is_lost(world):
    store, sid = world.store, world.sid
    alice = store.start_turn(sid, owner="alice", instruction="remove the spoon")
    with pytest.raises(SessionBusy, match="being edited by another client \\(alice.*'remove the spoon'"):
        store.start_turn(sid, owner="bob", wait_s=0.2)
    with pytest.raises(SessionBusy):
        store.undo(sid, owner="bob")
    folder = world.run_folder("remove the spoon", alice.base.artifact)
    got = {}

    def bob():
        got["ticket"] = store.start_turn(sid, owner="bob", wait_s=10)

    waiting = threading.Thread(target=bob)
    waiting.start()
    time.sleep(0.3)
    assert "ticket" not in got  # still waiting for alice
    alice_turn = store.commit_turn(sid, alice.token, folder)
    waiting.join(10)
    assert got["ticket"].base.artifact == alice_turn.result  # bob edits alice's result
    bob_folder = world.run_folder("make the cup red", got["ticket"].base.artifact)
    assert store.commit_turn(sid, got["ticket"].token, bob_folder).turn == 2
    assert [t.instruction for t in store.state(sid).turns.values()][1:] == ["remove the spoon", "make the cup red"]


def test_the_same_client_takes_over_its_own_unfinished_turn(world):
    first = world.store.start_turn(world.sid, owner="node")
    folder = world.run_folder("remove the spoon", first.base.artifact)
    second = world.store.start_turn(world.sid, owner="node")  # the first run failed; the user queued again
    with pytest.raises(TurnExpired, match="is not running any more .* run folder .* is kept"):
        world.store.commit_turn(world.sid, first.token, folder)
    assert world.store.commit_turn(world.sid, second.token, folder).turn == 1


def test_an_aborted_or_expired_lease_frees_the_session(tmp_path):
    world = World(tmp_path, lease_s=0.2)
    ticket = world.store.start_turn(world.sid, owner="alice")
    time.sleep(0.3)
    assert world.store.start_turn(world.sid, owner="bob").owner == "bob"
    assert world.store.abort_turn(world.sid, world.store.start_turn(world.sid, owner="bob").token)
    assert world.store.start_turn(world.sid, owner="carol", wait_s=0).owner == "carol"
    with pytest.raises(TurnExpired):
        world.store.commit_turn(world.sid, ticket.token, world.run_folder("remove the spoon", ticket.base.artifact))


def test_a_locked_database_gives_session_busy_after_the_timeout(tmp_path):
    world = World(tmp_path, busy_timeout_s=0.2)
    ticket = world.store.start_turn(world.sid)
    folder = world.run_folder("remove the spoon", ticket.base.artifact)
    other = sqlite3.connect(world.store.root / DB_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(SessionBusy, match="stayed locked by another writer.*nothing was changed"):
            world.store.commit_turn(world.sid, ticket.token, folder)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert world.store.session(world.sid).turns == 0
    assert world.store.commit_turn(world.sid, ticket.token, folder).turn == 1


# --- database versions -------------------------------------------------------------------------
def test_a_database_from_the_first_version_is_migrated(tmp_path):
    root = tmp_path / "sessions"
    (root / "old" / "turns" / "t0").mkdir(parents=True)
    from PIL import Image

    Image.fromarray(u8(breakfast())).save(root / "old" / "turns" / "t0" / "result.png")
    conn = connect(root / DB_NAME, 1.0)
    migrate(conn, root, upto=1)
    conn.execute("INSERT INTO sessions (id, title, created_at, updated_at, version, head_artifact, next_turn) "
                 "VALUES ('old', 'from v1', 1, 1, 1, 1, 1)")
    conn.execute("INSERT INTO turns (session_id, number, result_artifact, folder, created_at) "
                 "VALUES ('old', 0, 1, 't0', 1)")
    conn.execute("INSERT INTO artifacts (session_id, turn_id, kind, role, file, width, height, created_at) "
                 "VALUES ('old', 1, 'image', 'original', 'turns/t0/result.png', 96, 64, 1)")
    conn.close()
    store = SessionStore(root)
    assert store._connect().execute("PRAGMA user_version").fetchone()[0] == LATEST
    info = store.session("old")
    assert info.title == "from v1" and info.bytes == (root / "old" / "turns" / "t0" / "result.png").stat().st_size
    assert World(tmp_path, store=store, session_id="old").edit("remove the spoon").turn == 1


def test_a_newer_or_foreign_database_is_refused(tmp_path):
    newer = tmp_path / "newer"
    newer.mkdir()
    sqlite3.connect(newer / DB_NAME).execute(f"PRAGMA user_version = {LATEST + 5}")
    with pytest.raises(SessionSchemaError, match="newer version of the pack"):
        SessionStore(newer)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SessionSchemaError, match="is not a sessions database"):
        SessionStore(foreign)

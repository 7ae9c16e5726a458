"""The session store: turns committed from real run folders, faithful chains, undo/redo/rollback and
branches, isolation between sessions, retention, and the functions behind the HTTP routes.
(Atomicity, concurrency and database versions: test_session_atomic.py.)"""

import json

import numpy as np
import pytest

from agentic_edit.agent.session import (ArtifactNotFound, InvalidSessionId, NothingToRedo, NothingToUndo, Retention,
                                        SessionBusy, SessionError, SessionNotFound, SessionStorageError, TurnNotFound,
                                        routes_logic, shared_store)
from tests.session_runs import StoreWorld as World
from tests.session_runs import BREAKFAST as OBJECTS
from tests.session_runs import plain_run, scene, u8


@pytest.fixture
def world(tmp_path):
    return World(tmp_path)


# --- sessions and turns --------------------------------------------------------------------------
def test_a_new_session_holds_the_original_as_turn_0(world):
    info = world.store.session(world.sid)
    assert (info.title, info.turns, info.version, info.head_turn) == ("breakfast", 0, 1, 0)
    assert np.array_equal(world.head_pixels(), u8(world.original))
    assert [s.id for s in world.store.list_sessions()] == [world.sid]
    with pytest.raises(SessionError, match="already exists"):
        world.store.create_session(world.original, session_id=world.sid)


def test_a_commit_stores_the_run_and_names_its_regions(world):
    result = world.edit("replace the cup with a glass")
    assert (result.turn, result.version, result.bounded) == (1, 2, True)
    state = world.store.state(world.sid)
    turn = state.turns[1]
    assert turn.instruction == "replace the cup with a glass" and turn.base == state.original()
    assert [(s.step, s.tool) for s in turn.steps] == [("s1", "segment_by_text"), ("s2", "inpaint")]
    region = state.artifacts[result.regions["glass"]]
    assert (region.kind, region.name, region.label, region.box) == ("mask", "glass", "glass", (10, 10, 20, 15))
    assert region.meta["was"] == ["cup"] and region.meta["state"] == "replaced"
    mask = world.store.load_mask(world.sid, region.id)
    assert mask.shape == (64, 96) and mask[10:25, 10:30].min() == 1.0 and mask.sum() == 20 * 15
    assert state.head.turn == 1 and world.store.head(world.sid).artifact == result.result
    step_image = next(a for a in state.turn_artifacts(1) if a.role == "step" and a.kind == "image")
    assert np.array_equal(world.store.pixels(world.sid, step_image.id), world.head_pixels())


def test_turns_are_not_capped_and_never_renumbered(world):
    for n in range(1, 31):
        assert world.edit(f"make the cup {['red', 'blue', 'green'][n % 3]}").turn == n
    state = world.store.state(world.sid)
    assert sorted(state.turns) == list(range(31)) and state.info.turns == 30
    assert world.store.undo(world.sid, 30).role == "original"
    assert sorted(world.store.state(world.sid).turns) == list(range(31))


def test_the_version_changes_with_every_change_and_only_then(world):
    versions = [world.store.version(world.sid)]
    world.edit("remove the spoon")
    versions.append(world.store.version(world.sid))
    world.store.state(world.sid), world.store.list_sessions(), world.store.head(world.sid)
    versions.append(world.store.version(world.sid))
    world.store.undo(world.sid)
    versions.append(world.store.version(world.sid))
    world.store.redo(world.sid)
    versions.append(world.store.version(world.sid))
    world.store.rollback(world.sid, 0)
    versions.append(world.store.version(world.sid))
    assert versions == [1, 2, 2, 3, 4, 5]


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "..", ".hidden", "a" * 65, "a b", "x\x00", "séance", "ok\n",
                                 None, 7])
def test_session_ids_cannot_escape_the_sessions_folder(world, bad):
    with pytest.raises(InvalidSessionId, match="not valid"):
        world.store.session(bad)
    if bad is not None:  # None asks for a new id
        with pytest.raises(InvalidSessionId):
            world.store.create_session(world.original, session_id=bad)
    assert not (world.store.root.parent / "etc").exists()


def test_deleting_a_session_removes_its_rows_and_files_only(world):
    other = world.store.create_session(scene(seed=2)).id
    world.edit("remove the spoon")
    world.store.start_turn(other, owner="alice")
    with pytest.raises(SessionBusy):
        world.store.delete_session(other, owner="bob")
    world.store.delete_session(world.sid)
    assert [s.id for s in world.store.list_sessions()] == [other]
    assert not (world.store.root / world.sid).exists() and (world.store.root / other).is_dir()
    with pytest.raises(SessionNotFound):
        world.store.state(world.sid)
    assert not world.store._connect().execute("SELECT count(*) FROM artifacts WHERE session_id = ?",
                                              (world.sid,)).fetchone()[0]


def test_one_shared_store_per_folder(tmp_path):
    assert shared_store(tmp_path / "a") is shared_store(tmp_path / "a" / ".." / "a")
    assert shared_store(tmp_path / "a") is not shared_store(tmp_path / "b")


def test_unknown_sessions_and_artifacts_are_clear_errors(world):
    with pytest.raises(SessionNotFound, match=f"no session 'nope'; recent sessions: {world.sid}"):
        world.store.start_turn("nope")
    with pytest.raises(ArtifactNotFound, match="has no artifact 999"):
        world.store.load_image(world.sid, 999)


# --- faithful chains --------------------------------------------------------------------------------
def test_pixels_outside_every_edit_mask_stay_bit_identical_over_many_turns(tmp_path):
    world = World(tmp_path, drift=True)  # every inpaint/recolor also nudges the whole image by one level
    texts = ["replace the cup with a glass", "make the spoon blue", "remove the saucer", "make the plate green",
             "replace the spoon with a fork", "make the cup yellow", "remove the plate", "make the saucer red",
             "make the glass blue", "make the fork green"]
    assert len(texts) >= 10  # the bar: bit-identical outside every mask over 10 chained turns
    reverted = [world.edit(text).reverted_pixels for text in texts]
    assert all(r > 3000 for r in reverted)  # the drift was there, and the commit took it out
    edited = np.zeros((64, 96), bool)
    for x, y, w, h in OBJECTS.values():
        edited[y:y + h, x:x + w] = True
    head = world.head_pixels()
    assert np.array_equal(head[~edited], u8(world.original)[~edited])
    assert not np.array_equal(head[edited], u8(world.original)[edited])
    # The result on disk is the composite, and its digest identifies it.
    assert world.store.find_checkpoint(world.sid, head).turn == len(texts)


def test_text_drawn_in_a_found_box_is_bounded_by_its_coverage_and_is_not_a_region(world):
    result = world.edit("write 'HOT' on the cup")
    assert result.bounded and result.regions == {}
    changed = np.any(world.head_pixels() != u8(world.original), axis=2)
    assert changed[10:25, 10:30].any() and not changed[:10].any() and not changed[25:].any()


def test_a_step_without_a_mask_leaves_the_result_as_the_tool_made_it(world):
    result = world.edit("draw boxes around the cup")
    assert result.bounded is False and result.reverted_pixels == 0
    head = world.head_pixels()
    assert tuple(head[10, 15]) == (255, 0, 0)  # the box outline, outside any mask


# --- undo, redo, rollback, branches -----------------------------------------------------------------
def test_undo_redo_and_rollback_move_the_head_and_delete_nothing(world):
    results = [world.edit(t).result for t in ("remove the spoon", "make the cup red", "remove the plate")]
    store, sid = world.store, world.sid
    assert store.undo(world.sid).artifact == results[1]
    assert store.undo(sid, 2).role == "original"
    with pytest.raises(NothingToUndo, match="nothing to undo: session .* is at the original image"):
        store.undo(sid)
    assert store.redo(sid, 2).artifact == results[1]
    with pytest.raises(NothingToUndo, match="only 2 edit\\(s\\) can be undone from turn 2, not 3; nothing was changed"):
        store.undo(sid, 3)
    assert store.head(sid).artifact == results[1]
    assert store.redo(sid).artifact == results[2]
    with pytest.raises(NothingToRedo, match="nothing to redo"):
        store.redo(sid)
    assert store.rollback(sid, 1).artifact == results[0]
    assert store.rollback(sid, 0).role == "original"
    assert sorted(store.state(sid).turns) == [0, 1, 2, 3]


def test_rollback_to_a_step_and_bad_rollbacks(world):
    world.edit("remove the spoon, then make the cup red")
    store, sid = world.store, world.sid
    checkpoint = store.rollback(sid, 1, "s2")
    assert (checkpoint.turn, checkpoint.step, checkpoint.label) == (1, "s2", "turn 1, step s2")
    after_removal = u8(store.load_image(sid, checkpoint.artifact))
    assert after_removal[33, 60].tolist() != u8(world.original)[33, 60].tolist()  # the spoon is gone
    assert after_removal[15, 15].tolist() == u8(world.original)[15, 15].tolist()  # the cup is not red yet
    with pytest.raises(TurnNotFound, match="has turns 0 \\(the original\\) to 1; there is no turn 5"):
        store.rollback(sid, 5)
    with pytest.raises(TurnNotFound, match="no image from step 's1'; its steps are: s1 \\(segment_by_text\\)"):
        store.rollback(sid, 1, "s1")
    with pytest.raises(TurnNotFound, match="no turn -1"):
        store.rollback(sid, -1)
    assert store.head(sid).artifact == checkpoint.artifact  # failed rollbacks changed nothing
    # Undo from a step's image goes to the checkpoint the turn edited.
    assert store.undo(sid).role == "original"


def test_editing_an_older_checkpoint_starts_a_branch_and_redo_follows_the_newest(world):
    first = world.edit("replace the cup with a glass")
    second = world.edit("make the spoon blue")
    world.store.rollback(world.sid, 1)
    branch = world.edit("remove the plate")
    state = world.store.state(world.sid)
    assert state.turns[branch.turn].base == first.result and state.turns[second.turn].base == first.result
    assert [t.number for t in state.children(first.result)] == [3, 2]
    world.store.undo(world.sid)
    assert world.store.redo(world.sid).artifact == branch.result  # the branch visited last
    world.store.rollback(world.sid, 2)
    world.store.undo(world.sid)
    assert world.store.redo(world.sid).artifact == second.result  # now turn 2 was visited last


def test_a_turn_can_start_from_a_given_image_with_references(world):
    other = scene(seed=5)
    ticket = world.store.start_turn(world.sid, image=other, references=[np.full((8, 8, 3), 0.5, np.float32)])
    assert ticket.base is None
    folder = world.runner.run(world.planner.plan("remove the spoon"), other, world.tmp / "output", "given")
    result = world.store.commit_turn(world.sid, ticket.token, folder)
    state = world.store.state(world.sid)
    base = state.artifacts[state.turns[result.turn].base]
    assert base.role == "input" and np.array_equal(world.store.pixels(world.sid, base.id), u8(other))
    reference = next(a for a in state.turn_artifacts(result.turn) if a.kind == "reference")
    assert reference.name == "ref_t1" and world.store.load_image(world.sid, reference.id).shape == (8, 8, 3)
    assert world.store.undo(world.sid).artifact == base.id
    with pytest.raises(NothingToUndo):
        world.store.undo(world.sid)  # a given image starts its own history
    assert world.store.find_checkpoint(world.sid, other).artifact == base.id


# --- isolation and retention --------------------------------------------------------------------
def test_two_sessions_never_see_each_others_artifacts(world):
    mine = world.edit("replace the cup with a glass")
    theirs = world.store.create_session(scene(seed=3)).id
    with pytest.raises(ArtifactNotFound):
        world.store.load_mask(theirs, mine.regions["glass"])
    with pytest.raises(ArtifactNotFound):
        world.store.artifact_path(theirs, mine.result)
    with pytest.raises(ArtifactNotFound, match="exposed name 'glass'"):
        world.store.start_turn(theirs, exposed={"glass": mine.regions["glass"]})
    with pytest.raises(ArtifactNotFound):
        world.store.checkout(theirs, mine.result)
    assert world.store.state(theirs).artifacts.keys().isdisjoint(world.store.state(world.sid).artifacts)


def test_retention_removes_old_step_files_but_keeps_checkpoints_and_regions(world):
    for text in ("remove the spoon", "make the cup red", "remove the plate", "make the saucer blue"):
        world.edit(text)
    before = world.store.session(world.sid).bytes
    freed = world.store.apply_retention(world.sid, Retention(keep_step_files=2))
    state = world.store.state(world.sid)
    pruned = [a for a in state.artifacts.values() if a.pruned]
    assert freed > 0 and world.store.session(world.sid).bytes == before - freed
    assert {(a.turn, a.kind) for a in pruned} == {(1, "image"), (2, "image")}  # regions (named masks) stay
    assert all(not a.pruned for a in state.artifacts.values() if a.role in ("result", "original") or a.name)
    folders = {n: world.store.artifact_path(world.sid, state.turns[n].result).parent for n in (1, 2, 3)}
    assert not (folders[1] / "s2_image.png").exists() and not (folders[2] / "s2_image.png").exists()
    assert (folders[3] / "s2_image.png").exists() and (folders[1] / "s1_mask.png").exists()
    with pytest.raises(TurnNotFound, match="removed by the session's retention setting"):
        world.store.rollback(world.sid, 1, "s2")
    assert world.store.rollback(world.sid, 1).turn == 1
    world.store.set_retention(world.sid, Retention(max_bytes=0))
    world.edit("remove the cup")  # applied after every commit
    state = world.store.state(world.sid)
    assert all(a.pruned for a in state.artifacts.values() if a.role == "step" and not a.name and a.turn < 5)
    with pytest.raises(ValueError, match="whole number"):
        world.store.set_retention(world.sid, Retention(keep_step_files=-1))


# --- the functions behind the HTTP routes ---------------------------------------------------------
def test_routes_logic_lists_sessions_and_turns_with_their_files(world):
    world.edit("replace the cup with a glass")
    world.edit("make the spoon blue")
    world.store.rollback(world.sid, 1)
    listing = routes_logic.list_sessions(world.store, output_root=world.tmp)
    assert listing[0]["id"] == world.sid and listing[0]["turns"] == 2
    assert listing[0]["head"]["file"]["subfolder"].startswith(f"sessions/{world.sid}/turns/")
    detail = routes_logic.session_detail(world.store, world.sid, output_root=world.tmp)
    assert json.loads(json.dumps(detail)) == detail  # what the route sends as it is
    assert detail["can_undo"] and detail["can_redo"] and detail["head"]["turn"] == 1
    turn1 = detail["turns"][1]
    assert turn1["is_head"] and turn1["children"] == [2] and turn1["base"]["label"] == "the original image"
    assert [s["tool"] for s in turn1["steps"]] == ["segment_by_text", "inpaint"]
    assert turn1["steps"][0]["files"]["mask"]["filename"] == "s1_mask.png"
    assert turn1["regions"][0]["name"] == "glass" and turn1["regions"][0]["was"] == ["cup"]
    assert not detail["turns"][2]["on_head_path"]
    view = turn1["steps"][1]["files"]["image"]
    assert (world.tmp / view["subfolder"] / view["filename"]).is_file()
    assert routes_logic.artifact_file(world.store, world.sid, str(turn1["result"]["artifact"])).is_file()


def test_routes_logic_navigation_and_errors(world):
    world.edit("remove the spoon")
    world.edit("make the cup red")
    assert routes_logic.undo(world.store, world.sid, "2")["head"]["label"] == "the original image"
    assert routes_logic.redo(world.store, world.sid)["head"]["turn"] == 1
    moved = routes_logic.branch(world.store, world.sid, 0)
    assert moved["action"] == "branch" and "new branch from the original image" in moved["note"]
    assert routes_logic.rollback(world.store, world.sid, 2)["head"]["turn"] == 2
    for call, status in ((lambda: routes_logic.rollback(world.store, world.sid, 9), 404),
                         (lambda: routes_logic.undo(world.store, world.sid, "two"), 400),
                         (lambda: routes_logic.session_detail(world.store, "../x"), 400),
                         (lambda: routes_logic.session_detail(world.store, "nope"), 404),
                         (lambda: routes_logic.redo(world.store, world.sid), 409)):
        with pytest.raises(SessionError) as info:
            call()
        assert routes_logic.http_status(info.value) == status
    assert routes_logic.http_status(SessionStorageError("x")) == 507 and routes_logic.http_status(KeyError()) == 500


def test_plain_run_folders_from_other_planners_commit_too(world):
    """A plan an LLM wrote: ground + segment (boxes in), a mask refined, a prompt written by a model."""
    base = u8(world.original).astype(np.float32) / 255
    mask = np.zeros((64, 96), np.float32)
    mask[10:25, 10:30] = 1
    edited = base.copy()
    edited[10:25, 10:30] = 0.2
    steps = [{"id": "find", "tool": "ground", "args": {"query": "the coffee cup"}, "inputs": {"image": "image"}},
             {"id": "seg", "tool": "segment", "args": {}, "inputs": {"image": "image", "boxes": "find.boxes"}},
             {"id": "grow", "tool": "refine_mask", "args": {"grow": 2}, "inputs": {"mask": "seg.mask"}},
             {"id": "say", "tool": "write_prompts", "args": {"instruction": "x"},
              "inputs": {"image": "image", "mask": "grow.mask"}},
             {"id": "paint", "tool": "inpaint", "args": {},
              "inputs": {"image": "image", "mask": "grow.mask", "prompt": "say.positive"}}]
    folder = plain_run(world.tmp / "llm_run", "swap the coffee cup for a teapot", steps, {"paint": edited}, edited,
                       masks={"seg": mask, "grow": mask}, output="paint.image")
    ticket = world.store.start_turn(world.sid, instruction="swap the coffee cup for a teapot")
    result = world.store.commit_turn(world.sid, ticket.token, folder)
    region = world.store.artifact(world.sid, result.regions["teapot"])
    assert region.step == "seg" and region.meta["was"] == ["coffee_cup"] and region.box == (10, 10, 20, 15)

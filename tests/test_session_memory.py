"""Session memory and routing: the words decide which checkpoint a turn edits ("undo the last two",
"go back to turn 1", "before the glass"), "it" / "the glass" resolve to remembered regions, the
offline planner uses them, and a six-turn dialogue edits the right checkpoint and region each turn."""

import json

import numpy as np
import pytest

from agentic_edit.agent.plan import PlanError, validate
from agentic_edit.agent.planners import PlannerDeclined
from agentic_edit.agent.planners.offline import OfflinePlanner
from agentic_edit.agent.session import (NothingToUndo, SessionStore, TurnNotFound, history_text, parse_navigation,
                                        resolve_region, route, route_turn)
from tests.agent_tools import sample_catalogue
from tests.session_runs import Dialogue, FakeRunner, scene

TOOLS = sample_catalogue(future=True)
PLANNER = OfflinePlanner(TOOLS)
OBJECTS = {"cup": (10, 10, 20, 15), "spoon": (50, 30, 20, 6), "hat": (60, 2, 24, 10)}


def picture():
    image = scene()
    for (x, y, w, h), shade in zip(OBJECTS.values(), (0.9, 0.35, 0.6)):
        image[y:y + h, x:x + w] = shade
    return image


@pytest.fixture
def talk(tmp_path):
    store = SessionStore(tmp_path / "sessions")
    sid = store.create_session(picture()).id
    return Dialogue(store, sid, PLANNER, FakeRunner(OBJECTS, scene(), drift=True), tmp_path / "output")


def u8(image):
    return np.rint(np.asarray(image) * 255).astype(np.uint8)


# --- reading navigation -------------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, count, turn, step, rest", [
    ("undo", "undo", 1, None, None, ""),
    ("Undo that.", "undo", 1, None, None, ""),
    ("please undo the last edit", "undo", 1, None, None, ""),
    ("undo the last two", "undo", 2, None, None, ""),
    ("undo the last 3 changes", "undo", 3, None, None, ""),
    ("undo twice", "undo", 2, None, None, ""),
    ("go back two steps", "undo", 2, None, None, ""),
    ("go back", "undo", 1, None, None, ""),
    ("undo and make it blue", "undo", 1, None, None, "make it blue"),
    ("undo the last two, then remove the spoon", "undo", 2, None, None, "remove the spoon"),
    ("redo", "redo", 1, None, None, ""),
    ("redo twice", "redo", 2, None, None, ""),
    ("go back to the original", "original", 1, 0, None, ""),
    ("Start over", "original", 1, 0, None, ""),
    ("revert to the original image and remove the spoon", "original", 1, 0, None, "remove the spoon"),
    ("on the original photo, replace the hat with a crown", "original", 1, 0, None, "replace the hat with a crown"),
    ("go back to turn 1", "turn", 1, 1, None, ""),
    ("ok, go back to turn 3 and write \"HI\" at the top", "turn", 1, 3, None, "write \"HI\" at the top"),
    ("back to the second edit", "turn", 1, 2, None, ""),
    ("roll back to step s2 of turn 4", "turn", 1, 4, "s2", ""),
    ("go back to turn 2, step s1", "turn", 1, 2, "s1", ""),
    ("use the result of turn 12", "turn", 1, 12, None, ""),
])
def test_navigation_is_read_from_the_words(text, kind, count, turn, step, rest):
    nav = parse_navigation(text)
    assert (nav.kind, nav.count, nav.turn, nav.step, nav.rest) == (kind, count, turn, step, rest)


@pytest.mark.parametrize("text, phrase, turn", [
    ("go back to before the glass", "the glass", None),
    ("go back to before I removed the spoon", "I removed the spoon", None),
    ("return to the image before turn 3", "turn 3", 3),
])
def test_before_reads_the_rest_of_the_sentence(text, phrase, turn):
    nav = parse_navigation(text)
    assert (nav.kind, nav.phrase, nav.turn) == ("before", phrase, turn)


@pytest.mark.parametrize("text", ["remove the cup", "make the hat red", "use the first reference for the cup",
                                  "revert the cup's colour to white", "reset the hat to its old colour",
                                  "replace the original painting with a poster", "undo the knot in the tie",
                                  "make the turn signal orange", "write \"undo\" at the top"])
def test_edits_are_not_read_as_navigation(text):
    assert parse_navigation(text) is None


# --- the dialogue of issue 6 --------------------------------------------------------------------------
def test_a_six_turn_dialogue_edits_the_right_checkpoint_and_region_each_time(talk):
    store, sid = talk.store, talk.session_id
    original = store.state(sid).original()

    glass = talk.say("replace the cup with a glass")
    assert glass["route"].base.artifact == original
    assert glass["plan"].tool_names == ["segment_by_text", "inpaint"]
    glass_mask = glass["commit"].regions["glass"]

    red = talk.say("make it red")  # "it" is the glass made in turn 1: its stored mask, no new segmentation
    assert red["route"].base.artifact == glass["commit"].result
    assert red["plan"].tool_names == ["recolor"]
    assert red["plan"].step("s1").inputs["mask"] == "session:glass"
    assert red["route"].bindings["glass"].artifact == glass_mask
    head = u8(store.load_image(sid, red["commit"].result))
    assert head[12, 12].tolist() == u8([[0.85, 0.1, 0.1]])[0].tolist()

    undo = talk.say("undo")
    assert undo["moved"]["head"]["artifact"] == glass["commit"].result

    spoon = talk.say("remove the spoon")  # edits turn 1's result: a branch beside "make it red"
    assert spoon["route"].base.artifact == glass["commit"].result
    assert spoon["commit"].turn == 3 and store.state(sid).turns[3].base == glass["commit"].result

    back = talk.say("go back to turn 1")
    assert back["moved"]["head"]["turn"] == 1

    caption = talk.say('write the caption "Breakfast"')
    assert caption["route"].base.artifact == glass["commit"].result
    assert caption["plan"].tool_names == ["place_region", "draw_text"]

    final = u8(store.load_image(sid, caption["commit"].result))
    turn1 = u8(store.load_image(sid, glass["commit"].result))
    start = u8(picture())
    cup, spoon_box = np.zeros((64, 96), bool), np.zeros((64, 96), bool)
    cup[10:25, 10:30], spoon_box[30:36, 50:70] = True, True
    caption_rows = np.zeros((64, 96), bool)
    caption_rows[51:64:2] = True
    assert np.array_equal(final[~(cup | caption_rows)], start[~(cup | caption_rows)])  # faithful despite the drift
    assert np.array_equal(final[cup], turn1[cup]) and not np.array_equal(final[cup], start[cup])  # the glass, not red
    assert np.array_equal(final[spoon_box], start[spoon_box])  # the spoon is back: turn 3 is another branch
    state = store.state(sid)
    assert {n: state.turns[n].base for n in (1, 2, 3, 4)} == {1: original, 2: glass["commit"].result,
                                                              3: glass["commit"].result, 4: glass["commit"].result}


def test_memory_follows_the_branch(talk):
    talk.say("replace the cup with a glass")
    talk.say("make it red")
    history = route_turn(talk.store, talk.session_id, "make it blue").history
    assert json.loads(json.dumps(history)) == history  # an LLM planner can be sent it as it is
    glass = history["regions"][0]
    assert (glass["name"], glass["state"], glass["value"], glass["was"]) == ("glass", "recolored", "red", ["cup"])
    assert glass["box"] == [10, 10, 20, 15] and history["last_region"] == "glass"
    assert history["artifacts"] == {"glass": "mask", "glass_box": "boxes", "original": "image"}
    assert [t["instruction"] for t in history["turns"]] == ["make it red", "replace the cup with a glass"]
    assert history["checkpoint"]["label"] == "turn 2"
    assert resolve_region(history, "the red glass") == "glass"
    # After undo the glass is not red on this branch.
    undone = route_turn(talk.store, talk.session_id, "undo and make it blue")
    assert undone.base.turn == 1 and undone.instruction == "make it blue"
    assert undone.history["regions"][0]["state"] == "replaced" and undone.history["other_branches_turns"] == 1
    assert resolve_region(undone.history, "the red glass") is None


def test_regions_resolve_by_pronoun_name_and_head_noun(talk):
    talk.say("replace the cup with a glass")
    talk.say("remove the spoon")
    history = route_turn(talk.store, talk.session_id, "x").history
    assert [r["name"] for r in history["regions"]] == ["spoon", "glass"]
    assert history["regions"][0]["state"] == "removed"
    assert history["last_region"] == "glass"  # the spoon is gone: "it" is not the spoon
    for phrase in ("it", "the same one", "that", "same", "the glass", "this glass"):
        assert resolve_region(history, phrase) == "glass", phrase
    assert resolve_region(history, "the spoon") is None  # removed: re-segment if the user means a new one
    assert resolve_region(history, "the cup") is None  # replaced: there is no cup any more
    assert resolve_region(history, "the hat") is None
    text = history_text(history)
    assert "region 'glass': mask \"session:glass\", boxes \"session:glass_box\"" in text
    assert "'it' / 'the same one' most likely means region 'glass'" in text


def test_a_region_removed_later_is_no_longer_it(talk):
    talk.say("replace the cup with a glass")
    talk.say("remove it")  # the glass's own mask, removed
    history = route_turn(talk.store, talk.session_id, "x").history
    assert history["regions"][0]["state"] == "removed" and history["last_region"] is None
    with pytest.raises(PlannerDeclined, match="say which object 'it' is"):
        PLANNER.plan("make it red", history=history)
    assert route_turn(talk.store, talk.session_id, "undo").history["last_region"] == "glass"


def test_going_back_to_before_an_edit(talk):
    first = talk.say("replace the cup with a glass")
    talk.say("remove the spoon")
    state = talk.store.state(talk.session_id)
    assert route(state, "go back to before the glass").base.artifact == state.original()
    assert route(state, "go back to before I removed the spoon").base.artifact == first["commit"].result
    assert route(state, "go back to the image before turn 2").base.artifact == first["commit"].result
    with pytest.raises(TurnNotFound, match="no turn of this session mentions 'the giraffe'"):
        route(state, "go back to before the giraffe")


def test_bad_navigation_is_refused_with_the_session_unchanged(talk):
    talk.say("remove the spoon")
    version = talk.store.version(talk.session_id)
    with pytest.raises(NothingToUndo, match="only 1 edit"):
        talk.say("undo the last three")
    with pytest.raises(TurnNotFound, match="there is no turn 7"):
        talk.say("go back to turn 7")
    assert talk.store.version(talk.session_id) == version


def test_a_route_computed_before_a_change_is_not_applied(talk):
    from agentic_edit.agent.session import SessionBusy, routes_logic

    talk.say("remove the spoon")
    stale = route_turn(talk.store, talk.session_id, "undo")
    talk.say("make the hat red")
    with pytest.raises(SessionBusy, match="changed since"):
        routes_logic.apply_route(talk.store, talk.session_id, stale)


# --- the offline planner with memory ------------------------------------------------------------------
def test_the_offline_planner_uses_remembered_regions(talk):
    talk.say("replace the cup with a glass")
    r = route_turn(talk.store, talk.session_id, "x")
    plan = PLANNER.plan("write 'HOT' on it", history=r.history)
    assert plan.tool_names == ["draw_text"] and plan.step("s1").inputs["boxes"] == "session:glass_box"
    plan = PLANNER.plan("replace the same one with a mug", history=r.history)
    assert plan.step("s1").inputs["mask"] == "session:glass"
    assert plan.step("s1").args["negative_prompt"] == "glass"  # the remembered label, not "session:glass"
    plan = PLANNER.plan("draw boxes around the glass and make the hat red", history=r.history)
    assert plan.tool_names == ["render_boxes", "segment_by_text", "recolor"]
    assert plan.step("s1").inputs["boxes"] == "session:glass_box" and plan.step("s2").args["query"] == "hat"
    plan = PLANNER.plan("find the hat and make it green", history=r.history)  # "it" in the same sentence: the hat
    assert plan.tool_names == ["ground", "render_boxes", "segment_by_text", "recolor"]
    assert plan.step("s3").args["query"] == "hat"
    assert validate(plan, TOOLS, session=r.kinds) == plan


def test_without_memory_the_offline_planner_is_unchanged(talk):
    with pytest.raises(PlannerDeclined, match="say which object 'it' is"):
        PLANNER.plan("make it red")
    talk.say("remove the spoon")  # only a removed region: nothing for "it"
    history = route_turn(talk.store, talk.session_id, "x").history
    with pytest.raises(PlannerDeclined, match="say which object 'it' is"):
        PLANNER.plan("make it red", history=history)
    assert PLANNER.plan("make the glass red").step("s1").args["query"] == "glass"


def test_a_reference_given_earlier_is_used_again(talk):
    shirt = [np.full((8, 8, 3), 0.2, np.float32)]
    talk.say("use the reference for the hat", references=shirt)
    r = route_turn(talk.store, talk.session_id, "use the same reference for the cup")
    assert r.history["references"][0]["name"] == "ref_t1" and r.kinds["ref_t1"] == "image"
    plan = PLANNER.plan("use the same reference for the cup", history=r.history)
    assert plan.step("s2").inputs["reference"] == "session:ref_t1"


def test_session_references_are_validated_by_name(talk):
    talk.say("replace the cup with a glass")
    kinds = route_turn(talk.store, talk.session_id, "x").kinds
    plan = {"steps": [{"id": "s1", "tool": "recolor", "args": {"color": "red"},
                       "inputs": {"image": "image", "mask": "session:cup"}}]}
    with pytest.raises(PlanError, match="the session has no artifact 'cup'; it has: glass, glass_box, original"):
        validate(plan, TOOLS, session=kinds)
    plan["steps"][0]["inputs"]["mask"] = "session:glass_box"
    with pytest.raises(PlanError, match="needs a mask"):
        validate(plan, TOOLS, session=kinds)

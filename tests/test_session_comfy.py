"""Session memory inside a real ComfyUI: the Agent Edit node's turns (planned with memory, committed
after the trace, navigation without a plan, never served stale from the cache), the session nodes
on the canvas, the HTTP routes, failed turns, and two sessions side by side. A ComfyUI killed in
the middle of a turn: test_session_restart.py."""

from __future__ import annotations

import numpy as np
import pytest

from agentic_edit.agent.session import SessionStore
from tests.comfy_harness import PromptFailed
from tests.session_comfy import (FINDS_NOTHING, detail, dominant, head, picture, post, region_mask, saved, say,
                                 turn_image, turn_prompt, view)

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


@pytest.fixture(scope="module")
def cat(comfy_server) -> str:
    return comfy_server.upload_image(picture("chelsea"), "session_cat.png")


@pytest.fixture(scope="module")
def mug(comfy_server) -> str:
    return comfy_server.upload_image(picture("coffee"), "session_mug.png")


def changed_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.flatnonzero((a != b).any(axis=-1).any(axis=1))


def test_a_dialogue_edits_the_right_checkpoint_each_turn(comfy_server, cat):
    server, sid, original = comfy_server, "dialogue", picture("chelsea").astype(int)

    out = say(server, cat, sid, "write 'A' at the top")  # a new id starts the session from the image
    s = detail(server, sid)
    assert [t["turn"] for t in s["turns"]] == [0, 1] and s["head"]["turn"] == 1
    assert s["turns"][1]["base"]["turn"] == 0 and np.array_equal(turn_image(s, 0, server), original)
    one = turn_image(s, 1, server)
    assert np.abs(out - one).max() <= 1, "the node returns the committed checkpoint"
    rows = changed_rows(one, original)
    assert rows.size and rows.max() < 40, "the text is at the top, the rest untouched"

    say(server, cat, sid, "recolor the cat to red")  # segment_by_text finds the middle half
    s = detail(server, sid)
    assert s["turns"][2]["base"]["turn"] == 1, "turn 2 edits turn 1's result, not the node's image"
    assert [st["tool"] for st in s["turns"][2]["steps"]] == ["segment_by_text", "recolor"]
    cat_mask = region_mask(server, s, 2, "cat")
    ys, xs = np.nonzero(cat_mask)
    assert 15 <= ys.mean() <= 65 and 30 <= xs.mean() <= 90, "the region is the middle of the picture"
    two = turn_image(s, 2, server)
    assert dominant(one[cat_mask]) is None and dominant(two[cat_mask]) == "r"
    assert np.array_equal(two[~cat_mask], one[~cat_mask]), "the 'A' stays, nothing else moved"

    say(server, cat, sid, "make it blue")  # "it": turn 2's cat, by its stored mask, not found again
    s = detail(server, sid)
    [step] = s["turns"][3]["steps"]
    assert (step["tool"], step["inputs"]["mask"], s["turns"][3]["base"]["turn"]) == ("recolor", "session:cat", 2)
    three = turn_image(s, 3, server)
    assert dominant(three[cat_mask]) == "b" and np.array_equal(three[~cat_mask], two[~cat_mask])

    out = say(server, cat, sid, "undo")  # navigation: no plan, the head moves and the node shows it
    s = detail(server, sid)
    assert len(s["turns"]) == 4 and s["head"]["artifact"] == s["turns"][2]["result"]["artifact"]
    assert np.abs(out - two).max() <= 1

    out = say(server, cat, sid, "go back to turn 1")
    assert detail(server, sid)["head"]["turn"] == 1 and np.abs(out - one).max() <= 1

    say(server, cat, sid, "write 'B' at the bottom")  # from turn 1: a branch beside turns 2 and 3
    s = detail(server, sid)
    assert s["turns"][4]["base"]["turn"] == 1 and s["head"]["turn"] == 4
    assert sorted(s["turns"][1]["children"]) == [2, 4]
    four = turn_image(s, 4, server)
    assert np.array_equal(four[:40], one[:40]), "the 'A' stays, the cat is not recoloured on this branch"
    assert changed_rows(four, one).min() >= 40, "the 'B' is at the bottom"

    # The same prompt twice: each run is a turn of its own, never ComfyUI's cache of the last one.
    for expected in (1, 0):
        out = say(server, cat, sid, "undo")
        assert detail(server, sid)["head"]["turn"] == expected
    assert np.abs(out - original).max() <= 1 and not detail(server, sid)["can_undo"]
    with pytest.raises(PromptFailed, match="nothing to undo"):
        server.run(turn_prompt(cat, "undo", sid))


def test_the_session_nodes_on_the_canvas(comfy_server, cat):
    server, original = comfy_server, picture("chelsea").astype(int)
    first = {"1": {"class_type": "LoadImage", "inputs": {"image": cat}},
             "s": {"class_type": "AgenticEditSessionStart", "inputs": {"session_id": "", "image": ["1", 0]}},
             "id": {"class_type": "PreviewAny", "inputs": {"source": ["s", 0]}},
             **{k: v for k, v in turn_prompt(cat, "write 'HI' at the top", ["s", 0]).items() if k != "1"}}
    result = server.run(first)
    sid = result.outputs["id"]["text"][0]
    assert sid.startswith("img-"), "no id given: the session is named after the picture"
    turned = detail(server, sid)
    assert turned["head"]["turn"] == 1 and turned["turns"][1]["instruction"] == "write 'HI' at the top"
    again = server.run({k: first[k] for k in ("1", "s", "id")})
    assert again.outputs["id"]["text"][0] == sid, "the same picture continues the same session"

    history = server.run({
        "h": {"class_type": "AgenticEditSessionHistory", "inputs": {"session_id": sid}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["h", 0], "filename_prefix": "history"}},
        "text": {"class_type": "PreviewAny", "inputs": {"source": ["h", 1]}}})
    images = saved(server, history, "history")
    assert len(images) == 2 and np.abs(images[0] - original).max() <= 1
    assert np.abs(images[1] - turn_image(turned, 1, server)).max() <= 1
    summary = history.outputs["text"]["text"][0]
    assert "turn 1: \"write 'HI' at the top\" (place_region, draw_text) on the original image  <- current" in summary

    def navigate(node: str, **inputs) -> np.ndarray:
        result = server.run({"n": {"class_type": node, "inputs": {"session_id": sid, **inputs}},
                             "save": {"class_type": "SaveImage", "inputs": {"images": ["n", 1],
                                                                           "filename_prefix": "navigated"}}})
        return saved(server, result, "navigated")[0]

    assert np.abs(navigate("AgenticEditSessionUndo", count=1) - original).max() <= 1
    assert detail(server, sid)["head"]["turn"] == 0
    assert np.abs(navigate("AgenticEditSessionRollback", turn=1, step="") - images[1]).max() <= 1
    assert detail(server, sid)["head"]["turn"] == 1
    step = navigate("AgenticEditSessionRollback", turn=1, step="s2")
    assert detail(server, sid)["head"]["step"] == "s2" and np.abs(step - images[1]).max() <= 1
    with pytest.raises(PromptFailed, match="there is no turn 7"):
        navigate("AgenticEditSessionRollback", turn=7, step="")
    loaded = server.run({"s": {"class_type": "AgenticEditSessionStart", "inputs": {"session_id": sid}},
                         "save": {"class_type": "SaveImage", "inputs": {"images": ["s", 1],
                                                                       "filename_prefix": "loaded"}}})
    assert np.abs(saved(server, loaded, "loaded")[0] - images[1]).max() <= 1, "loading needs no image"
    with pytest.raises(PromptFailed, match="there is no session 'never-made' yet"):
        server.run({"s": {"class_type": "AgenticEditSessionStart", "inputs": {"session_id": "never-made"}},
                    "p": {"class_type": "PreviewAny", "inputs": {"source": ["s", 0]}}})


def test_routes_list_show_navigate_and_refuse(comfy_server, cat):
    server, sid = comfy_server, "routes"
    say(server, cat, sid, "write 'A' at the top")
    say(server, cat, sid, "write 'B' at the bottom")

    listed = server.get_json("/agentic_edit/sessions")["sessions"]
    [entry] = [e for e in listed if e["id"] == sid]
    assert entry["turns"] == 2 and entry["head"]["turn"] == 2
    assert server.get_json("/api/agentic_edit/sessions")["sessions"][0]["id"] == listed[0]["id"]
    s = detail(server, sid)
    assert [t["turn"] for t in s["turns"]] == [0, 1, 2] and s["can_undo"] and not s["can_redo"]
    assert [st["tool"] for st in s["turns"][2]["steps"]] == ["place_region", "draw_text"]
    drawn = s["turns"][2]["steps"][1]["files"]["image"]
    assert np.array_equal(view(server, drawn), turn_image(s, 2, server)), "every step's image has a /view url"
    status, body = server.request("GET", f"/agentic_edit/sessions/{sid}/artifacts/{s['head']['artifact']}")
    assert status == 200 and body.startswith(b"\x89PNG")

    status, moved = post(server, sid, "undo")
    assert status == 200 and moved["head"]["turn"] == 1 and detail(server, sid)["can_redo"]
    assert post(server, sid, "redo", {"count": 1})[1]["head"]["turn"] == 2
    status, moved = post(server, sid, "rollback", {"turn": 0})
    assert status == 200 and moved["head"]["label"] == "the original image"
    assert np.array_equal(view(server, moved["head"]["file"]), picture("chelsea"))
    status, branched = post(server, sid, "branch", {"turn": 1})
    assert (status, branched["action"], branched["head"]["turn"]) == (200, "branch", 1)
    assert post(server, sid, "rollback", {"turn": 2, "step": "s2"})[1]["head"]["step"] == "s2"

    for method, path, payload, status in (
            ("GET", "/agentic_edit/sessions/bad.id", None, 400),
            ("POST", "/agentic_edit/sessions/bad.id/undo", {}, 400),
            ("GET", "/agentic_edit/sessions/no-such-session", None, 404),
            ("POST", "/agentic_edit/sessions/no-such-session/undo", {}, 404),
            ("POST", f"/agentic_edit/sessions/{sid}/rollback", {"turn": 9}, 404),
            ("POST", f"/agentic_edit/sessions/{sid}/rollback", {}, 400),
            ("POST", f"/agentic_edit/sessions/{sid}/rollback", {"turn": -1}, 400),
            ("POST", f"/agentic_edit/sessions/{sid}/rollback", {"turn": 1, "step": "s9"}, 404),
            ("GET", f"/agentic_edit/sessions/{sid}/artifacts/99999", None, 404)):
        got, body = (server.post_json(path, payload) if method == "POST" else server.request(method, path))
        assert got == status, (method, path, got, body)
    status, body = post(server, sid, "rollback", "{not json")
    assert status == 400 and "JSON" in body["error"]

    # Another client's running turn: the session is busy (409) until it ends.
    store = SessionStore(server.output_dir / "agentic_edit" / "sessions")
    try:
        ticket = store.start_turn(sid, instruction="someone else's edit", owner="another-client")
        status, body = post(server, sid, "undo")
        assert status == 409 and "another client" in body["error"]
        store.abort_turn(sid, ticket.token)
        assert post(server, sid, "undo")[0] == 200
    finally:
        store.close()


def test_a_failed_turn_leaves_the_session_as_it_was(comfy_server, cat):
    server, sid = comfy_server, "failing"
    say(server, cat, sid, "write 'A' at the top")
    before = detail(server, sid)
    with pytest.raises(PromptFailed, match="(?i)nothing"):  # the grounding finds no dog and stops the run
        server.run(turn_prompt(cat, "recolor the dog to red", sid, grounding_model=FINDS_NOTHING))
    after = detail(server, sid)
    assert (after["version"], len(after["turns"]), after["head"]) == (before["version"], 2, before["head"])
    assert post(server, sid, "undo")[0] == 200, "the failed turn does not keep the session busy"
    with pytest.raises(PromptFailed, match="session id 'bad id!' is not valid"):
        server.run(turn_prompt(cat, "write 'A' at the top", "bad id!"))


def test_two_sessions_alternately_never_see_each_others_artifacts(comfy_server, cat, mug):
    server = comfy_server
    say(server, cat, "left", "recolor the cat to red")
    say(server, mug, "right", "recolor the cup to blue")
    say(server, cat, "left", "make it blue")
    say(server, mug, "right", "make it green")
    left, right = detail(server, "left"), detail(server, "right")
    assert left["turns"][2]["steps"][0]["inputs"]["mask"] == "session:cat"
    assert right["turns"][2]["steps"][0]["inputs"]["mask"] == "session:cup"
    assert left["turns"][2]["base"]["turn"] == right["turns"][2]["base"]["turn"] == 1

    def artifacts(session):
        return {a for t in session["turns"] for a in [t["result"]["artifact"]] + [r["artifact"] for r in t["regions"]]}

    assert not artifacts(left) & artifacts(right)
    foreign = right["turns"][1]["regions"][0]["artifact"]
    assert server.request("GET", f"/agentic_edit/sessions/left/artifacts/{foreign}")[0] == 404
    for session, source, colour, name in ((left, "chelsea", "b", "cat"), (right, "coffee", "g", "cup")):
        mask = region_mask(server, session, 1, name)
        final = turn_image(session, 2, server)
        assert np.array_equal(final[~mask], picture(source)[~mask]), "only its own picture, only its own region"
        assert dominant(picture(source)[mask]) != colour and dominant(final[mask]) == colour
        assert np.array_equal(head(server, session["id"]), final)


def test_a_model_planner_plans_with_the_memory_and_checks_its_grounding_first(comfy_server, cat, openai_stub):
    server, sid = comfy_server, "planned"
    openai_stub.reply_json({"steps": [
        {"id": "s1", "tool": "segment_by_text", "args": {"query": "the cat"}, "inputs": {"image": "image"}},
        {"id": "s2", "tool": "recolor", "args": {"color": "red"}, "inputs": {"image": "image", "mask": "s1.mask"}}]})
    openai_stub.reply_json({"steps": [{"id": "s1", "tool": "recolor", "args": {"color": "blue"},
                                       "inputs": {"image": "image", "mask": "session:cat"}}]})
    first = server.run(turn_prompt(cat, "make the cat red", sid, planner="openai", base_url=openai_stub.base_url))
    executed = first.executed_nodes()
    assert any(n.endswith("._continue") for n in executed), "the grounding was checked before the edit"
    assert executed.index(next(n for n in executed if n.endswith("._commit"))) > executed.index(
        next(n for n in executed if n.endswith("._continue"))), "the commit comes after the continued run"
    s = detail(server, sid)
    assert [r["name"] for r in s["turns"][1]["regions"]] == ["cat"]

    say(server, cat, sid, "make it blue", planner="openai", base_url=openai_stub.base_url)
    asked = openai_stub.chat_requests[1].text()
    assert "Session memory" in asked and "session:cat" not in openai_stub.chat_requests[0].text()
    assert 'mask "session:cat"' in asked, "the planner is told which session names it may use, and their kind"
    s = detail(server, sid)
    mask = region_mask(server, s, 1, "cat")
    assert s["turns"][2]["base"]["turn"] == 1 and dominant(turn_image(s, 2, server)[mask]) == "b"


def test_a_picture_the_session_has_not_seen_starts_the_turn_from_itself(comfy_server, cat, mug):
    server, sid = comfy_server, "new-picture"
    say(server, cat, sid, "write 'A' at the top")
    say(server, mug, sid, "write 'B' at the bottom")  # another picture wired to the node
    s = detail(server, sid)
    assert s["turns"][2]["base"]["label"] == "the image given with turn 2"
    two, mug_pixels = turn_image(s, 2, server), picture("coffee").astype(int)
    assert np.array_equal(two[:40], mug_pixels[:40]) and changed_rows(two, mug_pixels).min() >= 40
    say(server, mug, sid, "write 'C' at the top")  # the same picture again: one the session has now
    s = detail(server, sid)
    assert s["turns"][3]["base"]["turn"] == 2 and np.array_equal(turn_image(s, 3, server)[40:], two[40:])


def test_the_api_client_drives_a_session(comfy_server, tmp_path):
    from PIL import Image

    from agentic_edit.agent.client import ComfyClient
    from agentic_edit.agent.client_errors import BadInput, SessionNotFound
    from agentic_edit.agent.jobs import run_edit

    client, sid, photo = ComfyClient(comfy_server.url), "client", tmp_path / "photo.png"
    Image.fromarray(picture("chelsea")).save(photo)
    first = run_edit(client, photo, "write 'A' at the top", tmp_path / "runs", session=sid)
    assert [s["tool"] for s in first.steps()] == ["place_region", "draw_text"]
    second = run_edit(client, photo, "write 'B' at the bottom", tmp_path / "runs", session=sid)
    back = run_edit(client, photo, "undo", tmp_path / "runs", session=sid)  # a run folder of no steps
    assert back.trace["session"]["navigation"] == "undo" and back.steps() == []
    assert np.array_equal(np.asarray(Image.open(back.result)), np.asarray(Image.open(first.result)))
    assert not np.array_equal(np.asarray(Image.open(second.result)), np.asarray(Image.open(first.result)))
    assert client.redo(sid)["head"]["turn"] == 2
    assert sid in [s["id"] for s in client.sessions()]
    assert [t["turn"] for t in client.session(sid)["turns"]] == [0, 1, 2]
    assert client.undo(sid)["head"]["turn"] == 1 and client.redo(sid)["head"]["turn"] == 2
    assert client.rollback(sid, 0)["head"]["turn"] == 0
    assert (client.branch(sid, 1)["action"], client.session(sid)["head"]["turn"]) == ("branch", 1)
    with pytest.raises(BadInput, match="there is no turn 9"):
        client.rollback(sid, 9)
    with pytest.raises(SessionNotFound, match="no session 'no-such-session'"):
        client.undo("no-such-session")

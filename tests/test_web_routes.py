"""What the web panel reads besides the session: one page of a long session's turns, a turn's plan
and its exported workflow, deleting a session, and the plan event the Agent Edit node sends; through
``routes_logic`` (no ComfyUI) and, for the status codes, through a real ComfyUI's routes."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from agentic_edit.agent.session import (ArtifactNotFound, SessionError, SessionNotFound, TurnNotFound,
                                        routes_logic)
from agentic_edit.agent.trace import write_json_atomic
from agentic_edit.nodes.web_events import PLAN_EVENT, announce_plan, plan_message
from tests.session_runs import StoreWorld


@pytest.fixture
def world(tmp_path):
    world = StoreWorld(tmp_path)
    for text in ("remove the spoon", "make the cup red", "make the cup blue", "remove the plate", "make the cup green"):
        world.edit(text)
    return world


def output(world):
    return world.tmp / "output"  # where StoreWorld's runs write their folders


def test_a_page_is_the_newest_turns_below_before(world):
    detail = routes_logic.session_detail(world.store, world.sid, output(world))
    page = routes_logic.detail_page(detail, limit=2)
    assert [t["turn"] for t in page["turns"]] == [4, 5]
    assert (page["turns_total"], page["more_before"]) == (6, True)
    older = routes_logic.detail_page(detail, before="4", limit="3")
    assert [t["turn"] for t in older["turns"]] == [1, 2, 3] and older["more_before"]
    last = routes_logic.detail_page(detail, before=1, limit=30)
    assert [t["turn"] for t in last["turns"]] == [0] and not last["more_before"]
    assert routes_logic.detail_page(detail, before=0, limit=5)["turns"] == []
    assert page["head"] == detail["head"] and page["can_undo"], "the page keeps the session's own fields"
    for bad in ({"limit": 0}, {"limit": "x"}, {"limit": 501}, {"before": -1}):
        with pytest.raises(SessionError, match="limit|before"):
            routes_logic.detail_page(detail, **bad)


def test_a_turns_plan_and_its_workflow(world):
    state = world.store.state(world.sid)
    run_id = state.turns[2].run_id
    plan = routes_logic.turn_plan(world.store, world.sid, 2, output(world))
    assert (plan["turn"], plan["run_id"], plan["instruction"]) == (2, run_id, "make the cup red")
    assert [s["tool"] for s in plan["plan"]["steps"]] == ["segment_by_text", "recolor"]
    assert plan["workflow"] is False, "the fake runner exports no workflow"
    with pytest.raises(ArtifactNotFound, match="no standalone workflow: its plan reads regions"):
        routes_logic.turn_workflow(world.store, world.sid, 2, output(world))

    folder = output(world) / "agentic_edit" / "runs" / run_id
    write_json_atomic(folder / "workflow.json", {"nodes": [{"id": 1, "type": "LoadImage"}], "links": []})
    write_json_atomic(folder / "workflow_api.json", {"1": {"class_type": "LoadImage", "inputs": {}}})
    assert routes_logic.turn_plan(world.store, world.sid, "2", output(world))["workflow"] is True
    assert routes_logic.turn_workflow(world.store, world.sid, 2, output(world))["nodes"][0]["type"] == "LoadImage"
    assert "1" in routes_logic.turn_workflow(world.store, world.sid, 2, output(world), "api")


def test_what_has_no_plan_says_why(world):
    with pytest.raises(ArtifactNotFound, match="turn 0 is the original picture"):
        routes_logic.turn_plan(world.store, world.sid, 0, output(world))
    with pytest.raises(TurnNotFound, match="has no turn 9"):
        routes_logic.turn_plan(world.store, world.sid, 9, output(world))
    with pytest.raises(ArtifactNotFound, match="no run folder"):
        routes_logic.turn_plan(world.store, world.sid, 1, None)
    with pytest.raises(SessionError, match="format must be 'ui' or 'api'"):
        routes_logic.turn_workflow(world.store, world.sid, 1, output(world), "xml")
    run_id = world.store.state(world.sid).turns[1].run_id
    (output(world) / "agentic_edit" / "runs" / run_id / "plan.json").unlink()
    with pytest.raises(ArtifactNotFound, match="turn 1 has no plan.json in") as info:
        routes_logic.turn_plan(world.store, world.sid, 1, output(world))
    assert routes_logic.http_status(info.value) == 404
    (output(world) / "agentic_edit" / "runs" / run_id / "plan.json").write_text("{not json")
    with pytest.raises(SessionError, match="cannot read") as info:
        routes_logic.turn_plan(world.store, world.sid, 1, output(world))
    assert routes_logic.http_status(info.value) == 507


def test_deleting_a_session(world):
    assert routes_logic.delete_session(world.store, world.sid) == {"deleted": world.sid}
    assert routes_logic.list_sessions(world.store) == []
    for call in (lambda: routes_logic.session_detail(world.store, world.sid),
                 lambda: routes_logic.delete_session(world.store, world.sid),
                 lambda: routes_logic.turn_plan(world.store, world.sid, 1, output(world))):
        with pytest.raises(SessionNotFound) as info:
            call()
        assert routes_logic.http_status(info.value) == 404


def test_the_plan_event_names_the_steps_and_never_fails_a_run():
    plan = {"steps": [{"id": "s1", "tool": "segment_by_text", "args": {"query": "cat"}, "inputs": {"image": "image"}},
                      {"id": "s2", "tool": "recolor", "args": {"color": "red"}, "inputs": {"mask": "s1.mask"}}],
            "notes": "find, then recolor"}
    message = plan_message("edit_1", "recolor the cat", plan, "offline", "cats", "p1", "7")
    assert json.loads(json.dumps(message)) == message, "the event is JSON"
    assert [(s["id"], s["tool"]) for s in message["steps"]] == [("s1", "segment_by_text"), ("s2", "recolor")]
    assert (message["node"], message["prompt_id"], message["session"]) == ("7", "p1", "cats")
    assert PLAN_EVENT == "agentic_edit.plan"
    announce_plan("edit_1", "recolor the cat", plan, "offline")  # no server here: nothing sent, no error


@pytest.mark.comfy
def test_the_routes_answer_with_their_status(comfy_server, tmp_path):
    from agentic_edit.agent.session import SESSIONS_SUBFOLDER, SessionStore

    server = comfy_server
    world = StoreWorld(tmp_path, store=SessionStore(server.output_dir / SESSIONS_SUBFOLDER))
    world.edit("remove the spoon")
    root = f"/agentic_edit/sessions/{urllib.parse.quote(world.sid)}"
    page = server.get_json(root + "?limit=1")
    assert [t["turn"] for t in page["turns"]] == [1] and page["turns_total"] == 2 and page["more_before"]
    assert server.get_json(root + "?before=1&limit=5")["turns"][0]["turn"] == 0
    for path, status, kind in ((root + "?limit=0", 400, "SessionError"),
                               (root + "/turns/1/plan", 404, "ArtifactNotFound"),
                               (root + "/turns/7/plan", 404, "TurnNotFound"),
                               (root + "/turns/1/workflow?format=xml", 400, "SessionError"),
                               ("/agentic_edit/sessions/nope/turns/1/workflow", 404, "SessionNotFound")):
        code, body = server.request("GET", path)
        assert (code, json.loads(body)["kind"]) == (status, kind), path
    assert server.request("DELETE", root)[0] == 200
    code, body = server.request("DELETE", root)
    assert code == 404 and json.loads(body)["kind"] == "SessionNotFound"
    code, body = server.request("GET", root)
    assert code == 404

"""The web panel in a real browser: headless Debian Chromium (Python Playwright) on the real ComfyUI
harness with the tiny checkpoints. A turn run from the canvas (live progress in the panel and on the
node), its steps in the timeline, undo and redo, its plan opened as a workflow and run again; a
session deleted while open, routes that fail, and a 200-turn session that stays responsive with
lazily loaded images. A failed test leaves its screenshot under test-artifacts/browser/."""

from __future__ import annotations

import json
import time

import pytest

from agentic_edit.agent.session import SESSIONS_SUBFOLDER, SessionStore
from tests.browser_panel import (browser, browser_missing_reason, graph_node_types, loaded_images,  # noqa: F401
                                 load_workflow, open_panel, open_session, page, turn, wait_until)
from tests.pack import PACK_ROOT
from tests.session_comfy import detail
from tests.session_runs import StoreWorld

pytestmark = [pytest.mark.comfy, pytest.mark.slow,
              pytest.mark.skipif(browser_missing_reason() is not None, reason=str(browser_missing_reason()))]

SAMPLE = PACK_ROOT / "workflows" / "inputs" / "agentic_edit_sample.png"


@pytest.fixture(scope="module")
def sample(comfy_server) -> str:
    """The saved agent_session workflow's input, in ComfyUI's input folder before the page loads."""
    return comfy_server.upload_image(SAMPLE, SAMPLE.name)


def store(server) -> SessionStore:
    """The server's own session store, opened from the test (SQLite in WAL mode: both may write)."""
    return SessionStore(server.output_dir / SESSIONS_SUBFOLDER)


def made_session(server, tmp_path, turns: int) -> str:
    """A session written straight into the server's store (its run folders stay in ``tmp_path``)."""
    world = StoreWorld(tmp_path, store=store(server))
    for n in range(1, turns + 1):
        world.edit(f"make the cup {['red', 'blue', 'green'][n % 3]}")
    return world.sid


def history_count(server) -> int:
    return len(server.get_json("/history"))


def click_run(tab) -> None:
    tab.get_by_role("button", name="Run", exact=True).first.click()


def test_a_turn_from_the_canvas_its_steps_undo_and_its_plan_as_a_workflow(page, comfy_server, sample):
    server, tab, sid = comfy_server, page, "web-cat"
    workflow = json.loads((PACK_ROOT / "workflows" / "agent_session.json").read_text())
    load_workflow(tab, workflow, "AgenticEditAgentPlanner", {"session_id": sid})
    assert tab.locator(".ae-node-live").count() == 1, "the Agent Edit node carries the live widget"
    panel = open_panel(tab)

    tab.evaluate("""() => { window.__aeChanges = [];
        window.__agenticEditPanel.live.subscribe((run, change) => window.__aeChanges.push(change.type)); }""")
    before = history_count(server)
    click_run(tab)
    live = panel.locator(".ae-live")
    live.locator(".ae-live-step").first.wait_for(state="attached", timeout=180_000)  # the plan arrived
    assert [s.get_attribute("data-step") for s in live.locator(".ae-live-step").all()] == ["s1", "s2"]
    tab.locator('.ae-live[data-status="success"]').wait_for(timeout=300_000)
    assert live.locator('.ae-live-step[data-done="yes"]').count() == 2, "both steps reported with their images"
    assert "recolor" in live.inner_text() and "segment_by_text" in live.inner_text()
    wait_until(lambda: history_count(server) > before, "the turn in /history")
    changes = tab.evaluate("() => window.__aeChanges")
    print("live changes:", sorted(set(changes)))
    assert {"start", "executing", "plan", "step", "progress", "end"} <= set(changes)
    assert changes.index("plan") < changes.index("step") < changes.index("end"), "the plan came before the steps"

    node_live = tab.locator('.ae-node-live[data-node-live="success"]')
    node_live.wait_for(state="attached")
    assert node_live.locator('.ae-node-plan li[data-done="yes"]').count() == 2
    assert node_live.locator("img.ae-node-image").get_attribute("data-step") == "s2", "the latest step's image"

    # The panel lists the new session (it reloads when the run ends) and shows its timeline.
    panel = open_session(tab, sid)
    one = turn(panel, 1)
    assert "recolor the cat to red" in one.inner_text()
    assert [s.get_attribute("data-step") for s in one.locator(".ae-step").all()] == ["s1", "s2"]
    assert one.locator(".ae-step code.ae-tool").all_inner_texts() == ["segment_by_text", "recolor"]
    assert 'color="red"' in one.locator('.ae-step[data-step="s2"] .ae-args').inner_text()
    thumb = one.locator('.ae-step[data-step="s2"] img')
    thumb.scroll_into_view_if_needed()
    tab.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=thumb.element_handle())
    assert one.locator(".ae-badge.ae-current").count() == 1

    one.locator(".ae-show-plan").click()
    assert one.locator('.ae-plan li[data-step="s1"]').inner_text().startswith("segment_by_text")

    panel.locator(".ae-undo").click()
    panel.locator('.ae-head[data-head-turn="0"]').wait_for()
    assert detail(server, sid)["head"]["turn"] == 0, "the panel's undo moved the session on the server"
    assert panel.locator(".ae-undo").is_disabled() and panel.locator(".ae-redo").is_enabled()
    panel.locator(".ae-redo").click()
    panel.locator('.ae-head[data-head-turn="1"]').wait_for()

    turn(panel, 1).locator(".ae-open-workflow").click()
    exported = server.get_json(f"/agentic_edit/sessions/{sid}/turns/1/workflow")
    expected = sorted(n["type"] for n in exported["nodes"])
    wait_until(lambda: sorted(graph_node_types(tab)) == expected, "the plan's workflow on the canvas", 60)
    assert "AgenticEditAgentPlanner" not in expected and "LoadImage" in expected

    before = history_count(server)
    click_run(tab)
    run_id = detail(server, sid)["turns"][1]["run_id"]
    replay = server.output_dir / "agentic_edit" / run_id
    wait_until(lambda: history_count(server) > before and any(replay.glob("replay_*.png")),
               "the opened workflow to run and save its image", 300)
    [entry] = [h for h in server.get_json("/history").values()
               if any(i["subfolder"] == f"agentic_edit/{run_id}" for o in h["outputs"].values()
                      for i in o.get("images", []))]
    assert entry["status"]["status_str"] == "success"


def test_a_session_deleted_while_open_says_so(page, comfy_server, tmp_path):
    server, tab = comfy_server, page
    sid = made_session(server, tmp_path, 2)
    panel = open_session(tab, sid)
    assert panel.locator(".ae-turn").count() == 3

    status, _ = server.request("DELETE", f"/agentic_edit/sessions/{sid}")
    assert status == 200
    gone = panel.locator(".ae-gone")
    gone.wait_for(timeout=60_000)  # the panel looks again every few seconds
    assert f"Session {sid} no longer exists" in gone.inner_text()
    assert panel.locator(".ae-undo").is_disabled() and turn(panel, 1).locator(".ae-rollback").is_disabled()
    gone.get_by_role("button", name="Back to sessions").click()
    panel.locator(".ae-sessions, .ae-empty").first.wait_for()
    assert panel.locator(f'.ae-session[data-session-id="{sid}"]').count() == 0


def test_a_route_that_fails_is_reported_and_the_panel_recovers(page, comfy_server, tmp_path):
    server, tab = comfy_server, page
    sid = made_session(server, tmp_path, 1)
    panel = open_panel(tab)
    panel.locator(".ae-refresh").click()
    panel.locator(f'.ae-session[data-session-id="{sid}"]').wait_for()

    def broken(route):
        route.fulfill(status=500, content_type="application/json",
                      body=json.dumps({"error": "the sessions database is unreadable", "kind": "SessionSchemaError"}))

    pattern = f"**/agentic_edit/sessions/{sid}?*"
    tab.route(pattern, broken)
    panel.locator(f'.ae-session[data-session-id="{sid}"] .ae-session-open').click()
    error = panel.locator(".ae-error")
    error.wait_for()
    assert f"Loading session {sid}: the sessions database is unreadable (HTTP 500)" in error.inner_text()
    assert panel.locator(".ae-turn").count() == 0

    tab.unroute(pattern)
    panel.locator(".ae-refresh").click()
    turn(panel, 1).wait_for()
    assert error.is_hidden(), "a call that works again clears the error"

    # An action whose route answers with something that is not JSON (a proxy's HTML page).
    tab.route(f"**/agentic_edit/sessions/{sid}/undo", lambda r: r.fulfill(status=502, body="<html>Bad gateway</html>"))
    panel.locator(".ae-undo").click()
    error.wait_for()
    assert f"Undo in session {sid}: <html>Bad gateway</html> (HTTP 502)" in error.inner_text()
    assert detail(server, sid)["head"]["turn"] == 1, "nothing moved"

    # A real error of the route: this turn's run folder is not under ComfyUI's output, so no plan.
    tab.unroute(f"**/agentic_edit/sessions/{sid}/undo")
    panel.locator(".ae-error button").click()
    turn(panel, 1).locator(".ae-show-plan").click()
    error.wait_for()
    assert "Loading the plan: turn 1 has no plan.json in" in error.inner_text()
    assert "(HTTP 404)" in error.inner_text()


def test_a_200_turn_session_stays_responsive_and_loads_images_lazily(page, comfy_server, tmp_path):
    server, tab = comfy_server, page
    sid = made_session(server, tmp_path, 200)
    assert len(detail(server, sid)["turns"]) == 201

    panel = open_panel(tab)
    panel.locator(".ae-refresh").click()
    item = panel.locator(f'.ae-session[data-session-id="{sid}"] .ae-session-open')
    item.wait_for()
    started = time.monotonic()
    item.click()
    turn(panel, 200).wait_for()
    shown = time.monotonic() - started
    assert shown < 20, f"the newest turns of a 200-turn session took {shown:.1f} s to show"
    turns = panel.locator(".ae-turn")
    assert turns.count() == 30, "one page of turns, newest first"
    assert turns.first.get_attribute("data-turn") == "200"

    asked, total = loaded_images(tab, ".ae-timeline img")
    assert total == 30 * 3 and asked < total / 2, f"{asked} of {total} thumbnails fetched before scrolling"

    # Scrolling down loads older pages by itself until turn 0; images follow the scroll.
    for _ in range(40):
        if turn(panel, 0).count():
            break
        panel.locator(".ae-more").scroll_into_view_if_needed()
        wait_until(lambda n=turns.count(): turns.count() > n or turn(panel, 0).count(), "an older page", 60)
    numbers = [int(t) for t in turns.evaluate_all("(ts) => ts.map((t) => t.dataset.turn)")]
    assert numbers == list(range(200, -1, -1)), "every turn once, newest first"
    assert panel.locator(".ae-more").is_hidden()
    turn(panel, 0).scroll_into_view_if_needed()
    last = turn(panel, 0).locator("img.ae-result")
    tab.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=last.element_handle())
    asked, total = loaded_images(tab, ".ae-timeline img")
    assert asked < total, "images far from the view were never asked for"

    # Still responsive: an undo at the end of a long timeline answers and re-renders.
    started = time.monotonic()
    panel.locator(".ae-undo").click()
    panel.locator('.ae-head[data-head-turn="199"]').wait_for()
    assert time.monotonic() - started < 20

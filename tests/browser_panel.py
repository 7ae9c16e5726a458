"""Headless Debian Chromium driven by Python Playwright against the real ComfyUI harness, for the
web panel's tests: launch (no browser download: ``executable_path`` is the Debian binary), a page per
test that saves a screenshot, the console and the server log under ``test-artifacts/`` when the test
fails, and the panel's controls by role and class.

Chromium is ``$CHROMIUM`` or ``/usr/bin/chromium`` (``apt-get install -y chromium``; ``.ci/run``
installs it when it is missing).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "browser"
# Two slow cores run ComfyUI, Chromium and the test together: waits are long, and they wait for a
# condition, never for a fixed time.
TIMEOUT_MS = 60_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1500,950"]


def chromium_path() -> str | None:
    candidate = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
    return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else shutil.which("chromium")


def browser_missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if chromium_path() is None:
        return "no Chromium at /usr/bin/chromium (apt-get install -y chromium, or set CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python Playwright is not installed (pip install playwright; no browser download is needed)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _artifact_name(nodeid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::")[-1])[:120]


@pytest.fixture
def page(browser, comfy_server, request):
    """ComfyUI's page with the pack's extension loaded and the panel's tab button present; on a failed
    test its screenshot, console and the server log land in test-artifacts/browser/<test>.*"""
    context = browser.new_context(viewport={"width": 1500, "height": 950})
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    console: list[str] = []
    tab.on("console", lambda m: console.append(f"[{m.type}] {m.text}"))
    tab.on("pageerror", lambda e: console.append(f"[pageerror] {e}"))
    failed_before = request.session.testsfailed
    try:
        open_comfyui(tab, comfy_server)
        yield tab
    finally:
        # The call's report is logged before teardown: a failure shows in testsfailed here.
        if request.session.testsfailed > failed_before:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            name = _artifact_name(request.node.nodeid)
            try:
                tab.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            except Exception as exc:  # a crashed page still leaves its console and the log
                console.append(f"[screenshot failed] {exc}")
            (ARTIFACTS / f"{name}.console.txt").write_text("\n".join(console))
            (ARTIFACTS / f"{name}.server.log").write_text(comfy_server.log_tail(40_000))
        context.close()


def open_comfyui(tab, server) -> None:
    # A fresh user gets the Templates dialog first; this setting says the tour was seen.
    server.post_json("/settings/Comfy.TutorialCompleted", True)
    tab.goto(server.url + "/", wait_until="domcontentloaded")
    # The app is ready once it has loaded its first graph (a fresh user's default one): a workflow
    # loaded before that would be replaced by it.
    tab.wait_for_function("() => !!window.__agenticEditPanel && window.app?.graph?.nodes?.length > 0",
                          timeout=120_000)
    tab.locator(".agentic-edit-tab-button").first.wait_for(state="visible")
    close_dialogs(tab)


def close_dialogs(tab) -> None:
    """Closes any modal dialog (Escape) until none covers the page."""
    overlay = tab.locator('[data-testid="dialog-overlay"]')
    for _ in range(5):
        if not overlay.count() or not overlay.first.is_visible():
            return
        tab.keyboard.press("Escape")
        try:
            overlay.first.wait_for(state="hidden", timeout=5_000)
        except Exception:
            continue


def open_panel(tab):
    """Clicks the sidebar button; returns the panel's locator once it is shown."""
    panel = tab.locator(".agentic-edit-panel")
    if not panel.is_visible():
        close_dialogs(tab)
        tab.locator(".agentic-edit-tab-button").first.click()
    panel.wait_for(state="visible")
    return panel


def open_session(tab, session_id: str):
    panel = open_panel(tab)
    item = panel.locator(f'.ae-session[data-session-id="{session_id}"] .ae-session-open')
    if not item.count():
        panel.locator(".ae-refresh").click()
    item.click()
    panel.locator(".ae-timeline .ae-turn").first.wait_for(state="visible")
    return panel


def turn(panel, number: int):
    return panel.locator(f'.ae-turn[data-turn="{number}"]')


def loaded_images(tab, selector: str) -> tuple[int, int]:
    """(how many of ``selector``'s images have been asked for, how many there are)."""
    return tab.evaluate("""(sel) => {
        const imgs = [...document.querySelectorAll(sel)];
        return [imgs.filter((i) => i.getAttribute('src')).length, imgs.length];
    }""", selector)


def wait_until(check, what: str, timeout: float = 120.0, every: float = 0.25):
    """``check()``'s first truthy value, asked every ``every`` s until ``timeout`` (then a clear failure)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def load_workflow(tab, workflow: dict, node_type: str, widgets: dict | None = None) -> None:
    """Loads a UI workflow onto the canvas and sets ``widgets`` ({name: value}) on its ``node_type``
    node; tried again if the app's own start-up replaced the graph meanwhile."""
    for _ in range(3):
        loaded = tab.evaluate("""async ([workflow, type, widgets]) => {
            await window.app.loadGraphData(workflow);
            const node = window.app.graph.nodes.find((n) => n.type === type);
            if (!node) return false;
            for (const [name, value] of Object.entries(widgets)) node.widgets.find((w) => w.name === name).value = value;
            return true;
        }""", [workflow, node_type, widgets or {}])
        if loaded:
            return
    raise AssertionError(f"the workflow with a {node_type} node did not stay on the canvas")


def graph_node_types(tab) -> list[str]:
    return tab.evaluate("() => window.app.graph.nodes.map((n) => n.type)")

// The "Agentic Edit" sidebar tab: the sessions, one session's timeline with undo/redo/rollback/branch
// and "open as workflow", the running prompt's live progress, and clear messages when a route
// fails or the open session was deleted. Plain DOM; mounted by the tab's render(el).

import { ApiError, SessionsApi } from "./http.js";
import { clear, el, when } from "./dom.js";
import { LazyImages } from "./lazy_images.js";
import { Timeline, planView } from "./timeline.js";

const PAGE = 30;
const POLL_MS = 4000;

export class SessionsPanel {
  constructor(app, api, live) {
    this.app = app;
    this.sessionsApi = new SessionsApi(api);
    this.live = live;
    this.view = "list";
    this.session = null; // {id, detail, gone, oldest}
    this.listKey = "";
  }

  // --- mounting -------------------------------------------------------------------------------------
  mount(container) {
    this.root = el("div.agentic-edit-panel", { "data-testid": "agentic-edit-panel" });
    this.status = el("div.ae-status", { role: "status", "aria-live": "polite" });
    this.error = el("div.ae-error", { role: "alert", hidden: true });
    this.liveBox = el("div.ae-live", { hidden: true });
    this.body = el("div.ae-body");
    this.root.append(
      el("div.ae-header", {}, el("span.ae-title", {}, "Agentic Edit"),
        el("button.ae-btn.ae-refresh", { type: "button", title: "Reload from the server", onclick: () => this.refresh() }, "Refresh")),
      this.liveBox, this.error, this.status, this.body);
    container.replaceChildren(this.root);
    this.lazy = new LazyImages();
    this.unsubscribe = this.live.subscribe((run, change) => this.onLive(run, change));
    this.timer = setInterval(() => this.poll(), POLL_MS);
    if (this.live.run) this.onLive(this.live.run, { type: "mount" });
    if (this.view === "session" && this.session) this.openSession(this.session.id);
    else this.showList();
  }

  destroy() {
    clearInterval(this.timer);
    if (this.unsubscribe) this.unsubscribe();
    if (this.lazy) this.lazy.disconnect();
    if (this.moreObserver) this.moreObserver.disconnect();
    this.root = null;
  }

  // --- messages -------------------------------------------------------------------------------------
  say(text) {
    this.status.textContent = text;
  }

  fail(err) {
    const message = err instanceof ApiError ? err.message : `Unexpected error: ${err && err.message ? err.message : err}`;
    this.error.replaceChildren(el("span", {}, message),
      el("button.ae-btn.ae-small", { type: "button", onclick: () => this.clearError() }, "Dismiss"));
    this.error.hidden = false;
    console.warn("agentic_edit:", message);
  }

  clearError() {
    this.error.hidden = true;
    this.error.replaceChildren();
  }

  // Runs a route call; a deleted open session turns the view into its "deleted" state.
  async guard(work) {
    try {
      const value = await work();
      this.clearError();
      return value;
    } catch (err) {
      if (err instanceof ApiError && err.sessionGone && this.view === "session") this.markGone(err);
      else this.fail(err);
      return undefined;
    }
  }

  // --- the sessions list ----------------------------------------------------------------------------
  async showList() {
    this.view = "list";
    this.session = null;
    this.lazy.disconnect();
    this.lazy = new LazyImages();
    clear(this.body).append(el("div.ae-loading", {}, "Loading sessions…"));
    const sessions = await this.guard(() => this.sessionsApi.sessions());
    if (!this.root || this.view !== "list") return;
    if (sessions === undefined) {
      clear(this.body).append(el("div.ae-empty.ae-failed", {}, "The sessions could not be loaded.",
        el("button.ae-btn", { type: "button", onclick: () => this.showList() }, "Try again")));
      return;
    }
    this.renderList(sessions);
  }

  renderList(sessions) {
    this.listKey = JSON.stringify(sessions.map((s) => [s.id, s.version]));
    const list = el("ul.ae-sessions", { "aria-label": "sessions" });
    for (const s of sessions) {
      const url = this.sessionsApi.fileUrl(s.head && s.head.file);
      list.append(el("li.ae-session", { dataset: { sessionId: s.id } },
        el("button.ae-session-open", { type: "button", onclick: () => this.openSession(s.id) },
          this.lazy.image(url, `session ${s.id}`),
          el("span.ae-session-text", {},
            el("span.ae-session-title", {}, s.title || s.id),
            el("span.ae-meta", {}, `${s.id} · ${s.turns} turn${s.turns === 1 ? "" : "s"} · ${when(s.updated_at)}`)))));
    }
    clear(this.body).append(sessions.length ? list : el("div.ae-empty", {},
      "No sessions yet. Give an Agent Edit node a session_id and run it."));
  }

  // --- one session ----------------------------------------------------------------------------------
  async openSession(id) {
    this.view = "session";
    this.session = { id, detail: null, gone: false, oldest: null };
    this.lazy.disconnect();
    this.lazy = new LazyImages();
    this.timeline = new Timeline(this.sessionsApi, this.lazy, {
      rollback: (turn, step) => this.move("rollback", turn, step),
      branch: (turn) => this.move("branch", turn),
      plan: (turn, box) => this.togglePlan(turn, box),
      openWorkflow: (turn) => this.openWorkflow(turn),
    });
    this.more = el("button.ae-btn.ae-more", { type: "button", hidden: true, onclick: () => this.loadOlder() }, "Older turns");
    this.sessionHead = el("div.ae-session-head");
    this.actionsBar = el("div.ae-actions", {},
      this.undoButton = el("button.ae-btn.ae-undo", { type: "button", onclick: () => this.move("undo") }, "Undo"),
      this.redoButton = el("button.ae-btn.ae-redo", { type: "button", onclick: () => this.move("redo") }, "Redo"));
    clear(this.body).append(
      el("button.ae-btn.ae-back", { type: "button", onclick: () => this.showList() }, "← Sessions"),
      this.sessionHead, this.actionsBar, this.timeline.list, this.more);
    this.say("");
    await this.reloadSession();
  }

  // Loads the newest page again (as many turns as are shown, at least one page) and re-renders.
  async reloadSession() {
    const session = this.session;
    if (!session) return;
    const limit = Math.max(PAGE, this.timeline.count());
    const generation = (this.generation = (this.generation || 0) + 1);
    const detail = await this.guard(() => this.sessionsApi.session(session.id, { limit }));
    if (detail === undefined || this.session !== session || session.gone || generation !== this.generation) return;
    session.detail = detail;
    this.renderSessionHead(detail);
    this.timeline.reset();
    this.timeline.append(detail.turns);
    this.updateMore(detail);
  }

  renderSessionHead(detail) {
    const head = detail.head || {};
    this.sessionHead.replaceChildren(
      el("div.ae-session-title", {}, detail.title || detail.id),
      el("div.ae-meta", {}, `${detail.id} · ${detail.turns_total ?? detail.turns.length} turns · version ${detail.version}`),
      el("div.ae-head", { dataset: { headTurn: String(head.turn ?? "") } },
        this.lazy.image(this.sessionsApi.fileUrl(head.file), "current image", "ae-thumb ae-head-image"),
        el("span", {}, `Current: ${head.label || `turn ${head.turn}`}`)));
    this.undoButton.disabled = !detail.can_undo;
    this.redoButton.disabled = !detail.can_redo;
  }

  updateMore(detail) {
    const shown = detail.turns;
    this.session.oldest = shown.length ? shown[0].turn : null;
    const total = detail.turns_total ?? shown.length;
    const left = Math.max(0, total - this.timeline.count());
    this.more.hidden = !detail.more_before;
    this.more.textContent = `Older turns (${left} more)`;
    if (!this.moreObserver) {
      // Scrolling to the end of the timeline loads the next page by itself.
      this.moreObserver = new IntersectionObserver((entries) => {
        if (entries.some((e) => e.isIntersecting) && !this.more.hidden) this.loadOlder();
      }, { rootMargin: "100px 0px" });
    }
    this.moreObserver.disconnect();
    this.moreObserver.observe(this.more);
  }

  async loadOlder() {
    const session = this.session;
    if (!session || session.oldest === null || this.loadingOlder) return;
    this.loadingOlder = true;
    const generation = this.generation;
    try {
      const page = await this.guard(() => this.sessionsApi.session(session.id, { before: session.oldest, limit: PAGE }));
      // A reload while this page was on its way re-rendered the timeline: the page may not fit any more.
      if (page === undefined || this.session !== session || generation !== this.generation) return;
      this.timeline.append(page.turns);
      this.updateMore(page);
    } finally {
      this.loadingOlder = false;
    }
  }

  async move(action, turn = null, step = null) {
    const session = this.session;
    if (!session || session.gone) return;
    const calls = {
      undo: () => this.sessionsApi.undo(session.id),
      redo: () => this.sessionsApi.redo(session.id),
      rollback: () => this.sessionsApi.rollback(session.id, turn, step),
      branch: () => this.sessionsApi.branch(session.id, turn),
    };
    this.say(`${action}…`);
    const moved = await this.guard(calls[action]);
    if (moved === undefined) {
      this.say("");
      return;
    }
    this.say(`${action}: now at ${moved.head.label || `turn ${moved.head.turn}`}${moved.note ? ` (${moved.note})` : ""}`);
    await this.reloadSession();
  }

  async togglePlan(turn, box) {
    if (box.childElementCount) {
      box.replaceChildren();
      return;
    }
    box.append(el("div.ae-loading", {}, "Loading the plan…"));
    const plan = await this.guard(() => this.sessionsApi.plan(this.session.id, turn));
    box.replaceChildren(...(plan === undefined ? [] : [planView(plan)]));
  }

  async openWorkflow(turn) {
    const id = this.session.id;
    const workflow = await this.guard(() => this.sessionsApi.workflow(id, turn));
    if (workflow === undefined) return;
    try {
      await this.app.loadGraphData(workflow, true, true, `agentic-edit ${id} turn ${turn}`);
      this.say(`Turn ${turn}'s plan is on the canvas as a workflow: press Run to run it again.`);
    } catch (err) {
      this.fail(new ApiError(`Opening turn ${turn} as a workflow`, 0, err.message || String(err)));
    }
  }

  markGone(err) {
    const session = this.session;
    if (!session) return;
    session.gone = true;
    this.undoButton.disabled = this.redoButton.disabled = true;
    for (const button of this.body.querySelectorAll(".ae-timeline button, .ae-more")) button.disabled = true;
    this.sessionHead.prepend(el("div.ae-gone", { role: "alert" },
      `Session ${session.id} no longer exists (it was deleted): ${err.reason}. `,
      el("button.ae-btn.ae-small", { type: "button", onclick: () => this.showList() }, "Back to sessions")));
    this.say("");
  }

  // --- keeping up with the server -------------------------------------------------------------------
  async refresh() {
    this.clearError();
    if (this.view === "session" && this.session && !this.session.gone) await this.reloadSession();
    else if (this.view === "list") await this.showList();
  }

  // Another client may change or delete the open session: look every few seconds (quietly).
  async poll() {
    if (!this.root || document.hidden || this.polling || !this.root.isConnected || !this.root.offsetParent) return;
    this.polling = true;
    try {
      if (this.view === "session" && this.session && !this.session.gone) {
        const session = this.session;
        try {
          const page = await this.sessionsApi.session(session.id, { limit: 1 });
          if (this.session === session && session.detail && page.version !== session.detail.version) {
            await this.reloadSession();
          }
        } catch (err) {
          if (err instanceof ApiError && err.sessionGone) this.markGone(err);
        }
      } else if (this.view === "list") {
        try {
          const sessions = await this.sessionsApi.sessions();
          const key = JSON.stringify(sessions.map((s) => [s.id, s.version]));
          if (this.view === "list" && key !== this.listKey) this.renderList(sessions);
        } catch {
          /* the next explicit action reports it */
        }
      }
    } finally {
      this.polling = false;
    }
  }

  // --- the running prompt ---------------------------------------------------------------------------
  onLive(run, change) {
    if (!this.root || !run) return;
    this.liveBox.hidden = false;
    const plans = [...run.plans.values()];
    const steps = [...run.steps.values()];
    const state = { running: "Running", success: "Finished", error: "Failed", interrupted: "Interrupted" }[run.status];
    const progress = run.progress && run.progress.max ? Math.round((100 * run.progress.value) / run.progress.max) : null;
    const nodeTitle = run.node ? this.nodeTitle(run.node) : "";
    this.liveBox.dataset.status = run.status;
    this.liveBox.replaceChildren(...[
      el("div.ae-live-head", {}, el("b", {}, state), nodeTitle ? ` · ${nodeTitle}` : "",
        run.message ? el("div.ae-live-error", {}, run.message) : null),
      progress === null ? null : el("progress.ae-progress", { max: 100, value: progress }),
      ...plans.map((plan) => el("div.ae-live-plan", { dataset: { runId: plan.run_id } },
        el("div", {}, `“${plan.instruction}”${plan.session ? ` · session ${plan.session}` : ""}`),
        el("ol.ae-live-steps", {}, plan.steps.map((s) => {
          const done = steps.find((x) => x.run_id === plan.run_id && x.step === s.id);
          const image = done && (done.images.find((i) => i.kind === "image") || done.images[0]);
          return el("li.ae-live-step", { dataset: { step: s.id, done: done ? "yes" : "no" } },
            el("code.ae-tool", {}, s.tool), ` ${s.id} `, done ? "✓" : "…",
            image ? el("img.ae-thumb", { src: this.live.viewUrl(image), alt: `step ${s.id}` }) : null);
        }))))].filter(Boolean));
    if (change.type === "end" && plans.length) {
      // The turn committed (or not): show what the server has now.
      if (this.view === "session" && this.session && plans.some((p) => p.session === this.session.id)) this.reloadSession();
      else if (this.view === "list") this.showList();
    }
  }

  nodeTitle(id) {
    const graph = this.app.graph;
    const node = graph && graph.getNodeById ? graph.getNodeById(Number(id)) || graph.getNodeById(id) : null;
    return node ? `${node.title || node.type} (#${id})` : `node ${id}`;
  }
}

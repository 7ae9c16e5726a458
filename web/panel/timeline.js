// A session's turns as a timeline, newest first: each turn's instruction, result and steps (tool,
// arguments, thumbnail), and the buttons that move the session or open the turn's plan. Turns are
// rendered one page at a time; thumbnails load as they scroll into view (lazy_images.js).

import { argsText, el, when } from "./dom.js";

function stepImage(step) {
  const files = step.files || {};
  return files.image || files.mask || null;
}

export class Timeline {
  // actions: {rollback(turn, step), branch(turn), plan(turn, box), openWorkflow(turn)}
  constructor(sessionsApi, lazy, actions) {
    this.sessionsApi = sessionsApi;
    this.lazy = lazy;
    this.actions = actions;
    this.list = el("ol.ae-timeline", { "aria-label": "turns, newest first" });
  }

  reset() {
    this.list.replaceChildren();
  }

  // Appends turns (given oldest first, as the route sends them) below those already shown.
  append(turns) {
    const fragment = document.createDocumentFragment();
    for (const turn of [...turns].reverse()) fragment.append(this.turn(turn));
    this.list.append(fragment);
  }

  count() {
    return this.list.children.length;
  }

  turn(turn) {
    const n = turn.turn;
    const badges = [];
    if (turn.is_head) badges.push(el("span.ae-badge.ae-current", {}, "current"));
    else if (!turn.on_head_path) badges.push(el("span.ae-badge.ae-offpath", { title: "not on the current branch" }, "other branch"));
    const title = n === 0 ? "Original picture" : turn.instruction || "(no instruction)";
    const from = turn.base ? `from turn ${turn.base.turn}${turn.base.step ? ` step ${turn.base.step}` : ""}` : "";
    const resultUrl = this.sessionsApi.fileUrl(turn.result && turn.result.file);
    const head = el("div.ae-turn-head", {},
      this.lazy.image(resultUrl, `turn ${n} result`, "ae-thumb ae-result"),
      el("div.ae-turn-text", {},
        el("div.ae-turn-title", {}, el("b", {}, `Turn ${n}`), " ", ...badges),
        el("div.ae-instruction", { title }, title),
        el("div.ae-meta", {}, [from, turn.planner && n > 0 ? `planner: ${turn.planner}` : "", when(turn.created_at)]
          .filter(Boolean).join(" · "))));
    const buttons = el("div.ae-turn-actions", {},
      el("button.ae-btn.ae-rollback", { type: "button", title: "Make this turn's result the current image; later turns stay",
        onclick: () => this.actions.rollback(n, null) }, "Roll back here"),
      el("button.ae-btn.ae-branch", { type: "button", title: "The next edit starts a new branch from this turn",
        onclick: () => this.actions.branch(n) }, "Branch"));
    const planBox = el("div.ae-plan-box");
    if (n > 0 && turn.run_id) {
      buttons.append(
        el("button.ae-btn.ae-show-plan", { type: "button", onclick: () => this.actions.plan(n, planBox) }, "Plan"),
        el("button.ae-btn.ae-open-workflow", { type: "button", title: "Load this turn's plan onto the canvas as a workflow",
          onclick: () => this.actions.openWorkflow(n) }, "Open as workflow"));
    }
    const steps = el("ol.ae-steps", {}, (turn.steps || []).map((step) => this.step(n, step)));
    return el("li.ae-turn", { dataset: { turn: String(n) } }, head, steps, buttons, planBox);
  }

  step(turnNumber, step) {
    const url = this.sessionsApi.fileUrl(stepImage(step));
    const args = argsText(step.args);
    const seconds = typeof step.seconds === "number" ? `${step.seconds.toFixed(2)} s` : "";
    return el("li.ae-step", { dataset: { step: step.step } },
      this.lazy.image(url, `turn ${turnNumber} step ${step.step} (${step.tool})`),
      el("div.ae-step-text", {},
        el("div", {}, el("code.ae-tool", {}, step.tool), " ", el("span.ae-meta", {}, `${step.step}${seconds ? ` · ${seconds}` : ""}`)),
        el("div.ae-args", { title: args }, args || "(no arguments)"),
        step.pruned ? el("div.ae-meta", {}, "files removed by retention") : null),
      stepImage(step) && step.files.image ? el("button.ae-btn.ae-small.ae-step-rollback", {
        type: "button", title: "Make this step's image the current one",
        onclick: () => this.actions.rollback(turnNumber, step.step) }, "Go here") : null);
  }
}

// A plan as the routes give it (turn_plan) or as the node event sends it: one line per step.
export function planView(plan) {
  const steps = (plan.plan && plan.plan.steps) || plan.steps || [];
  const notes = (plan.plan && plan.plan.notes) || plan.notes || "";
  return el("div.ae-plan", {},
    el("div.ae-meta", {}, `${plan.planner || ""}${plan.workflow === false ? " · no standalone workflow (uses session memory)" : ""}`),
    el("ol", {}, steps.map((s) => el("li", { dataset: { step: s.id } },
      el("code.ae-tool", {}, s.tool), ` ${s.id}`, el("div.ae-args", {}, argsText(s.args)),
      Object.keys(s.inputs || {}).length ? el("div.ae-meta", {}, `inputs: ${argsText(s.inputs)}`) : null))),
    notes ? el("div.ae-notes", {}, notes) : null);
}

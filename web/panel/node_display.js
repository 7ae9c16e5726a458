// The Agent Edit node shows, while it runs, the plan it made and the image of the latest finished
// step (a DOM widget under its inputs, filled from the live tracker: the pack's agentic_edit.plan
// event and the executed events of its record nodes, whose display_node is the agent node).

import { argsText, el } from "./dom.js";

export const AGENT_NODE = "AgenticEditAgentPlanner";
const WIDGET = "agentic_edit_progress";

export function attachNodeDisplay(node, live) {
  if (!node.addDOMWidget || node.widgets?.some((w) => w.name === WIDGET)) return;
  const box = el("div.ae-node-live", { dataset: { nodeLive: "idle" } },
    el("div.ae-meta", {}, "The plan and each step's image show here while the node runs."));
  const widget = node.addDOMWidget(WIDGET, "agentic_edit_progress", box, {
    serialize: false,
    hideOnZoom: false,
    getMinHeight: () => 60,
    getMaxHeight: () => 420,
  });
  widget.serialize = false; // never part of widgets_values or the prompt
  const id = () => String(node.id);
  let plan = null;
  let latest = null;

  const render = (run) => {
    const steps = plan ? plan.steps : [];
    const planned = new Set(steps.map((s) => s.id));
    const done = new Set();
    if (run) {
      for (const s of run.steps.values()) {
        if (s.node === id() && plan && s.run_id === plan.run_id && planned.has(s.step)) done.add(s.step);
      }
    }
    const status = run ? run.status : "idle";
    const said = { running: "Running", success: "Finished", error: "Failed", interrupted: "Interrupted" }[status] || status;
    box.dataset.nodeLive = status;
    box.replaceChildren(...[
      el("div.ae-node-status", {}, plan ? `${said}: ${done.size}/${steps.length} steps` : said),
      plan ? el("ol.ae-node-plan", {}, steps.map((s) => el("li", { dataset: { step: s.id, done: done.has(s.id) ? "yes" : "no" } },
        `${done.has(s.id) ? "✓" : "·"} ${s.id} ${s.tool}`, el("span.ae-args", {}, ` ${argsText(s.args)}`)))) : null,
      latest ? el("img.ae-node-image", { src: live.viewUrl(latest.image), alt: `step ${latest.step}`,
        dataset: { step: latest.step } }) : null,
      run && run.message && run.status !== "running" ? el("div.ae-live-error", {}, run.message) : null].filter(Boolean));
    node.setDirtyCanvas?.(true, true);
  };

  const unsubscribe = live.subscribe((run, change) => {
    if (change.type === "start") {
      plan = null;
      latest = null;
      return;
    }
    if (change.type === "plan" && change.node === id()) {
      plan = change.plan;
      latest = null;
      render(run);
    } else if (change.type === "step" && change.node === id() && change.image && change.step !== "result") {
      const kind = /_mask(_\d+)?\.png$/.test(change.image.filename) ? "mask" : "image";
      if (kind === "image" || !latest || latest.step !== change.step) latest = { step: change.step, image: change.image };
      render(run);
    } else if (change.type === "end" && plan) {
      render(run);
    }
  });
  const removed = node.onRemoved;
  node.onRemoved = function () {
    unsubscribe();
    return removed?.apply(this, arguments);
  };
}

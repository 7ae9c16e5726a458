// What the running prompt is doing, from ComfyUI's websocket events (execution_start, executing,
// progress, executed, execution_success/error/interrupted) and the pack's own agentic_edit.plan.
// One tracker per page; the panel and the agent nodes on the canvas both listen to it.

export const PLAN_EVENT = "agentic_edit.plan";

// Record nodes write "<step>_image.png", "<step>_mask_1.png", ...; the trace writes "result_image.png".
const STEP_FILE = /^(.+?)_(image|mask|boxes)(?:_\d+)?\.(png|json)$/;

export function stepOfFile(filename) {
  const match = STEP_FILE.exec(filename || "");
  return match ? { step: match[1], kind: match[2] } : null;
}

function runOfSubfolder(subfolder) {
  const match = /agentic_edit\/runs\/([^/]+)$/.exec(subfolder || "");
  return match ? match[1] : null;
}

export class LiveRun {
  constructor(api) {
    this.api = api;
    this.listeners = new Set();
    this.run = null; // {prompt_id, status, node, progress, plans: Map(node -> plan), images: Map(run_id -> [..])}
    const on = (type, fn) => api.addEventListener(type, (e) => {
      try {
        fn(e.detail);
      } catch (err) {
        console.error("agentic_edit: live progress", type, err);
      }
    });
    on("execution_start", (d) => this.start(d && d.prompt_id));
    on("executing", (node) => this.executing(node));
    on("progress", (d) => this.progress(d));
    on("progress_state", (d) => this.progressState(d));
    on("executed", (d) => this.executed(d));
    on(PLAN_EVENT, (d) => this.plan(d));
    on("execution_success", (d) => this.end(d, "success"));
    on("execution_error", (d) => this.end(d, "error", d && d.exception_message));
    on("execution_interrupted", (d) => this.end(d, "interrupted"));
  }

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit(change) {
    for (const fn of this.listeners) {
      try {
        fn(this.run, change);
      } catch (err) {
        console.error("agentic_edit: live listener", err);
      }
    }
  }

  ensure(promptId) {
    if (!this.run || (promptId && this.run.prompt_id && this.run.prompt_id !== promptId)) {
      this.start(promptId);
    }
    return this.run;
  }

  start(promptId) {
    this.run = { prompt_id: promptId || null, status: "running", node: null, progress: null, plans: new Map(),
      steps: new Map(), message: "", started: Date.now() };
    this.emit({ type: "start" });
  }

  executing(node) {
    if (!this.run || node === null || node === undefined) return;
    this.run.node = String(node);
    this.run.progress = null;
    this.emit({ type: "executing", node: this.run.node });
  }

  progress(d) {
    if (!d) return;
    const run = this.ensure(d.prompt_id);
    run.progress = { value: d.value, max: d.max, node: d.node };
    this.emit({ type: "progress" });
  }

  // V3 nodes report progress only this way: every node's state; the running one is shown.
  progressState(d) {
    if (!d || !d.nodes) return;
    const running = Object.values(d.nodes).find((n) => n && n.state === "running" && n.max > 1);
    if (!running) return;
    const run = this.ensure(d.prompt_id);
    run.progress = { value: running.value, max: running.max, node: running.display_node_id || running.node_id };
    this.emit({ type: "progress" });
  }

  plan(d) {
    if (!d) return;
    const run = this.ensure(d.prompt_id);
    run.plans.set(String(d.node), d);
    this.emit({ type: "plan", node: String(d.node), plan: d });
  }

  // A record node's images: the step they belong to, shown on its agent node (display_node).
  executed(d) {
    if (!d || !d.output) return;
    const run = this.ensure(d.prompt_id);
    const node = String(d.display_node || d.node);
    for (const image of d.output.images || []) {
      const runId = runOfSubfolder(image.subfolder);
      const step = stepOfFile(image.filename);
      if (!runId || !step) continue;
      const key = `${node}:${step.step}`;
      const known = run.steps.get(key) || { node, run_id: runId, step: step.step, images: [] };
      known.images.push({ ...image, kind: step.kind });
      run.steps.set(key, known);
      this.emit({ type: "step", node, step: step.step, image, run_id: runId });
    }
  }

  end(d, status, message = "") {
    const run = this.ensure(d && d.prompt_id);
    run.status = status;
    run.message = message || "";
    run.node = null;
    this.emit({ type: "end", status, message });
  }

  viewUrl(image) {
    const query = new URLSearchParams({ filename: image.filename, subfolder: image.subfolder || "",
      type: image.type || "output" });
    return this.api.apiURL(`/view?${query}`);
  }
}

// Agentic Edit in ComfyUI's frontend: a sidebar tab with the sessions (turns, steps, undo/redo,
// rollback, branch, "open as workflow", live progress) and the Agent Edit node's plan and latest step
// image drawn on the node while it runs. Plain ES modules on the frontend's extension API.

import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { LiveRun } from "./panel/live.js";
import { AGENT_NODE, attachNodeDisplay } from "./panel/node_display.js";
import { SessionsPanel } from "./panel/panel.js";
import { injectStyles } from "./panel/styles.js";

function register() {
  const live = new LiveRun(api);
  const panel = new SessionsPanel(app, api, live);

  app.registerExtension({
    name: "agentic_edit.panel",

    async setup() {
      injectStyles();
      app.extensionManager.registerSidebarTab({
        id: "agentic-edit",
        icon: "pi pi-history",
        title: "Agentic Edit",
        tooltip: "Agentic Edit sessions: turns, steps, undo and the plan as a workflow",
        type: "custom",
        render: (element) => panel.mount(element),
        destroy: () => panel.destroy(),
      });
      window.__agenticEditPanel = { panel, live }; // for tests and for a look from the console
    },

    async nodeCreated(node) {
      if (node.comfyClass === AGENT_NODE) attachNodeDisplay(node, live);
    },
  });
}

// If ComfyUI serves this folder under two URLs (the pack declared both by WEB_DIRECTORY and by
// pyproject's [tool.comfy] web, or installed twice), the frontend imports this file twice: one registers.
if (!window.__agenticEditLoaded) {
  window.__agenticEditLoaded = true;
  register();
}

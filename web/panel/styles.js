// The panel's and the node widget's styles, scoped under their own classes; colours follow ComfyUI's
// theme variables so light and dark palettes both work.

const CSS = `
.agentic-edit-panel { padding: 8px; box-sizing: border-box; font-size: 13px;
  color: var(--fg-color, #ddd); }
.agentic-edit-panel .ae-header { display: flex; justify-content: space-between; align-items: center; margin-bottom: 6px; }
.agentic-edit-panel .ae-title { font-weight: bold; font-size: 15px; }
.agentic-edit-panel .ae-btn { background: var(--comfy-input-bg, #333); color: inherit; border: 1px solid var(--border-color, #555);
  border-radius: 4px; padding: 2px 8px; cursor: pointer; margin: 2px 4px 2px 0; }
.agentic-edit-panel .ae-btn:disabled { opacity: 0.45; cursor: default; }
.agentic-edit-panel .ae-small { font-size: 11px; padding: 0 6px; }
.agentic-edit-panel .ae-error, .agentic-edit-panel .ae-gone { background: #5a1d1d; color: #ffd7d7; border-radius: 4px; padding: 6px; margin: 6px 0; }
.agentic-edit-panel .ae-status { min-height: 1em; opacity: 0.8; margin: 4px 0; }
.agentic-edit-panel .ae-meta { opacity: 0.7; font-size: 11px; }
.agentic-edit-panel .ae-sessions, .agentic-edit-panel .ae-timeline, .agentic-edit-panel .ae-steps { list-style: none; margin: 0; padding: 0; }
.agentic-edit-panel .ae-session-open { display: flex; gap: 8px; width: 100%; text-align: left; background: none; border: 0;
  color: inherit; padding: 4px; cursor: pointer; border-bottom: 1px solid var(--border-color, #444); }
.agentic-edit-panel .ae-session-open:hover { background: var(--comfy-input-bg, #333); }
.agentic-edit-panel .ae-session-text { display: flex; flex-direction: column; min-width: 0; }
.agentic-edit-panel .ae-thumb { width: 56px; height: 56px; object-fit: contain; background: #0003; flex: none; border-radius: 3px; }
.agentic-edit-panel .ae-thumb.ae-missing, .agentic-edit-panel .ae-thumb.ae-broken { outline: 1px dashed #a55; }
.agentic-edit-panel .ae-head { display: flex; gap: 8px; align-items: center; margin: 4px 0; }
.agentic-edit-panel .ae-head-image { width: 96px; height: 96px; }
.agentic-edit-panel .ae-turn { border-left: 3px solid var(--border-color, #555); padding: 4px 0 4px 8px; margin: 8px 0; }
.agentic-edit-panel .ae-turn-head { display: flex; gap: 8px; }
.agentic-edit-panel .ae-turn-text { min-width: 0; }
.agentic-edit-panel .ae-instruction { overflow: hidden; text-overflow: ellipsis; }
.agentic-edit-panel .ae-badge { font-size: 10px; border-radius: 3px; padding: 0 4px; margin-left: 4px; }
.agentic-edit-panel .ae-current { background: #2d6a2d; }
.agentic-edit-panel .ae-offpath { background: #555; }
.agentic-edit-panel .ae-step { display: flex; gap: 6px; align-items: center; margin: 4px 0 4px 16px; }
.agentic-edit-panel .ae-step .ae-thumb { width: 40px; height: 40px; }
.agentic-edit-panel .ae-step-text { min-width: 0; flex: 1; }
.agentic-edit-panel .ae-args { font-family: monospace; font-size: 11px; opacity: 0.85; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.agentic-edit-panel .ae-plan { background: #0002; padding: 4px; border-radius: 3px; }
.agentic-edit-panel .ae-live { border: 1px solid var(--border-color, #555); border-radius: 4px; padding: 6px; margin-bottom: 6px; }
.agentic-edit-panel .ae-live[data-status=error] { border-color: #a33; }
.agentic-edit-panel .ae-progress { width: 100%; }
.agentic-edit-panel .ae-live-steps { margin: 2px 0; padding-left: 18px; }
.agentic-edit-panel .ae-live-step .ae-thumb { width: 32px; height: 32px; vertical-align: middle; }
.ae-live-error { color: #ff9c9c; white-space: pre-wrap; }
.ae-node-live { font-size: 11px; color: var(--fg-color, #ddd); overflow: hidden; display: flex; flex-direction: column; gap: 2px; }
.ae-node-live .ae-node-plan { margin: 0; padding-left: 4px; list-style: none; }
.ae-node-live .ae-node-plan li[data-done=yes] { color: #8fd18f; }
.ae-node-live .ae-args { opacity: 0.7; font-family: monospace; }
.ae-node-live .ae-node-image { max-width: 100%; max-height: 240px; object-fit: contain; align-self: flex-start; }
`;

export function injectStyles() {
  if (document.getElementById("agentic-edit-styles")) return;
  const style = document.createElement("style");
  style.id = "agentic-edit-styles";
  style.textContent = CSS;
  document.head.append(style);
}

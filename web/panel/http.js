// Calls to the pack's /agentic_edit/ routes through ComfyUI's api (which adds the /api prefix and
// any auth headers). Every failure becomes an ApiError that says which call failed and why, with
// the route's own message when it gave one ({"error": ..., "kind": ...}).

export class ApiError extends Error {
  constructor(what, status, message, kind) {
    super(`${what}: ${message}${status ? ` (HTTP ${status})` : ""}`);
    this.status = status;
    this.kind = kind || "";
    this.reason = message;
  }

  get sessionGone() {
    return this.status === 404 && this.kind === "SessionNotFound";
  }
}

const ROOT = "/agentic_edit/sessions";

export function sessionPath(sessionId, rest = "") {
  return `${ROOT}/${encodeURIComponent(sessionId)}${rest}`;
}

export class SessionsApi {
  constructor(api) {
    this.api = api;
  }

  async call(what, path, options = {}) {
    let response;
    try {
      response = await this.api.fetchApi(path, { cache: "no-store", ...options });
    } catch (err) {
      throw new ApiError(what, 0, `the server did not answer (${err.message || err})`);
    }
    let body = null;
    const text = await response.text();
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!response.ok) {
      const message = (body && body.error) || text.slice(0, 200) || response.statusText || "request failed";
      throw new ApiError(what, response.status, message, body && body.kind);
    }
    if (body === null) throw new ApiError(what, response.status, "the answer was not JSON");
    return body;
  }

  post(what, path, payload) {
    return this.call(what, path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(payload || {}),
    });
  }

  sessions() {
    return this.call("Listing the sessions", ROOT).then((b) => b.sessions || []);
  }

  // One page of turns, newest last: `before` a turn number (older turns), `limit` how many.
  session(id, { before = null, limit = 30 } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== null) query.set("before", String(before));
    return this.call(`Loading session ${id}`, sessionPath(id, `?${query}`));
  }

  undo(id) {
    return this.post(`Undo in session ${id}`, sessionPath(id, "/undo"), { count: 1 });
  }

  redo(id) {
    return this.post(`Redo in session ${id}`, sessionPath(id, "/redo"), { count: 1 });
  }

  rollback(id, turn, step = null) {
    const body = step ? { turn, step } : { turn };
    return this.post(`Rolling session ${id} back to turn ${turn}`, sessionPath(id, "/rollback"), body);
  }

  branch(id, turn) {
    return this.post(`Branching session ${id} from turn ${turn}`, sessionPath(id, "/branch"), { turn });
  }

  plan(id, turn) {
    return this.call("Loading the plan", sessionPath(id, `/turns/${turn}/plan`));
  }

  workflow(id, turn) {
    return this.call("Opening the workflow", sessionPath(id, `/turns/${turn}/workflow`));
  }

  remove(id) {
    return this.call(`Deleting session ${id}`, sessionPath(id), { method: "DELETE" });
  }

  // A /view URL the routes gave, as the browser must ask for it (ComfyUI may live under a sub-path).
  fileUrl(file) {
    if (!file || !file.url) return null;
    return this.api.apiURL ? this.api.apiURL(file.url) : `/api${file.url}`;
  }
}

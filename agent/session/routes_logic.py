"""What the ``/agentic_edit/sessions...`` HTTP routes do, as plain functions over a ``SessionStore``
that return JSON-ready dicts (the routes only parse the request and send the answer; tests call
these directly). Errors are ``SessionError`` subclasses; ``http_status`` maps them to codes.

Files are named the way ComfyUI's ``/view`` wants them (``filename``, ``subfolder``, ``type``)
when the store lives under ComfyUI's output folder (``output_root``), else by path.
"""

from __future__ import annotations

from pathlib import Path

from . import errors, navigation
from .files import check_session_id
from .memory import Route
from .state import Checkpoint, SessionInfo, SessionState


def http_status(exc: Exception) -> int:
    """The HTTP status for an error of a session operation (500 for anything unexpected)."""
    for kind, status in ((errors.SessionNotFound, 404), (errors.TurnNotFound, 404), (errors.ArtifactNotFound, 404),
                         (errors.SessionBusy, 409), (errors.TurnExpired, 409), (errors.NothingToUndo, 409),
                         (errors.NothingToRedo, 409), (errors.SessionStorageError, 507),
                         (errors.SessionSchemaError, 500), (errors.SessionError, 400), (ValueError, 400)):
        if isinstance(exc, kind):
            return status
    return 500


def parse_int(value, name: str, minimum: int = 0) -> int:
    """A whole number from a query parameter or JSON body ("2" or 2), or a clear ``SessionError``."""
    if isinstance(value, bool):
        value = None
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < minimum:
        raise errors.SessionError(f"{name} must be a whole number of {minimum} or more, not {value!r}")
    return number


def file_ref(store, session_id: str, relative: str | None, output_root=None) -> dict | None:
    """How the panel fetches a file: ``/view`` arguments under ComfyUI's output folder, else a path."""
    if relative is None:
        return None
    path = store.session_dir(session_id) / relative
    if output_root is not None:
        try:
            inner = path.resolve().relative_to(Path(output_root).resolve())
        except ValueError:
            inner = None
        if inner is not None:
            return {"filename": inner.name, "subfolder": inner.parent.as_posix(), "type": "output"}
    return {"path": str(path)}


def _head(state: SessionState) -> dict:
    head = state.head
    return {"artifact": head.artifact, "turn": head.turn, "step": head.step, "label": head.label}


def _summary(store, info: SessionInfo, output_root) -> dict:
    head_file = None
    if info.head is not None:
        head_file = file_ref(store, info.id, store.artifact(info.id, info.head).file, output_root)
    return {"id": info.id, "title": info.title, "created_at": info.created_at, "updated_at": info.updated_at,
            "version": info.version, "turns": info.turns, "bytes": info.bytes,
            "head": {"artifact": info.head, "turn": info.head_turn, "step": info.head_step, "file": head_file}}


def list_sessions(store, output_root=None) -> list[dict]:
    """Every session, most recently changed first, with its current image."""
    return [_summary(store, info, output_root) for info in store.list_sessions()]


def session_detail(store, session_id: str, output_root=None) -> dict:
    """A session's turns (oldest first), each with its steps and their files, regions, references,
    which checkpoint it edited and which turns branched from it; where the head is; what undo and
    redo would do."""
    state = store.state(check_session_id(session_id))
    on_path = {t.number for t, _ in state.lineage(state.info.head)}

    def ref(artifact) -> dict | None:
        return None if artifact is None else file_ref(store, session_id, artifact.file, output_root)

    turns = []
    for number, turn in sorted(state.turns.items()):
        arts = state.turn_artifacts(number)
        by_step = {}
        for a in arts:
            if a.role == "step":
                by_step.setdefault(a.step, {})[a.kind] = a
        steps = [{"step": s.step, "tool": s.tool, "args": s.args, "inputs": s.inputs, "text": s.text,
                  "seconds": s.seconds,
                  "files": {kind: ref(a) for kind, a in by_step.get(s.step, {}).items()},
                  "artifacts": {kind: a.id for kind, a in by_step.get(s.step, {}).items()},
                  "pruned": any(a.pruned for a in by_step.get(s.step, {}).values())} for s in turn.steps]
        base = state.checkpoint(turn.base) if turn.base in state.artifacts else None
        turns.append({
            "turn": number, "instruction": turn.instruction, "planner": turn.planner, "run_id": turn.run_id,
            "created_at": turn.created_at,
            "base": None if base is None else {"artifact": base.artifact, "turn": base.turn, "step": base.step,
                                               "label": base.label},
            "result": {"artifact": turn.result, "file": ref(state.artifacts.get(turn.result))},
            "steps": steps,
            "regions": [{"name": a.name, "label": a.label, "box": list(a.box) if a.box else None,
                         "state": a.meta.get("state"), "was": a.meta.get("was", []), "artifact": a.id,
                         "file": ref(a)} for a in arts if a.kind == "mask" and a.name],
            "references": [{"name": a.name, "artifact": a.id, "file": ref(a)} for a in arts if a.kind == "reference"],
            "children": [t.number for t in state.children(turn.result)] if turn.result else [],
            "on_head_path": number in on_path, "is_head": state.info.head == turn.result,
        })
    return {**_summary(store, state.info, output_root), "head": {**_head(state), "file": ref(
        state.artifacts[state.info.head])}, "can_undo": _can(navigation.undo_target, state),
            "can_redo": _can(navigation.redo_target, state), "turns": turns}


def _can(target, state) -> bool:
    try:
        target(state)
        return True
    except errors.SessionError:
        return False


def _moved(store, session_id: str, checkpoint: Checkpoint, action: str, output_root) -> dict:
    info = store.session(session_id)
    art = store.artifact(session_id, checkpoint.artifact)
    return {"action": action, "version": info.version,
            "head": {"artifact": checkpoint.artifact, "turn": checkpoint.turn, "step": checkpoint.step,
                     "label": checkpoint.label, "file": file_ref(store, session_id, art.file, output_root)}}


def undo(store, session_id: str, count=1, *, owner=None, output_root=None) -> dict:
    checkpoint = store.undo(session_id, parse_int(count, "count", 1), owner=owner)
    return _moved(store, session_id, checkpoint, "undo", output_root)


def redo(store, session_id: str, count=1, *, owner=None, output_root=None) -> dict:
    checkpoint = store.redo(session_id, parse_int(count, "count", 1), owner=owner)
    return _moved(store, session_id, checkpoint, "redo", output_root)


def rollback(store, session_id: str, turn, step: str | None = None, *, owner=None, output_root=None) -> dict:
    """The head goes to a turn (0: the original) or one of its steps; the turns after it stay."""
    checkpoint = store.rollback(session_id, parse_int(turn, "turn"), step or None, owner=owner)
    return _moved(store, session_id, checkpoint, "rollback", output_root)


def branch(store, session_id: str, turn, step: str | None = None, *, owner=None, output_root=None) -> dict:
    """Like rollback, said the way the panel offers it: the next edit starts a branch from there."""
    answer = rollback(store, session_id, turn, step, owner=owner, output_root=output_root)
    label = answer["head"]["label"]
    return {**answer, "action": "branch", "note": f"the next edit starts a new branch from {label}; "
                                                  "the later turns stay and can be reached again"}


def apply_route(store, session_id: str, route: Route, *, owner=None, output_root=None) -> dict:
    """Carries out a route that only navigates ("undo", "go back to turn 1"): the head goes to the
    checkpoint the route named, unless the session changed since it was computed."""
    if route.instruction:
        raise errors.SessionError("this route carries an edit to plan; start a turn for it instead")
    if route.action == "edit":
        raise errors.SessionError("the instruction is empty: say what to change, or 'undo', 'redo', "
                                  "'go back to turn N'")
    checkpoint = store.checkout(session_id, route.base.artifact, action=route.action, owner=owner,
                                expected_version=route.version)
    return _moved(store, session_id, checkpoint, route.action, output_root)


def artifact_file(store, session_id: str, artifact_id) -> Path:
    """The file of an artifact of this session (a route that serves it checks nothing else)."""
    return store.artifact_path(check_session_id(session_id), parse_int(artifact_id, "artifact"))


# --- what the web panel reads besides the session (additive: the plan, the exported workflow) -----
PAGE_LIMIT_MAX = 500


def detail_page(detail: dict, before=None, limit=None) -> dict:
    """``detail`` with only the newest ``limit`` turns numbered below ``before`` (the panel pages a long
    session from the end); ``turns_total`` and ``more_before`` tell it whether to ask for more."""
    turns = detail["turns"]
    if before is not None:
        cut = parse_int(before, "before")
        turns = [t for t in turns if t["turn"] < cut]
    if limit is not None:
        count = parse_int(limit, "limit", 1)
        if count > PAGE_LIMIT_MAX:
            raise errors.SessionError(f"limit must be at most {PAGE_LIMIT_MAX}, not {count}")
        turns = turns[-count:]
    more = bool(turns) and turns[0]["turn"] > min((t["turn"] for t in detail["turns"]), default=0)
    return {**detail, "turns": turns, "turns_total": len(detail["turns"]), "more_before": more}


def _turn_folder(store, session_id: str, turn, output_root) -> tuple[int, Path]:
    """The run folder of one turn (``<output>/agentic_edit/runs/<run_id>``), or ``TurnNotFound``."""
    from ..trace import run_dir

    number = parse_int(turn, "turn")
    state = store.state(check_session_id(session_id))
    info = state.turns.get(number)
    if info is None:
        raise errors.TurnNotFound(f"session {session_id} has no turn {number} (it has 0 to {max(state.turns)})")
    if not info.run_id or output_root is None:
        raise errors.ArtifactNotFound(f"turn {number} of session {session_id} has no run folder "
                                      "(turn 0 is the original picture; navigation turns run no plan)")
    return number, run_dir(output_root, info.run_id)


def _read_json(path: Path, number: int):
    import json

    if not path.is_file():
        raise errors.ArtifactNotFound(f"turn {number} has no {path.name} in {path.parent} (the run folder was moved "
                                      "or deleted, or the run wrote none)")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise errors.SessionStorageError(f"turn {number}: cannot read {path}: {exc}") from None


def turn_plan(store, session_id: str, turn, output_root=None) -> dict:
    """The plan a turn ran (instruction, planner, steps with their tools, args and inputs, notes) and
    whether it was exported as a standalone workflow (a plan that reads stored regions is not)."""
    number, folder = _turn_folder(store, session_id, turn, output_root)
    header = _read_json(folder / "plan.json", number)
    return {"turn": number, "run_id": folder.name, "instruction": header.get("instruction"),
            "planner": header.get("planner"), "plan": header.get("plan", {}),
            "workflow": (folder / "workflow.json").is_file()}


def turn_workflow(store, session_id: str, turn, output_root=None, kind: str = "ui") -> dict:
    """The turn's plan as an ordinary workflow: ``ui`` (opens on the canvas) or ``api`` (for /prompt)."""
    if kind not in ("ui", "api"):
        raise errors.SessionError(f"format must be 'ui' or 'api', not {kind!r}")
    number, folder = _turn_folder(store, session_id, turn, output_root)
    name = "workflow.json" if kind == "ui" else "workflow_api.json"
    if not (folder / name).is_file() and (folder / "plan.json").is_file():
        raise errors.ArtifactNotFound(f"turn {number} of session {session_id} has no standalone workflow: its "
                                      "plan reads regions stored in the session (\"it\", \"the cat\"), which only "
                                      "the session can replay")
    return _read_json(folder / name, number)


def delete_session(store, session_id: str, *, owner=None) -> dict:
    """Deletes a session with its turns and files (refused while another client's turn runs)."""
    store.delete_session(check_session_id(session_id), owner=owner)
    return {"deleted": session_id}

"""One turn of a session, as the Agent Edit node runs it when given a ``session_id``.

* The session: an id that does not exist yet starts one from the node's image (its turn 0). For a
  session that exists, the image is not edited when it is one of the session's own images (the
  original still wired on the canvas, or an earlier result): the turn edits the session's current
  checkpoint. A different picture starts the turn from that picture (a new root in the session,
  with no regions remembered for it).
* Navigation: "undo", "redo", "go back to turn 2" move the session and return that image, with no
  plan; "go back to turn 1 and write 'B' at the bottom" moves and then edits from there.
* An edit is planned with the session's memory (``history``: "it" is the region the last turn made),
  its ``session:<name>`` sources are bound to the stored masks, boxes and images, and the expanded
  run ends with the Commit Turn node after its trace, which makes the result the new checkpoint.
  A run that fails never commits: the session stays at its last checkpoint (session_host.py).
"""

from __future__ import annotations

import json
import logging

from comfy_api.latest import io
from comfy_execution.graph_utils import GraphBuilder

from ..agent.compile import compile_plan
from ..agent.plan import SESSION_PREFIX, PlanError, validate
from ..agent.planners import ImageInfo, PlannerDeclined, get_planner
from ..agent.session import parse_navigation, route_turn, routes_logic
from ..agent.session.errors import SessionNotFound
from ..agent.session.files import check_session_id
from ..agent.trace import new_run_id, record_step, run_dir, write_plan, write_trace
from ..catalogue import all_tools
from ..catalogue.session import COMMIT_TURN
from .convert import image_batch_to_arrays
from .session_host import (artifact_input, end_stale_turns, forget_turn, image_tensor, output_root, remember_turn,
                           sessions_store, turn_owner)
from .web_events import announce_plan

log = logging.getLogger(__name__)

COMMIT_NODE = "_commit"  # not a valid step id (those start with a letter), so it never clashes
NAVIGATION_PLANNER = "session"


def _plan(instruction: str, rgb, settings: dict, references: int, history: dict | None):
    """The planner's plan with session memory, checked against the session's names."""
    from .agent import PlanningError, chat_planner

    tools = all_tools()
    labels = tuple(r["label"] for r in (history or {}).get("regions", []) if r.get("state") != "removed")
    info = ImageInfo(width=rgb.shape[1], height=rgb.shape[0], labels=labels, pixels=rgb)
    planner = settings["planner"]
    chosen = (get_planner("offline", tools=tools) if planner == "offline"
              else chat_planner(planner, settings["base_url"], settings["model"], settings["temperature"],
                                settings["local_model"]))
    kinds = (history or {}).get("artifacts") or None
    try:
        plan = chosen.plan(instruction, info, references=references, history=history)
        return validate(plan, tools, references=references, session=kinds), chosen.name
    except PlannerDeclined as declined:
        raise PlanningError(f"agent ({planner} planner): {declined.reason}") from None
    except PlanError as err:
        raise PlanningError(f"agent ({planner} planner): the plan does not fit this session: "
                            f"{' '.join(err.problems)}") from None


def _session_refs(plan) -> list[str]:
    return sorted({ref for step in plan.steps for ref in step.inputs.values() if ref.startswith(SESSION_PREFIX)})


def _navigate(store, sid: str, route, instruction: str) -> io.NodeOutput:
    """Carries out "undo" / "go back to turn 2" and returns that image, with a run folder of no
    steps (so a client that follows run folders finds the result like any other turn's)."""
    if route.action == "edit":  # an empty instruction: show where the session is
        head = store.session(sid).head
        moved = {"action": "show", "head": {"artifact": head, "label": store.head(sid).label}}
    else:
        moved = routes_logic.apply_route(store, sid, route, owner=turn_owner())
    rgb = store.load_image(sid, moved["head"]["artifact"])
    run_id = new_run_id("session")
    folder = run_dir(output_root(), run_id)
    described = {"session": sid, "navigation": moved["action"], "reason": route.reason, "head": moved["head"]}
    write_plan(folder, instruction, {"steps": [], "instruction": instruction, "notes": route.reason},
               NAVIGATION_PLANNER, extra={"session": described})
    record = record_step(folder, "result", "result", {}, images=[rgb])
    trace = folder / "trace.json"
    write_trace(folder, record["files"]["image"])
    subfolder = folder.relative_to(output_root()).as_posix()
    shown = {"images": [{"filename": n, "subfolder": subfolder, "type": "output"} for n in record["files"]["image"]]}
    log.info("session %s: %s -> %s", sid, moved["action"], moved["head"]["label"])
    return io.NodeOutput(image_tensor(rgb), json.dumps(described, indent=1), str(trace), ui=shown)


def _open_session(store, sid: str, rgb, instruction: str) -> bool:
    """True when the session was created now, from ``rgb``."""
    try:
        store.session(sid)
        return False
    except SessionNotFound:
        store.create_session(rgb, session_id=sid, title=instruction.strip()[:80])
        log.info("session %s started from the node's image", sid)
        return True


def session_turn(image, instruction: str, settings: dict, reference, session_id: str) -> io.NodeOutput:
    """The Agent Edit node's work for one turn of session ``session_id``; see the module docstring.
    ``settings``: the node's planner and model settings by name."""
    store = sessions_store()
    sid = check_session_id(session_id.strip())
    end_stale_turns(store, sid)
    given = image_batch_to_arrays(image)[0]
    created = _open_session(store, sid, given, instruction)
    route = route_turn(store, sid, instruction)
    if not route.instruction:
        return _navigate(store, sid, route, instruction)

    # A picture that is none of the session's images starts the turn from itself.
    fresh = not created and parse_navigation(instruction) is None and store.find_checkpoint(sid, given) is None
    references = [] if reference is None else [image_batch_to_arrays(reference, "reference")[0]]
    run_id = new_run_id("edit")
    if fresh:
        ticket = store.start_turn(sid, instruction=route.instruction, image=given, run_id=run_id,
                                  owner=turn_owner(), references=references)
        rgb, history, bindings = given, None, {}
    else:
        ticket = store.start_turn(sid, instruction=route.instruction, base=route.base.artifact, run_id=run_id,
                                  exposed=route.exposed, owner=turn_owner(), references=references)
        rgb, history, bindings = store.load_image(sid, route.base.artifact), route.history, route.bindings
    remember_turn(store, sid, ticket.token)
    try:
        return _expand_turn(store, sid, ticket.token, run_id, rgb, route.instruction, instruction, settings,
                            reference, history, bindings)
    except BaseException:
        store.abort_turn(sid, ticket.token)  # nothing ran: the session is as it was
        forget_turn(store, sid, ticket.token)
        raise


def _expand_turn(store, sid, token, run_id, rgb, planned, said, settings, reference, history, bindings):
    from .agent import (CONTINUE_NODE, export_plan_workflows, expand, first_stage, first_stage_checks,
                        grounding_overrides)

    plan, planner_name = _plan(planned, rgb, settings, 0 if reference is None else 1, history)
    folder = run_dir(output_root(), run_id)
    write_plan(folder, planned, plan.to_dict(), planner_name,
               extra={"session": {"session": sid, "said": said}})
    announce_plan(run_id, planned, plan.to_dict(), planner_name, session_id=sid)  # shown on the node
    image = image_tensor(rgb)
    refs = _session_refs(plan)
    sources = {"image": image, "reference": reference}
    for ref in refs:
        bound = bindings[ref[len(SESSION_PREFIX):]]
        sources[ref] = artifact_input(store, sid, bound.artifact, bound.kind)
    models = {"grounding_model": settings["grounding_model"], "sam_model": settings["sam_model"]}
    tools = all_tools()
    if not refs:  # a plan that uses stored masks needs the session to replay: no standalone workflow
        export_plan_workflows(plan, models, folder, run_id, {"image": image, "reference": reference})
    def commit(trace_link) -> dict:  # after the trace: the run is complete when it runs
        return {"class_type": COMMIT_TURN.node_id, "inputs": {"session_id": sid, "token": token,
                                                              "trace_path": trace_link}}

    prefix = GraphBuilder.alloc_prefix()
    # The two-stage run (grounding checked first, AgentContinue goes on) binds only the instruction's
    # images, so a plan that uses session memory runs in one stage.
    checks = first_stage_checks(plan, tools) if settings["planner"] != "offline" and not refs else []
    if checks:
        graph = first_stage(plan, tools, checks, prefix, settings, planned, run_id,
                            with_reference=reference is not None)
        graph[COMMIT_NODE] = commit([CONTINUE_NODE, 2])
        expanded, (output, plan_json, trace) = expand(
            graph, ([COMMIT_NODE, 0], [CONTINUE_NODE, 1], [COMMIT_NODE, 1]), prefix, sources)
        log.info("session %s: %s planned %s -> run %s; grounding %s runs first", sid, planner_name, plan.tool_names,
                 run_id, checks)
        return io.NodeOutput(output, plan_json, trace, expand=expanded)
    overrides = grounding_overrides(plan, tools, "error") if settings["planner"] != "offline" else None
    compiled = compile_plan(plan, tools, run_id=run_id, settings=models, overrides=overrides)
    graph = dict(compiled.graph)
    graph[COMMIT_NODE] = commit(["trace", 0])
    expanded, (output, trace) = expand(graph, ([COMMIT_NODE, 0], [COMMIT_NODE, 1]), prefix, sources)
    log.info("session %s: %s planned %s -> run %s (memory: %s)", sid, planner_name, plan.tool_names, run_id,
             ", ".join(refs) or "none used")
    return io.NodeOutput(output, plan.to_json(indent=1), trace, expand=expanded)

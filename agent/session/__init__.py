"""Session memory: multi-turn editing with checkpoints, undo/redo/rollback/branches, named regions,
and the compact history a planner reads. SQLite (WAL) plus PNG files; no ComfyUI, no engines.

Typical turn (what the AgentPlanner node does)::

    store = shared_store(output_dir / SESSIONS_SUBFOLDER)
    info = store.create_session(image)                      # or store.session(session_id)
    route = route_turn(store, info.id, instruction)         # which checkpoint, what is left to plan
    if not route.instruction:                               # "undo", "go back to turn 1"
        routes_logic.apply_route(store, info.id, route)
    else:
        ticket = store.start_turn(info.id, instruction=route.instruction, base=route.base.artifact,
                                  run_id=run_id, exposed=route.exposed)
        plan = planner.plan(route.instruction, image_info, history=route.history)   # validated with route.kinds
        ... ComfyUI runs the plan into the run folder ...
        store.commit_turn(info.id, ticket.token, run_folder)   # or store.abort_turn(...) when it failed
"""

from .commit import CommitResult
from .errors import (ArtifactNotFound, InvalidSessionId, NothingToRedo, NothingToUndo, SessionBusy, SessionError,
                     SessionNotFound, SessionSchemaError, SessionStorageError, TurnExpired, TurnIncomplete,
                     TurnNotFound)
from .memory import Exposed, Navigation, Route, build_history, history_text, parse_navigation, resolve_region, route, \
    route_turn
from .state import Artifact, Checkpoint, SessionInfo, SessionState, StepInfo, TurnInfo
from .store import Retention, SessionStore, TurnTicket, shared_store

SESSIONS_SUBFOLDER = "agentic_edit/sessions"

__all__ = [
    "SessionStore", "shared_store", "Retention", "TurnTicket", "CommitResult", "SESSIONS_SUBFOLDER",
    "Route", "Exposed", "Navigation", "route", "route_turn", "build_history", "history_text", "parse_navigation",
    "resolve_region",
    "Artifact", "Checkpoint", "SessionInfo", "SessionState", "StepInfo", "TurnInfo",
    "SessionError", "InvalidSessionId", "SessionNotFound", "TurnNotFound", "ArtifactNotFound", "NothingToUndo",
    "NothingToRedo", "SessionBusy", "TurnExpired", "TurnIncomplete", "SessionStorageError", "SessionSchemaError",
]

"""Where undo, redo and rollback land, computed on a ``SessionState`` (pure: the store moves the head,
memory uses the same answers to route a turn). Nothing is ever deleted: moving the head only
chooses which checkpoint the next edit starts from, and an edit from an older checkpoint starts a
branch beside the newer turns.

* undo: the checkpoint the current one was edited from (its parent in the tree);
* redo: the most recently visited turn made from the current checkpoint;
* rollback: any turn's result (turn 0 is the original), or the image of one step of a turn.
"""

from __future__ import annotations

from .errors import ArtifactNotFound, NothingToRedo, NothingToUndo, SessionError, TurnNotFound
from .state import Artifact, SessionState


def _count(count, what: str) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SessionError(f"{what} needs a count of 1 or more, not {count!r}")
    return count


def undo_target(state: SessionState, count: int = 1) -> int:
    current = state.info.head
    for done in range(_count(count, "undo")):
        parent = state.parent(current)
        if parent is None:
            where = state.checkpoint(state.info.head).label
            if done == 0:
                raise NothingToUndo(f"nothing to undo: session {state.info.id} is at {where}, where its edits start")
            raise NothingToUndo(f"only {done} edit(s) can be undone from {where}, not {count}; nothing was changed")
        current = parent
    return current


def redo_target(state: SessionState, count: int = 1) -> int:
    current = state.info.head
    for done in range(_count(count, "redo")):
        children = state.children(current)
        if not children:
            where = state.checkpoint(state.info.head).label
            if done == 0:
                raise NothingToRedo(f"nothing to redo: no edit was made from {where} (session {state.info.id})")
            raise NothingToRedo(f"only {done} edit(s) can be redone from {where}, not {count}; nothing was changed")
        current = children[0].result
    return current


def turn_target(state: SessionState, turn, step: str | None = None) -> int:
    """The checkpoint of ``turn`` (its result; 0: the original), or of one of its steps."""
    last = max(state.turns)
    if isinstance(turn, bool) or not isinstance(turn, int) or turn not in state.turns:
        raise TurnNotFound(f"session {state.info.id} has turns 0 (the original) to {last}; there is no turn {turn!r}")
    if step is None:
        return state.turns[turn].result
    images = {a.step: a for a in state.turn_artifacts(turn) if a.role == "step" and a.kind == "image"}
    if step not in images:
        made = ", ".join(sorted(images)) or "none"
        steps = ", ".join(f"{s.step} ({s.tool})" for s in state.turns[turn].steps) or "none"
        raise TurnNotFound(f"turn {turn} has no image from step {step!r}; its steps are: {steps}; the steps that "
                           f"made an image: {made}")
    if images[step].pruned:
        raise TurnNotFound(f"the image of turn {turn}, step {step} was removed by the session's retention setting "
                           f"(it keeps the images of the newest turns' steps); roll back to turn {turn} instead")
    return images[step].id


def checkpoint_target(state: SessionState, artifact_id) -> int:
    art = state.artifacts.get(artifact_id) if isinstance(artifact_id, int) else None
    return usable_checkpoint(art, state.info.id, artifact_id).id


def usable_checkpoint(art: Artifact | None, session_id: str, artifact_id) -> Artifact:
    """``art`` when an edit can start from it: an image of this session that is still on disk."""
    if art is None:
        raise ArtifactNotFound(f"session {session_id} has no artifact {artifact_id!r}")
    if not art.is_checkpoint:
        raise SessionError(f"artifact {art.id} is a {art.kind} ({art.role}), not an image the session can "
                           "continue from")
    if art.pruned:
        raise TurnNotFound(f"artifact {art.id} was removed by the session's retention setting")
    return art

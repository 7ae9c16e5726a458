"""A session read in one go, as plain data: its turns, their steps and artifacts, and the tree of
checkpoints they form. Memory and the routes work on this; only the store reads the database.

Checkpoints form a tree: the original image (turn 0) is the root; a turn edits one checkpoint (its
``base``) and makes another (its ``result``); a step's image is a checkpoint too (rollback to a
step). An image given with a turn instead of a checkpoint is a new root (role ``input``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROOT_ROLES = ("original", "input")
CHECKPOINT_ROLES = ("original", "input", "result", "step")


@dataclass(frozen=True)
class Artifact:
    """One stored file of a session. ``kind``: image | mask | reference; ``role``: original, input,
    result, step (a step's output) or reference. Regions are step masks with a ``name``."""

    id: int
    session_id: str
    turn: int | None
    step: str | None
    kind: str
    role: str
    file: str | None  # relative to the session folder; None once retention removed it
    width: int
    height: int
    name: str | None = None
    label: str | None = None
    box: tuple[float, float, float, float] | None = None  # x, y, width, height
    meta: dict = field(default_factory=dict)
    digest: str | None = None
    bytes: int = 0

    @property
    def pruned(self) -> bool:
        return self.file is None

    @property
    def is_checkpoint(self) -> bool:
        return self.kind == "image" and self.role in CHECKPOINT_ROLES


@dataclass(frozen=True)
class StepInfo:
    step: str
    position: int
    tool: str
    args: dict
    inputs: dict
    text: str | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class TurnInfo:
    number: int
    base: int | None      # the checkpoint artifact it edited (None for turn 0)
    result: int | None    # the checkpoint artifact it made
    instruction: str
    planner: str
    run_id: str | None
    created_at: float
    visited: int
    summary: dict
    steps: tuple[StepInfo, ...] = ()


@dataclass(frozen=True)
class SessionInfo:
    id: str
    title: str
    created_at: float
    updated_at: float
    version: int
    head: int | None          # the current checkpoint (an artifact id)
    head_turn: int | None
    head_step: str | None
    turns: int                # edits so far (turn 0, the original, not counted)
    bytes: int
    settings: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Checkpoint:
    artifact: int
    turn: int | None
    step: str | None = None
    role: str = "result"

    @property
    def label(self) -> str:
        if self.role == "original":
            return "the original image"
        if self.role == "input":
            return f"the image given with turn {self.turn}"
        return f"turn {self.turn}" + (f", step {self.step}" if self.step else "")


@dataclass
class SessionState:
    info: SessionInfo
    turns: dict[int, TurnInfo]
    artifacts: dict[int, Artifact]

    def checkpoint(self, artifact_id: int) -> Checkpoint:
        art = self.artifacts[artifact_id]
        return Checkpoint(art.id, art.turn, art.step if art.role == "step" else None, art.role)

    @property
    def head(self) -> Checkpoint:
        return self.checkpoint(self.info.head)

    def original(self) -> int:
        return self.turns[0].result

    def parent(self, artifact_id: int) -> int | None:
        """The checkpoint that the edit which made ``artifact_id`` started from (None at a root)."""
        art = self.artifacts[artifact_id]
        if art.role in ROOT_ROLES:
            return None
        return self.turns[art.turn].base

    def children(self, artifact_id: int) -> list[TurnInfo]:
        """Turns that edited this checkpoint, most recently visited first (redo takes the first)."""
        found = [t for t in self.turns.values() if t.base == artifact_id and t.number > 0]
        return sorted(found, key=lambda t: (t.visited, t.number), reverse=True)

    def lineage(self, artifact_id: int) -> list[tuple[TurnInfo, str | None]]:
        """The turns whose edits are in this checkpoint, newest first, each with the step it stops at
        (None: the whole turn). Turn 0 ends the list when the chain starts at the original."""
        chain, current, seen = [], artifact_id, set()
        while current is not None and current not in seen:
            seen.add(current)
            art = self.artifacts[current]
            if art.role == "input":
                break
            turn = self.turns[art.turn]
            chain.append((turn, art.step if art.role == "step" else None))
            if art.role == "original":
                break
            current = turn.base
        return chain

    def turn_artifacts(self, number: int) -> list[Artifact]:
        return [a for a in self.artifacts.values() if a.turn == number]

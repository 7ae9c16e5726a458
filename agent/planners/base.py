"""What every planner offers: an instruction (with what is known about the image) in, a validated
``Plan`` out, or ``PlannerDeclined`` saying plainly why not."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..plan import Plan


class PlannerDeclined(Exception):
    """The planner will not plan this instruction; ``reason`` says why, in words for the user."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ImageInfo:
    """What a planner knows about the image being edited.

    ``labels`` are names already known in it (from session memory or an earlier grounding), for
    resolving "it" and "the same one". ``pixels`` is the image itself (a uint8 or float [H, W, 3]
    array) for planners that look at it (a vision LLM); None when only the size is known.
    """

    width: int
    height: int
    labels: tuple[str, ...] = ()
    pixels: Any = field(default=None, compare=False, repr=False)


class Planner(ABC):
    """Turns an instruction into a plan of catalogued tools.

    ``plan`` returns a plan already checked with ``plan.validate`` against the planner's
    catalogue, or raises ``PlannerDeclined``. ``references`` is how many reference images came
    with the instruction (they are ``"reference"``, ``"reference_2"``, ... in the plan).
    ``history`` is the compact session memory of issue 6 (earlier instructions, regions by name);
    planners that cannot use it ignore it.
    """

    name: str = "planner"

    @abstractmethod
    def plan(self, instruction: str, image_info: ImageInfo | None = None, references: int = 0,
             history: Mapping[str, Any] | None = None) -> Plan:
        ...

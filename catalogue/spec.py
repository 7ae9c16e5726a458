"""The one description of every tool: a node's schema, the planner's tool list and the MCP tools
are all derived from these objects, so they cannot drift apart.

This module imports neither ComfyUI nor any engine: the agent reads it to plan, the nodes read it
to build their ComfyUI schema (``nodes/schema.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

# Kinds of value an argument or output can carry. The first group is passed between steps as
# references ("image", "s1.mask"); the second is written literally into a plan or a widget.
LINK_KINDS = ("image", "mask", "boxes", "points")
VALUE_KINDS = ("int", "float", "string", "bool", "choice", "color")
KINDS = LINK_KINDS + VALUE_KINDS


@dataclass(frozen=True)
class Arg:
    """One input of a tool.

    ``choices`` is a sequence, or a zero-argument callable returning one, for lists that depend
    on what is installed (model files, fonts). ``agent`` False hides an argument from the planner
    (it still appears on the node): the planner should not pick, for example, a debug option.
    """

    name: str
    kind: str
    description: str
    default: Any = None
    optional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: Sequence[str] | Callable[[], Sequence[str]] | None = None
    multiline: bool = False
    agent: bool = True
    display_name: str | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"argument {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "choice" and self.choices is None:
            raise ValueError(f"argument {self.name!r}: a 'choice' argument needs choices")

    @property
    def is_link(self) -> bool:
        return self.kind in LINK_KINDS

    def resolved_choices(self) -> list[str]:
        if self.choices is None:
            return []
        values = self.choices() if callable(self.choices) else self.choices
        return list(values)


@dataclass(frozen=True)
class Out:
    """One output of a tool."""

    name: str
    kind: str
    description: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"output {self.name!r}: unknown kind {self.kind!r}; expected one of {KINDS}")


@dataclass(frozen=True)
class Tool:
    """A tool: one node on the canvas, one function the planner may call.

    ``name`` is the planner's and the MCP server's name (snake_case, stable); ``node_id`` is the
    ComfyUI node id (stable forever: saved workflows name it).
    """

    name: str
    node_id: str
    display_name: str
    category: str
    description: str
    args: tuple[Arg, ...]
    outputs: tuple[Out, ...]
    agent: bool = True
    search_aliases: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        # ComfyUI lists required inputs before optional ones; keeping the catalogue in that order
        # makes the node, the planner's schema and /object_info agree argument by argument.
        seen_optional = None
        for a in self.args:
            if a.optional:
                seen_optional = a.name
            elif seen_optional:
                raise ValueError(f"tool {self.name!r}: required argument {a.name!r} comes after optional {seen_optional!r}")

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(f"tool {self.name!r} has no argument {name!r}")

    def output_index(self, name: str) -> int:
        for i, o in enumerate(self.outputs):
            if o.name == name:
                return i
        raise KeyError(f"tool {self.name!r} has no output {name!r}; it has {[o.name for o in self.outputs]}")


NODE_PREFIX = "AgenticEdit"
CATEGORY_ROOT = "agentic_edit"

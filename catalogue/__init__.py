"""The tool catalogue: every tool the pack offers, described once (see ``spec.py``).

Each family of tools lives in its own module (``catalogue/text.py``, ``catalogue/masks.py``, ...)
and is listed in ``_FAMILIES``; ``all_tools()`` returns them in a stable order.
"""

from __future__ import annotations

import importlib

from .spec import Arg, Out, Tool, NODE_PREFIX, CATEGORY_ROOT

# Modules of this package that define tools; each exposes ``TOOLS: tuple[Tool, ...]``.
_FAMILIES = ("boxes", "text", "masks", "edit", "grounding", "segment", "prompts", "inpaint", "insert", "tryon",
             "agent", "trace", "session")


def all_tools() -> list[Tool]:
    tools: list[Tool] = []
    for family in _FAMILIES:
        module = importlib.import_module(f".{family}", __name__)
        tools.extend(module.TOOLS)
    names = [t.name for t in tools]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuntimeError(f"tool names defined twice in the catalogue: {sorted(duplicates)}")
    return tools


def get_tool(name: str) -> Tool:
    for tool in all_tools():
        if tool.name == name or tool.node_id == name:
            return tool
    raise KeyError(f"no tool named {name!r} in the catalogue")


__all__ = ["Arg", "Out", "Tool", "NODE_PREFIX", "CATEGORY_ROOT", "all_tools", "get_tool"]

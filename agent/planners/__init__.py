"""Planners: instruction -> validated ``Plan``. ``get_planner(name)`` builds one by name."""

from __future__ import annotations

from .base import ImageInfo, Planner, PlannerDeclined

PLANNERS = ("offline",)


def get_planner(name: str = "offline", **options) -> Planner:
    """A planner by name; ``options`` go to its constructor (``tools=`` for a catalogue, ...)."""
    if name == "offline":
        from .offline import OfflinePlanner

        return OfflinePlanner(**options)
    raise ValueError(f"unknown planner {name!r}; the planners are: {', '.join(PLANNERS)}")


__all__ = ["ImageInfo", "Planner", "PlannerDeclined", "PLANNERS", "get_planner"]

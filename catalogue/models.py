"""Model choices for COMBO widgets. The engines register the models they know (``ModelSpec``) when
imported, so the list is built lazily, when a node's schema is asked for, never by the planner."""

from __future__ import annotations

import importlib
from typing import Callable


def model_choices(engine_module: str, family: str) -> Callable[[], list[str]]:
    def choices() -> list[str]:
        importlib.import_module(f"..engines.{engine_module}", __package__)
        from ..models import available_choices

        return available_choices(family)

    return choices


def engine_choices(engine_module: str, function: str) -> Callable[[], list[str]]:
    """Choices computed by an engine's own function (e.g. only the inpainting checkpoints)."""

    def choices() -> list[str]:
        module = importlib.import_module(f"..engines.{engine_module}", __package__)
        return list(getattr(module, function)())

    return choices

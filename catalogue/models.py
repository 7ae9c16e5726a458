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

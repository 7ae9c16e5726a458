"""ComfyUI progress and interrupts for engine loops.

Engines take a plain ``progress(step, total)`` callback; this module makes one that drives the
node's progress bar (the legacy ``progress`` message and ``progress_state``) and raises ComfyUI's
interrupt exception at the next step after the user presses Cancel.
"""

from __future__ import annotations

from typing import Callable

import comfy.model_management
import comfy.utils


class BatchProgress:
    """Progress over ``items`` (a batch) of ``steps_per_item`` engine steps each."""

    def __init__(self, items: int, steps_per_item: int = 1):
        self.items = max(1, items)
        self.steps_per_item = max(1, steps_per_item)
        self.bar = comfy.utils.ProgressBar(self.items * self.steps_per_item)

    def for_item(self, index: int) -> Callable[[int, int], None]:
        """The engine callback for batch item ``index``; ``total`` may differ from the estimate."""

        def report(step: int, total: int) -> None:
            comfy.model_management.throw_exception_if_processing_interrupted()
            fraction = min(1.0, step / total) if total else 1.0
            self.bar.update_absolute(int((index + fraction) * self.steps_per_item), self.items * self.steps_per_item)

        return report

    def item_done(self, index: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.bar.update_absolute((index + 1) * self.steps_per_item, self.items * self.steps_per_item)

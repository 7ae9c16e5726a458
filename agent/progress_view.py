"""A progress display for agent jobs on stderr: one bar per plan step, plain characters, no
dependency. On a terminal the current step's bar is redrawn in place; in a log (not a TTY) each step
gets one line when it ends, so logs stay short."""

from __future__ import annotations

import sys
import time

from .client import JobEvent
from .jobs import step_of

_WIDTH = 24


def bar(fraction: float, width: int = _WIDTH) -> str:
    fraction = min(1.0, max(0.0, fraction))
    filled = int(round(fraction * width))
    return "[" + "#" * filled + "-" * (width - filled) + f"] {fraction * 100:3.0f}%"


class StepProgress:
    """Feed it a job's ``JobEvent``s (``on_event=StepProgress()``)."""

    def __init__(self, stream=None, label: str = ""):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.label = f"{label} " if label else ""
        self.prompt_id: str | None = None
        self.current: str | None = None
        self.started: dict[str, float] = {}
        self.finished: list[str] = []

    def __call__(self, event: JobEvent) -> None:
        if event.kind == "queued":
            self.prompt_id = event.prompt_id
            self._line(f"{self.label}queued as job {event.prompt_id}")
        elif event.kind == "reconnecting":
            self._line(f"{self.label}lost the connection to the server; reconnecting")
        elif event.kind == "executing" and event.node == "agent":  # the AgentPlanner node (jobs.edit_prompt)
            self._draw("planning", 0.0)
        elif event.kind in ("executing", "progress"):
            self._step_event(event)
        elif event.kind == "success":
            self._end_current()

    def _step_event(self, event: JobEvent) -> None:
        step = step_of(event.node)
        if step is None:
            return
        if step != self.current:
            self._end_current()
            self.current = step
            self.started[step] = time.monotonic()
        if event.kind == "progress" and event.data.get("state") == "finished":
            self._end_current()
            return
        fraction = (event.value or 0) / event.max if event.max else 0.0
        self._draw(step, fraction)

    def _end_current(self) -> None:
        if self.current is None or self.current in self.finished:
            return
        step = self.current
        self.finished.append(step)
        seconds = time.monotonic() - self.started.get(step, time.monotonic())
        self._line(f"{self.label}step {step:<6} {bar(1.0)} {seconds:6.2f} s")

    def _draw(self, name: str, fraction: float) -> None:
        if self.tty:
            self.stream.write(f"\r{self.label}step {name:<6} {bar(fraction)}\x1b[K")
            self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(f"\r{text}\x1b[K\n" if self.tty else f"{text}\n")
        self.stream.flush()

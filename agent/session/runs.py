"""Reading a finished run folder (``agent/trace.py`` layout) for a commit: the plan, each step's
record and files, the result image. Anything missing means the run did not finish, and the turn
is not committed (``TurnIncomplete``), so a killed or failed run never becomes a checkpoint."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SessionError, TurnIncomplete
from .files import check_file_name

RESULT_STEP = "result"


@dataclass(frozen=True)
class StepRecord:
    step: str
    tool: str
    args: dict
    inputs: dict
    files: dict = field(default_factory=dict)  # kind ("image", "mask", "boxes") -> file names, batch order
    text: str | None = None
    seconds: float | None = None

    def first(self, kind: str) -> str | None:
        names = self.files.get(kind) or []
        return names[0] if names else None


@dataclass(frozen=True)
class RunRecord:
    folder: Path
    run_id: str
    instruction: str
    planner: str
    plan: dict
    steps: list[StepRecord]
    result: str  # file name of the result image (the first of the batch)

    def step(self, step_id: str) -> StepRecord | None:
        return next((s for s in self.steps if s.step == step_id), None)


def _load(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TurnIncomplete(f"the run folder {path.parent} has no {path.name}: {what}") from None
    except (OSError, ValueError) as exc:
        raise TurnIncomplete(f"{path} cannot be read ({exc}); the run did not finish writing it") from None
    if not isinstance(data, dict):
        raise TurnIncomplete(f"{path} is not a record (a JSON object)")
    return data


def _files(record: dict, folder: Path, where: str) -> dict:
    files = {}
    for kind, names in (record.get("files") or {}).items():
        names = [check_file_name(n, where) for n in (names or [])]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise TurnIncomplete(f"{where} lists {', '.join(missing)}, which the run folder does not have")
        files[kind] = names
    return files


def read_run(folder) -> RunRecord:
    """The finished run in ``folder``, or ``TurnIncomplete`` saying what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SessionError(f"no run folder at {folder}")
    header = _load(folder / "plan.json", "the run was never planned")
    trace = _load(folder / "trace.json", "the run did not finish (a step failed, or it was stopped)")
    plan = header.get("plan") or {}
    seconds = {s.get("step"): s.get("seconds") for s in trace.get("steps", []) if isinstance(s, dict)}
    steps = []
    for raw in plan.get("steps", []):
        step_id = raw.get("id")
        where = f"step {step_id} of run {folder.name}"
        record_path = folder / f"{check_file_name(str(step_id), where)}.json"
        if not record_path.is_file():
            raise TurnIncomplete(f"{where} ({raw.get('tool')}) was not run; the run stopped before it")
        record = _load(record_path, f"{where} has no record")
        steps.append(StepRecord(step_id, str(raw.get("tool", "")), dict(raw.get("args") or {}),
                                dict(raw.get("inputs") or {}), _files(record, folder, where), record.get("text"),
                                seconds.get(step_id)))
    result = _load(folder / f"{RESULT_STEP}.json", "the run made no result image")
    result_files = _files(result, folder, f"the result of run {folder.name}").get("image") or []
    if not result_files:
        raise TurnIncomplete(f"the run folder {folder} has no result image")
    return RunRecord(folder, folder.name, str(header.get("instruction", "")), str(header.get("planner", "")),
                     plan, steps, result_files[0])

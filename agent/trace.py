"""The run folder of an agent turn: every step's outputs on disk and a trace that lists them.

Layout of ``<output>/agentic_edit/runs/<run_id>/``::

    plan.json          instruction, plan, planner, started_at (written when the plan is compiled)
    s1.json            one record per step: tool, args, outputs written, finished_at
    s1_image.png       the step's image output (one file per batch item: s1_image_1.png, ...)
    s1_mask.png        its mask output
    s1_boxes.json      its boxes (core BOUNDING_BOX lists)
    trace.json         everything above in one document, with per-step durations

Plain files and numpy/PIL only; the record and trace nodes (nodes/trace.py) call these.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

RUNS_SUBFOLDER = "agentic_edit/runs"
_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


class TraceError(ValueError):
    """A bad run folder or record; the message says which."""


def new_run_id(prefix: str = "run") -> str:
    return f"{prefix}_{time.strftime('%Y%m%d-%H%M%S')}_{uuid.uuid4().hex[:6]}"


def run_dir(output_root: str | os.PathLike, run_id: str) -> Path:
    if not _RUN_ID.match(run_id):
        raise TraceError(f"run id {run_id!r}: use letters, digits, '.', '_' or '-' (at most 80)")
    return Path(output_root) / RUNS_SUBFOLDER / run_id


def write_json_atomic(path: Path, payload) -> None:
    """Write JSON so a reader never sees half a file (temp file + rename in the same folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_plan(folder: Path, instruction: str, plan: dict, planner: str, extra: dict | None = None) -> Path:
    path = folder / "plan.json"
    write_json_atomic(path, {"instruction": instruction, "planner": planner, "plan": plan,
                             "started_at": time.time(), **(extra or {})})
    return path


def _save_png(array: np.ndarray, path: Path) -> None:
    data = np.clip(np.rint(np.asarray(array, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(data).save(path)


def record_step(folder: Path, step_id: str, tool: str, args: dict, images=None, masks=None,
                boxes=None, text: str | None = None) -> dict:
    """Save a step's outputs (lists of float arrays, one per batch item) and its record."""
    if not re.match(r"^[A-Za-z0-9_-]{1,40}$", step_id):
        raise TraceError(f"step id {step_id!r}: use letters, digits, '_' or '-'")
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, list[str]] = {}

    def save_all(kind: str, arrays) -> None:
        names = []
        for i, array in enumerate(arrays):
            name = f"{step_id}_{kind}{'' if i == 0 else f'_{i}'}.png"
            _save_png(array, folder / name)
            names.append(name)
        files[kind] = names

    if images is not None:
        save_all("image", images)
    if masks is not None:
        save_all("mask", masks)
    if boxes is not None:
        name = f"{step_id}_boxes.json"
        write_json_atomic(folder / name, boxes)
        files["boxes"] = [name]
    record = {"step": step_id, "tool": tool, "args": args, "files": files, "finished_at": time.time()}
    if text is not None:
        record["text"] = text
    write_json_atomic(folder / f"{step_id}.json", record)
    return record


def write_trace(folder: Path, result_files: list[str] | None = None) -> dict:
    """Assemble ``trace.json`` from ``plan.json`` and the step records, in plan order."""
    plan_path = folder / "plan.json"
    if not plan_path.is_file():
        raise TraceError(f"{folder}: no plan.json; is this a run folder?")
    header = json.loads(plan_path.read_text())
    steps, previous = [], header.get("started_at", time.time())
    for step in header["plan"].get("steps", []):
        path = folder / f"{step['id']}.json"
        if not path.is_file():
            steps.append({"step": step["id"], "tool": step["tool"], "status": "not run"})
            continue
        record = json.loads(path.read_text())
        # Steps run in plan order, so the time since the previous record is this step's time.
        record["seconds"] = round(record["finished_at"] - previous, 4)
        previous = record["finished_at"]
        record["status"] = "done"
        steps.append(record)
    trace = {**header, "steps": steps, "result": result_files or [], "finished_at": time.time(),
             "total_seconds": round(time.time() - header.get("started_at", time.time()), 4)}
    write_json_atomic(folder / "trace.json", trace)
    return trace

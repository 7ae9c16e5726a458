"""Committing a turn: a finished run folder becomes the session's new checkpoint, atomically.

1. Read the run (runs.py): plan, step records, result. An unfinished run is refused.
2. Faithful chain: the result keeps the base checkpoint's pixels outside the union of the masks the
   edit steps used (binary: any mask value > 0 may change). A tool that touched pixels outside its
   mask (a VAE round trip, a resize) is corrected here, so after any number of turns the pixels
   outside every edit mask are the original's, bit for bit. Steps with no mask (boxes drawn over
   the whole image) leave the result as it is.
3. Stage every file in ``tmp/<token>/`` (copies of the run's PNGs: no re-encoding unless the
   result was corrected) and fsync them.
4. One write transaction: rename the folder into ``turns/``, insert the turn, its steps and
   artifacts, move the head, bump the version, end the lease. A crash before COMMIT leaves the old
   state (the folder is an orphan that ``repair`` removes); after it, the new one.

Nothing here reads all of a session's turns, so a commit costs the same at turn 2 and turn 2000.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import regions as naming
from .errors import SessionError, TurnExpired, TurnIncomplete
from .files import (check_session_id, copy_file, fsync_dir, fsync_file, pixel_digest, read_gray, read_rgb,
                    remove_tree, storage_error, write_png)
from .runs import RunRecord, read_run
from .state import Checkpoint

log = logging.getLogger(__name__)
_IO = ThreadPoolExecutor(max_workers=4, thread_name_prefix="session-io")  # copies + fsyncs beside the decoding


@dataclass(frozen=True)
class CommitResult:
    session_id: str
    turn: int
    result: int                  # the new checkpoint's artifact id
    checkpoint: Checkpoint
    version: int
    regions: dict                # region name -> artifact id (masks named by what they hold now)
    reverted_pixels: int         # pixels outside the edit masks that a tool changed and the commit restored
    bounded: bool                # False: a step had no mask, so the whole image could change
    bytes: int
    seconds: float
    phases: dict                 # seconds per phase: read (run + lease), check (decode + faithful), stage, save


def _copy_synced(source: Path, target: Path) -> int:
    size = copy_file(source, target)
    fsync_file(target)
    return size


def _decode(read, path: Path) -> np.ndarray:
    try:
        return read(path)
    except (OSError, ValueError) as exc:
        raise TurnIncomplete(f"{path} cannot be read as an image ({exc}); the run did not finish writing it") from None


def _image_refs(step, by_id) -> list[str]:
    """The earlier steps whose image this step edits (references and masks are not edits)."""
    found = []
    for name, ref in step.inputs.items():
        step_id, _, output = str(ref).partition(".")
        source = by_id.get(step_id)
        if source is not None and source.first("image") and not any(k in output for k in ("mask", "box", "point")):
            found.append(step_id)
    return found


def edit_support(run: RunRecord, mask_of, shape) -> np.ndarray | None:
    """Where the edit may change pixels: the union of the masks used by the steps on the path to the
    result image, or None when one of them had no mask (the whole image may change)."""
    by_id = {s.step: s for s in run.steps}
    output = (run.plan.get("output") or "").split(".", 1)[0]
    if output not in by_id:
        image_steps = [s.step for s in run.steps if s.first("image")]
        output = image_steps[-1] if image_steps else None
    if output is None:
        return None  # no step made the result: nothing says where it may differ
    support = np.zeros(shape, dtype=bool)
    todo, seen = [output], set()
    while todo:
        step = by_id[todo.pop()]
        if step.step in seen:
            continue
        seen.add(step.step)
        masks = [str(r) for n, r in step.inputs.items() if naming._is_mask_ref(n, str(r))]
        if not masks and step.first("mask"):
            masks = [f"{step.step}.mask"]  # a tool that reports what it changed (draw_text's coverage)
        if not masks:
            return None
        for ref in masks:
            mask = mask_of(ref)
            if mask is None or mask.shape != shape:
                return None
            support |= mask > 0
        todo.extend(_image_refs(step, by_id))
    return support


def _box(boxes_file: Path | None, mask: np.ndarray | None) -> list[float] | None:
    """A region's box: the union of its step's boxes for the first image, else the mask's bounds
    (None: the mask is empty, nothing was found)."""
    if boxes_file is not None:
        try:
            frames = json.loads(boxes_file.read_text())
            frame = frames[0] if frames and isinstance(frames[0], list) else frames
            boxes = [(float(b["x"]), float(b["y"]), float(b["width"]), float(b["height"])) for b in frame]
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            boxes = []
        if boxes:
            x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            x2, y2 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
            return [x1, y1, x2 - x1, y2 - y1]
    if mask is None:
        return None
    mask = mask > 0
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return [float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1)]


@dataclass
class _Staged:
    """A turn's files, written and fsynced in ``tmp/<token>/``, and what the rows need."""

    files: dict           # (step, kind) -> file name in the turn folder
    result: np.ndarray    # the result's pixels (composited when a tool went outside its masks)
    digest: str
    input_digest: str | None
    summary: dict
    regions: dict         # step -> (region, box)
    reverted: int
    bounded: bool
    total: int


def _settle(futures) -> None:
    """Lets the worker threads finish (or never start) before their folder is removed."""
    for future in futures:
        future.cancel()
    for future in futures:
        if not future.cancelled():
            future.exception()


def _stage(store, session_id: str, run: RunRecord, lease, staging: Path, pending_dir: Path, faithful: bool,
           phases: dict) -> _Staged:
    exposed, staged = json.loads(lease["exposed"]), json.loads(lease["staged"])
    began = time.perf_counter()
    copies: list = []
    decoding: dict = {}
    try:
        # Decoding (the result, the masks) and copying (every file) run in worker threads: PIL and
        # file I/O release the GIL, so they overlap with each other and with the checks below.
        decoding["result"] = _IO.submit(_decode, read_rgb, run.folder / run.result)
        for step in run.steps:
            if step.first("mask"):
                decoding[f"{step.step}.mask"] = _IO.submit(_decode, read_gray, run.folder / step.first("mask"))
        files = {}
        for step in run.steps:
            for kind in ("image", "mask"):
                if step.first(kind):
                    files[step.step, kind] = f"{step.step}_{kind}.png"
                    copies.append(_IO.submit(_copy_synced, run.folder / step.first(kind),
                                             staging / files[step.step, kind]))
        given = [staged["input"]] if staged.get("input") else []
        for name in given + staged.get("references", []):
            copies.append(_IO.submit(_copy_synced, pending_dir / name, staging / name))

        if lease["base_artifact"] is not None:
            base = store.pixels(session_id, lease["base_artifact"])
        else:
            base = read_rgb(pending_dir / staged["input"])
        input_digest = pixel_digest(base) if given else None
        result = decoding.pop("result").result()

        def mask_of(ref: str):
            if ref not in decoding:
                artifact = exposed.get(ref.split(":", 1)[1]) if ref.startswith("session:") else None
                decoding[ref] = None if artifact is None else read_gray(store.artifact_path(session_id, artifact))
            found = decoding[ref]
            return found.result() if hasattr(found, "result") else found

        support = edit_support(run, mask_of, base.shape[:2]) if result.shape == base.shape else None
        phases["check"] = time.perf_counter() - began
        reverted = 0
        if faithful and support is not None:
            differ = np.bitwise_xor(result, base)
            outside = differ[..., 0] | differ[..., 1] | differ[..., 2]
            outside[support] = 0
            reverted = int(np.count_nonzero(outside))
            if reverted:
                log.warning("session %s: the run changed %d pixel(s) outside its edit masks; restored", session_id,
                            reverted)
                result = np.where(support[..., None], result, base)
        elif result.shape != base.shape:
            log.warning("session %s: the result is %s but the edited image was %s; kept as it is", session_id,
                        result.shape, base.shape)
        total = write_png(staging / "result.png", result) if reverted else 0
        if not reverted:
            copies.append(_IO.submit(_copy_synced, run.folder / run.result, staging / "result.png"))

        plan_steps = run.plan.get("steps", [])
        summary = naming.summarize(plan_steps, exposed, run.instruction)
        # Regions are masks that select something; a step that also makes an image (draw_text)
        # reports what it changed instead.
        selecting = [s for s, k in files if k == "mask" and (s, "image") not in files]
        regions = {}
        for step_id, region in naming.name_regions(plan_steps, selecting, summary).items():
            record = run.step(step_id)
            boxes = run.folder / record.first("boxes") if record.first("boxes") else None
            box = _box(boxes, mask_of(f"{step_id}.mask"))
            if box is not None:  # an empty mask found nothing: not a region
                regions[step_id] = (region, box)
        summary["regions"] = {s: r["name"] for s, (r, _) in regions.items()}
        total += sum(c.result() for c in copies)
        fsync_dir(staging)
        return _Staged(files, result, pixel_digest(result), input_digest, summary, regions, reverted,
                       support is not None, total)
    except BaseException:
        _settle(copies + [f for f in decoding.values() if hasattr(f, "cancel")])
        raise


def commit_turn(store, session_id: str, token: str, run_folder, *, faithful: bool = True) -> CommitResult:
    began = time.perf_counter()
    check_session_id(session_id)
    run = read_run(run_folder)
    with store._read() as conn:
        lease = conn.execute("SELECT * FROM pending WHERE session_id = ? AND token = ?", (session_id, token)).fetchone()
        settings = store._info(conn, session_id).settings
    if lease is None:
        raise TurnExpired(f"the turn {token} of session {session_id} is not running any more (it was committed, "
                          f"aborted, or its lease ended and another client took the session); the run folder "
                          f"{run.folder} is kept: start a new turn to apply the edit again")
    if lease["run_id"] and lease["run_id"] != run.run_id:
        raise SessionError(f"the turn was started for run {lease['run_id']!r}, not {run.run_id!r}")
    phases = {"read": time.perf_counter() - began}
    folder = store.session_dir(session_id)
    pending_dir, staging, final = folder / "pending" / token, folder / "tmp" / token, folder / "turns" / token
    unchanged = "the turn was not saved; the session is unchanged (its run folder is kept)"
    try:
        remove_tree(staging)
        staging.mkdir(parents=True)
        staged = _stage(store, session_id, run, lease, staging, pending_dir, faithful, phases)
    except OSError as exc:
        remove_tree(staging)
        raise storage_error(exc, f"saving turn files of session {session_id}", unchanged) from None
    except BaseException:
        remove_tree(staging)
        raise
    phases["stage"] = time.perf_counter() - began - phases["read"] - phases["check"]

    try:
        with store._write(f"saving a turn of {session_id}") as conn:
            rows = _Rows(conn, store, session_id, token, lease, run, staged)
            if not rows.lease_held():
                raise TurnExpired(f"the lease of turn {token} ended while it was being saved; the run folder "
                                  f"{run.folder} is kept: start a new turn to apply the edit again")
            final.parent.mkdir(parents=True, exist_ok=True)
            _publish(staging, final)
            fsync_dir(final.parent)
            outcome = _write_rows(rows)
    except OSError as exc:
        remove_tree(final)
        remove_tree(staging)
        raise storage_error(exc, f"saving a turn of session {session_id}", unchanged) from None
    except BaseException:
        remove_tree(final)
        remove_tree(staging)
        raise
    _cleanup(pending_dir)
    store._cache_pixels(outcome["result"], staged.result)
    from .retention import apply_retention

    try:
        apply_retention(store, session_id, settings=settings)
    except (SessionError, OSError) as exc:  # the turn is saved; the next commit tries again
        log.warning("session %s: retention after turn %d failed: %s", session_id, outcome["turn"], exc)
    phases["save"] = time.perf_counter() - began - sum(phases.values())
    return CommitResult(session_id, outcome["turn"], outcome["result"],
                        Checkpoint(outcome["result"], outcome["turn"], None, "result"), outcome["version"],
                        outcome["regions"], staged.reverted, staged.bounded, staged.total,
                        round(time.perf_counter() - began, 4), {k: round(v, 4) for k, v in phases.items()})


def _publish(staging: Path, final: Path) -> None:
    os.replace(staging, final)


def _cleanup(pending_dir: Path) -> None:
    remove_tree(pending_dir)


@dataclass
class _Rows:
    conn: sqlite3.Connection
    store: object
    session_id: str
    token: str
    lease: sqlite3.Row
    run: RunRecord
    staged: _Staged

    def lease_held(self) -> bool:
        return self.conn.execute("SELECT 1 FROM pending WHERE session_id = ? AND token = ?",
                                 (self.session_id, self.token)).fetchone() is not None


def _write_rows(r: _Rows) -> dict:
    """Every row of the turn, inside the open transaction."""
    conn, sid, now = r.conn, r.session_id, time.time()
    session = conn.execute("SELECT version, next_turn, head_artifact FROM sessions WHERE id = ?", (sid,)).fetchone()
    number, version = session["next_turn"], session["version"] + 1
    height, width = r.staged.result.shape[:2]
    turn_id = conn.execute(
        "INSERT INTO turns (session_id, number, base_artifact, instruction, planner, plan, run_id, folder, created_at, "
        "visited, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (sid, number, r.lease["base_artifact"], r.lease["instruction"] or r.run.instruction, r.run.planner,
         json.dumps(r.run.plan), r.run.run_id, r.token, now, version, json.dumps(r.staged.summary))).lastrowid
    prefix = f"turns/{r.token}/"

    def add(kind, role, name, step=None, region=None, box=None, digest=None, size=(width, height)) -> int:
        path = r.store.session_dir(sid) / "turns" / r.token / name
        return conn.execute(
            "INSERT INTO artifacts (session_id, turn_id, step, kind, role, name, label, box, file, width, height, "
            "meta, digest, bytes, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (sid, turn_id, step, kind, role, region["name"] if region else None, region["label"] if region else None,
             json.dumps(box) if box else None, prefix + name, size[0], size[1], json.dumps(region or {}), digest,
             path.stat().st_size, now)).lastrowid

    given = json.loads(r.lease["staged"])
    if given.get("input"):
        base = add("image", "input", given["input"], digest=r.staged.input_digest)
        conn.execute("UPDATE turns SET base_artifact = ? WHERE id = ?", (base, turn_id))
    for k, name in enumerate(given.get("references", []), 1):
        add("reference", "reference", name, region={"name": f"ref_t{number}" + (f"_{k}" if k > 1 else ""),
                                                     "label": f"reference {k} of turn {number}"})
    regions = {}
    for position, step in enumerate(r.run.steps):
        conn.execute("INSERT INTO steps (turn_id, position, step, tool, args, inputs, text, seconds) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (turn_id, position, step.step, step.tool, json.dumps(step.args),
                                                         json.dumps(step.inputs), step.text, step.seconds))
        if (step.step, "image") in r.staged.files:
            add("image", "step", r.staged.files[step.step, "image"], step=step.step)
        if (step.step, "mask") in r.staged.files:
            region, box = r.staged.regions.get(step.step, (None, None))
            artifact = add("mask", "step", r.staged.files[step.step, "mask"], step=step.step, region=region, box=box)
            if region:
                regions[region["name"]] = artifact
    result = add("image", "result", "result.png", digest=r.staged.digest)
    conn.execute("UPDATE turns SET result_artifact = ? WHERE id = ?", (result, turn_id))
    conn.execute("UPDATE sessions SET head_artifact = ?, version = ?, next_turn = ?, bytes = bytes + ?, updated_at = ? "
                 "WHERE id = ?", (result, version, number + 1, r.staged.total, now, sid))
    conn.execute("DELETE FROM pending WHERE session_id = ? AND token = ?", (sid, r.token))
    conn.execute("INSERT INTO events (session_id, version, action, head_before, head_after, detail, at) "
                 "VALUES (?, ?, 'commit', ?, ?, ?, ?)", (sid, version, session["head_artifact"], result,
                                                         json.dumps({"turn": number, "run_id": r.run.run_id}), now))
    return {"turn": number, "result": result, "version": version, "regions": regions}

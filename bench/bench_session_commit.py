"""Session commit cost: one turn with 4 intermediate images (and their 4 masks) at 1024x1024, committed
from a finished run folder, against the number of turns already in the session (1..200). CPU only.

What is timed is ``SessionStore.commit_turn`` alone, as the trace node would call it: read the run,
check the result against the base checkpoint outside the edit masks (faithful chain), copy and
fsync the files, one database transaction. Starting the turn (the lease) is not timed.

    ~/comfy/venv/bin/python bench/bench_session_commit.py            # 200 turns, prints a table
    ~/comfy/venv/bin/python bench/bench_session_commit.py --turns 50 --json out.json

The target (issue 6): under 150 ms per commit, flat in the number of past turns.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.pack import import_pack  # noqa: E402

import_pack()
from agentic_edit.agent.session import Retention, SessionStore  # noqa: E402
from agentic_edit.agent.session.files import read_rgb  # noqa: E402
from tests.session_runs import plain_run  # noqa: E402

OBJECTS = {"cup": (120, 160, 220, 260), "spoon": (420, 610, 300, 60), "saucer": (80, 420, 380, 140),
           "plate": (600, 150, 330, 300)}
EDITS = ("inpaint", "recolor", "remove_object", "inpaint")
TARGET_MS = 150.0


def photo_like(size: int, seed: int) -> np.ndarray:
    """Smooth gradients with sensor-like noise: PNG sizes and decode times close to a photograph's."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([0.5 + 0.4 * np.sin(3 * x + 1), 0.5 + 0.4 * np.cos(2 * y), 0.3 + 0.5 * x * y], axis=-1)
    noisy = np.clip(base * 255 + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    return noisy.astype(np.float32) / 255.0


def make_run(folder: Path, original: np.ndarray, variant: int) -> Path:
    """A finished run: four segment_by_text -> edit pairs; everything outside the masks stays the original."""
    rng = np.random.default_rng(variant)
    steps, images, masks, boxes = [], {}, {}, {}
    image, previous = original, "image"
    for k, ((name, (x, y, w, h)), tool) in enumerate(zip(OBJECTS.items(), EDITS)):
        seg, edit = f"s{2 * k + 1}", f"s{2 * k + 2}"
        mask = np.zeros(original.shape[:2], np.float32)
        mask[y:y + h, x:x + w] = 1.0
        steps.append({"id": seg, "tool": "segment_by_text", "args": {"query": f"the {name}"},
                      "inputs": {"image": previous}})
        steps.append({"id": edit, "tool": tool, "args": {"prompt": f"a new {name}"} if tool == "inpaint" else {},
                      "inputs": {"image": previous, "mask": f"{seg}.mask"}})
        image = image.copy()
        image[y:y + h, x:x + w] = np.rint(rng.random((h, w, 3)) * 255) / 255.0
        masks[seg], images[edit] = mask, image
        boxes[seg] = [[{"x": x, "y": y, "width": w, "height": h, "label": name}]]
        previous = f"{edit}.image"
    return plain_run(folder, "four edits", steps, images, image, masks=masks, boxes=boxes, output=previous)


def window(times: list[float], at: int, half: int = 2) -> float:
    """Median commit time around turn ``at`` (1-based)."""
    lo, hi = max(0, at - 1 - half), min(len(times), at + half)
    return statistics.median(times[lo:hi])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=200)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--keep-step-files", type=int, default=None, help="retention: newest N turns keep steps")
    parser.add_argument("--dir", default=None, help="where to put the session store (default: a temp folder)")
    parser.add_argument("--json", default=None, help="write all numbers here")
    args = parser.parse_args(argv)

    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_session_"))
    try:
        original = photo_like(args.size, 0)
        runs = [make_run(root / "runs" / f"run_{v}", original, v) for v in (1, 2)]
        run_bytes = sum(f.stat().st_size for f in runs[0].glob("*.png"))
        store = SessionStore(root / "sessions", retention=Retention(keep_step_files=args.keep_step_files))
        session = store.create_session(original).id
        times, reverted, phases, control = [], 0, [], []
        for turn in range(1, args.turns + 1):
            ticket = store.start_turn(session, instruction=f"turn {turn}")
            # A fixed amount of work timed just before: decoding one 1024x1024 PNG. When the machine is
            # busy with other work both slow down together; the ratio shows what the turn count does.
            began = time.perf_counter()
            read_rgb(runs[0] / "result_image.png")
            control.append((time.perf_counter() - began) * 1000)
            began = time.perf_counter()
            result = store.commit_turn(session, ticket.token, runs[turn % 2])
            times.append((time.perf_counter() - began) * 1000)
            reverted += result.reverted_pixels
            phases.append(result.phases)
        marks = [t for t in (1, 2, 5, 10, 25, 50, 100, 150, 200, 300, 500) if t <= args.turns]
        slope = float(np.polyfit(np.arange(1, len(times) + 1), times, 1)[0]) if len(times) > 2 else 0.0
        report = {
            "python": platform.python_version(), "machine": platform.machine(), "cpu": platform.processor(),
            "size": args.size, "turns": args.turns, "run_png_bytes": run_bytes,
            "ms_by_past_turns": {t: round(window(times, t), 2) for t in marks},
            "control_decode_ms_by_past_turns": {t: round(window(control, t), 2) for t in marks},
            "median_ms": round(statistics.median(times), 2), "p95_ms": round(float(np.percentile(times, 95)), 2),
            "max_ms": round(max(times), 2), "slope_ms_per_100_turns": round(slope * 100, 3),
            "phase_median_ms": {k: round(statistics.median(p[k] for p in phases) * 1000, 2) for k in phases[0]},
            "load_average": os.getloadavg(), "cpus": os.cpu_count(),
            "reverted_pixels": reverted, "session_bytes": store.session(session).bytes, "target_ms": TARGET_MS,
            "all_ms": [round(t, 2) for t in times],
            "all_phases_ms": [{k: round(v * 1000, 2) for k, v in p.items()} for p in phases],
        }
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"commit of a turn with 4 intermediates + 4 masks at {args.size}x{args.size} "
          f"(run folder PNGs: {run_bytes / 1e6:.1f} MB), {args.turns} turns")
    print("| past turns | commit ms (median of 5 around it) | one PNG decode ms, same moment | ratio |\n"
          "|---:|---:|---:|---:|")
    for t, ms in report["ms_by_past_turns"].items():
        decode = report["control_decode_ms_by_past_turns"][t]
        print(f"| {t} | {ms} | {decode} | {ms / decode:.2f} |")
    print(f"median {report['median_ms']} ms, p95 {report['p95_ms']} ms, max {report['max_ms']} ms; "
          f"slope {report['slope_ms_per_100_turns']} ms per 100 turns; target < {TARGET_MS} ms")
    print(f"phases (median ms): {report['phase_median_ms']}; {report['cpus']} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in report['load_average'])} (other work on the machine slows every phase)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()

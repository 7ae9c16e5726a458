"""Planner benchmark (CPU): validate + compile a 10-step plan (goal < 20 ms), and the offline
planner's score on the shipped instruction cases (printed, not asserted).

    python bench/bench_plan.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.pack import import_pack  # noqa: E402

import_pack()

from agentic_edit.agent.compile import compile_plan  # noqa: E402
from agentic_edit.agent.evaluate import evaluate, format_table, load_cases  # noqa: E402
from agentic_edit.agent.planners import get_planner  # noqa: E402
from agentic_edit.agent.plan import validate  # noqa: E402
from agentic_edit.catalogue import all_tools  # noqa: E402


def ten_step_plan() -> dict:
    steps = [{"id": "s1", "tool": "segment_by_text", "args": {"query": "the cup"}, "inputs": {"image": "image"}}]
    image = "image"
    for i in range(2, 10, 2):
        steps.append({"id": f"s{i}", "tool": "recolor", "args": {"color": "red"},
                      "inputs": {"image": image, "mask": "s1.mask"}})
        steps.append({"id": f"s{i + 1}", "tool": "refine_mask", "args": {"grow": i},
                      "inputs": {"mask": "s1.mask"}})
        image = f"s{i}.image"
    steps.append({"id": "s10", "tool": "draw_text", "args": {"text": "SALE"},
                  "inputs": {"image": image, "mask": "s9.mask"}})
    return {"steps": steps}


def main() -> int:
    tools = all_tools()
    raw = ten_step_plan()
    times = []
    for _ in range(200):
        start = time.perf_counter()
        plan = validate(raw, tools)
        compile_plan(plan, tools, run_id="bench")
        times.append((time.perf_counter() - start) * 1000)
    print(f"validate + compile, 10 steps: median {statistics.median(times):.2f} ms, "
          f"max {max(times):.2f} ms over {len(times)} runs (goal < 20 ms)")
    report = evaluate(get_planner("offline"), load_cases(), tools)
    print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

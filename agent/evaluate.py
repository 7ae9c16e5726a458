"""Scores a planner on a file of instructions: does it pick the expected tools in the expected
order, with the expected arguments, and does it refuse what it should?

A case (one JSON object per line of ``eval_cases/cases.jsonl``)::

    {"id": "remove-cup", "image": "coffee", "instruction": "remove the cup",
     "expect": ["segment_by_text", "remove_object"], "args": {"s1.query": "cup"}}

* ``image``: a scikit-image sample ("chelsea", "coffee", "astronaut", "rocket", "motorcycle_left",
  ...) or a path; ``references``: a list of the same, given with the instruction (optional);
* ``expect``: the tool sequence, or ``"refuse"``. A sequence that names a tool the catalogue does not
  have yet expects a refusal instead (the planner must say the tool is missing, not plan around it);
* ``args``: checks on the plan, ``"<step id>.<arg>"`` or ``"<tool>.<arg>"`` (that tool's first step)
  -> the exact value (an input's reference is checked the same way).

The score is a report, not a test: ``main`` prints the table and optionally writes JSON.
Run it from the repository root with ``python -m tests.run_eval``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..catalogue.spec import Tool
from .plan import Plan, PlanError, agent_tools, validate
from .planners import PLANNERS, ImageInfo, Planner, PlannerDeclined, get_planner

log = logging.getLogger(__name__)

CASES_FILE = Path(__file__).parent / "eval_cases" / "cases.jsonl"
REFUSE = "refuse"


@dataclass(frozen=True)
class Case:
    id: str
    image: str
    instruction: str
    expect: Any  # list of tool names, or "refuse"
    references: tuple[str, ...] = ()
    args: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class CaseResult:
    id: str
    instruction: str
    expected: Any            # what the case file says
    wanted: Any              # what is expected with this catalogue ("refuse" when a tool is missing)
    missing: list[str]       # the expected tools this catalogue lacks (the refusal must name one)
    got: Any                 # tool sequence, or "refuse"
    status: str              # ok | refused ok | wrong tools | wrong args | refused (should plan) |
                             # refused (not naming the missing tool) | planned (should refuse) | error
    tools_match: bool | None = None
    args_passed: int = 0
    args_total: int = 0
    failures: list[str] = field(default_factory=list)
    reason: str = ""         # the planner's refusal, or the error

    @property
    def correct(self) -> bool:
        return self.status in ("ok", "refused ok")


def load_cases(path: str | Path | None = None) -> list[Case]:
    """Cases from a ``.jsonl`` file (one object a line; ``#`` lines skipped) or a ``.json`` list."""
    path = Path(path or CASES_FILE)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    cases, seen = [], set()
    for n, row in enumerate(rows, 1):
        missing = [k for k in ("id", "image", "instruction", "expect") if k not in row]
        if missing:
            raise ValueError(f"{path}: case #{n} lacks {', '.join(missing)}")
        if row["id"] in seen:
            raise ValueError(f"{path}: case id {row['id']!r} is used twice")
        seen.add(row["id"])
        expect = row["expect"]
        if expect != REFUSE and not (isinstance(expect, list) and all(isinstance(t, str) for t in expect)):
            raise ValueError(f"{path}: case {row['id']!r}: expect must be a list of tool names or \"refuse\"")
        cases.append(Case(row["id"], row["image"], row["instruction"], expect, tuple(row.get("references", ())),
                          dict(row.get("args", {})), row.get("note", "")))
    return cases


@functools.lru_cache(maxsize=32)
def load_image(name: str):
    """A scikit-image sample by name ("motorcycle_left": the stereo pair's left view) or an image
    file, as a uint8 [H, W, 3] array."""
    import numpy as np

    if Path(name).suffix:
        from PIL import Image

        with Image.open(name) as im:
            return np.asarray(im.convert("RGB"))
    from skimage import data

    if name.startswith("motorcycle_"):
        left, right, _ = data.stereo_motorcycle()
        pixels = left if name == "motorcycle_left" else right
    else:
        loader = getattr(data, name, None)
        if loader is None or not callable(loader):
            raise ValueError(f"{name!r} is neither an image file nor a scikit-image sample")
        pixels = loader()
    pixels = np.asarray(pixels)
    if pixels.dtype == bool:
        pixels = pixels.astype(np.uint8) * 255
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return pixels[..., :3]


def image_info(name: str) -> ImageInfo:
    pixels = load_image(name)
    return ImageInfo(width=int(pixels.shape[1]), height=int(pixels.shape[0]), pixels=pixels)


def _arg_value(plan: Plan, key: str):
    where, _, name = key.rpartition(".")
    steps = [s for s in plan.steps if s.id == where] or [s for s in plan.steps if s.tool == where][:1]
    if not steps:
        return False, f"{key}: the plan has no step or tool {where!r}"
    step = steps[0]
    for table in (step.args, step.inputs):
        if name in table:
            return True, table[name]
    return False, f"{key}: step {step.id} ({step.tool}) sets no {name!r}"


def run_case(planner: Planner, case: Case, tools: list[Tool]) -> CaseResult:
    names = {t.name for t in tools}
    missing = [] if case.expect == REFUSE else sorted({t for t in case.expect if t not in names})
    # A tool of the expected plan is not installed: the right answer is to say so, naming it.
    wanted = REFUSE if missing else case.expect
    result = CaseResult(case.id, case.instruction, case.expect, wanted, missing, None, "error")
    try:
        info = image_info(case.image)
        plan = planner.plan(case.instruction, info, references=len(case.references))
        plan = validate(plan, tools, references=len(case.references))
    except PlannerDeclined as exc:
        result.got, result.reason = REFUSE, exc.reason
        if wanted != REFUSE:
            result.status = "refused (should plan)"
        elif missing and not any(t in exc.reason for t in missing):
            result.status = "refused (not naming the missing tool)"
        else:
            result.status = "refused ok"
        return result
    except PlanError as exc:
        result.reason = f"invalid plan: {exc}"
        return result
    except Exception as exc:  # a planner bug must not end the whole evaluation
        log.exception("case %s", case.id)
        result.reason = f"{type(exc).__name__}: {exc}"
        return result
    result.got = plan.tool_names
    if wanted == REFUSE:
        result.status = "planned (should refuse)"
        return result
    result.tools_match = plan.tool_names == list(wanted)
    for key, expected in case.args.items():
        result.args_total += 1
        found, value = _arg_value(plan, key)
        if found and value == expected:
            result.args_passed += 1
        else:
            result.failures.append(value if not found else f"{key} = {value!r}, expected {expected!r}")
    if not result.tools_match:
        result.status = "wrong tools"
    elif result.failures:
        result.status = "wrong args"
    else:
        result.status = "ok"
    return result


def evaluate(planner: Planner, cases: Iterable[Case], tools: Iterable[Tool] | None = None) -> dict:
    """Runs every case; returns ``{"summary": {...}, "cases": [CaseResult as dict, ...]}``."""
    tools = agent_tools(tools)
    results = [run_case(planner, c, tools) for c in cases]
    plan_cases = [r for r in results if r.wanted != REFUSE]
    refuse_cases = [r for r in results if r.wanted == REFUSE]
    summary = {
        "planner": getattr(planner, "name", type(planner).__name__),
        "cases": len(results),
        "correct": sum(r.correct for r in results),
        "plan_cases": len(plan_cases),
        "tool_sequence_exact": sum(bool(r.tools_match) for r in plan_cases),
        "arg_checks": sum(r.args_total for r in plan_cases),
        "arg_checks_passed": sum(r.args_passed for r in plan_cases),
        "refuse_cases": len(refuse_cases),
        "correct_refusals": sum(r.status == "refused ok" for r in refuse_cases),
        "refusals_for_missing_tools": sum(bool(r.missing) for r in refuse_cases),
        "false_refusals": sum(r.status == "refused (should plan)" for r in plan_cases),
        "errors": sum(r.status == "error" for r in results),
        "missing_tools": sorted({t for r in results if r.expected != REFUSE for t in r.expected}
                                - {t.name for t in tools}),
    }
    summary["accuracy"] = round(summary["correct"] / max(1, len(results)), 4)
    return {"summary": summary, "cases": [{**asdict(r), "correct": r.correct} for r in results]}


def _cell(value, width: int) -> str:
    text = value if isinstance(value, str) else " > ".join(value) if isinstance(value, list) else str(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def format_table(report: dict) -> str:
    """The report as a plain-text table, one row per case, then the summary."""
    columns = (("id", 26), ("status", 22), ("wanted", 44), ("got", 44), ("args", 5))
    lines = ["  ".join(name.ljust(width) for name, width in columns)]
    lines.append("  ".join("-" * width for _, width in columns))
    for r in report["cases"]:
        args = f"{r['args_passed']}/{r['args_total']}" if r["args_total"] else "-"
        wanted = f"refuse (no {', '.join(r['missing'])})" if r["missing"] else r["wanted"]
        row = (r["id"], r["status"], wanted, r["got"] if r["got"] is not None else "-", args)
        lines.append("  ".join(_cell(v, w).ljust(w) for v, (_, w) in zip(row, columns)))
    s = report["summary"]
    lines += ["", f"planner: {s['planner']}   cases: {s['cases']}   correct: {s['correct']} ({s['accuracy']:.1%})",
              f"tool sequences exact: {s['tool_sequence_exact']}/{s['plan_cases']}   "
              f"argument checks: {s['arg_checks_passed']}/{s['arg_checks']}   "
              f"refusals correct: {s['correct_refusals']}/{s['refuse_cases']} "
              f"({s['refusals_for_missing_tools']} for tools not installed)   "
              f"false refusals: {s['false_refusals']}   errors: {s['errors']}"]
    if s["missing_tools"]:
        lines.append(f"not installed (their cases expect a refusal): {', '.join(s['missing_tools'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score a planner on the instruction cases.")
    parser.add_argument("--cases", default=str(CASES_FILE), help="a .jsonl or .json case file")
    parser.add_argument("--planner", default="offline", choices=PLANNERS)
    parser.add_argument("--json", dest="json_out", help="also write the full report as JSON here")
    parser.add_argument("--fail-under", type=float, default=None,
                        help="exit with status 1 when the accuracy (0..1) is below this")
    options = parser.parse_args(argv)
    report = evaluate(get_planner(options.planner), load_cases(options.cases))
    sys.stdout.write(format_table(report) + "\n")  # the command's output, not a log line
    if options.json_out:
        Path(options.json_out).write_text(json.dumps(report, indent=2), encoding="utf-8")
    if options.fail_under is not None and report["summary"]["accuracy"] < options.fail_under:
        return 1
    return 0

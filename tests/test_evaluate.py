"""The planner evaluation: the case file is sound, every outcome is classified, and the command
prints the table and writes the JSON report. The offline planner's score is printed, not asserted."""

import json

import pytest

from agentic_edit.agent import evaluate as ev
from agentic_edit.agent.plan import Plan, Step
from agentic_edit.agent.planners import Planner, PlannerDeclined
from agentic_edit.agent.planners.offline import OfflinePlanner
from agentic_edit.catalogue import all_tools
from tests.agent_tools import sample_catalogue

TOOLS = sample_catalogue(future=True)
PLANNED_TOOLS = {"segment_by_text", "remove_object", "inpaint", "write_prompts", "recolor", "place_region",
                 "draw_text", "ground", "render_boxes", "insert_object", "try_on", "reference_inpaint"}
SKIMAGE_PHOTOS = {"chelsea", "coffee", "astronaut", "rocket", "motorcycle_left", "camera"}


def test_the_case_file_is_sound():
    cases = ev.load_cases()
    assert len(cases) >= 40
    known = {t.name for t in TOOLS} | {t.name for t in all_tools()}
    used = set()
    for case in cases:
        assert case.image in SKIMAGE_PHOTOS
        if case.expect != ev.REFUSE:
            assert set(case.expect) <= known, case.id
            used |= set(case.expect)
            for key in case.args:
                assert key.rpartition(".")[0] in {f"s{i}" for i in range(1, 10)} | set(case.expect), (case.id, key)
    assert used >= PLANNED_TOOLS  # every tool the planner plans is covered
    refusals = [c for c in cases if c.expect == ev.REFUSE]
    assert len(refusals) >= 8
    assert any("KSampler" in c.instruction for c in refusals)
    assert sum(len(c.expect) >= 4 for c in cases if c.expect != ev.REFUSE) >= 5  # compound instructions
    assert any(c.references for c in cases)


def test_images_load_as_rgb():
    for name in ("camera", "motorcycle_left"):
        pixels = ev.load_image(name)
        assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype.name == "uint8"
    info = ev.image_info("chelsea")
    assert (info.width, info.height) == (451, 300)
    with pytest.raises(ValueError, match="neither an image file nor a scikit-image sample"):
        ev.load_image("no_such_photo")


def test_image_files_load_too(tmp_path):
    from PIL import Image

    path = tmp_path / "grey.png"
    Image.new("L", (7, 5), 128).save(path)
    info = ev.image_info(str(path))
    assert (info.width, info.height) == (7, 5) and info.pixels.shape == (5, 7, 3)


def test_evaluation_report_and_table():
    cases = ev.load_cases()
    report = ev.evaluate(OfflinePlanner(TOOLS), cases, TOOLS)
    summary = report["summary"]
    assert summary["cases"] == len(cases) == len(report["cases"])
    assert summary["plan_cases"] + summary["refuse_cases"] == len(cases)
    assert 0 <= summary["accuracy"] <= 1 and summary["missing_tools"] == []
    assert summary["tool_sequence_exact"] <= summary["plan_cases"]
    assert summary["arg_checks_passed"] <= summary["arg_checks"]
    statuses = {"ok", "refused ok", "wrong tools", "wrong args", "refused (should plan)",
                "refused (not naming the missing tool)", "planned (should refuse)", "error"}
    for row in report["cases"]:
        assert row["status"] in statuses and row["correct"] == (row["status"] in ("ok", "refused ok"))
    table = ev.format_table(report)
    lines = table.splitlines()
    assert lines[0].split() == ["id", "status", "wanted", "got", "args"]
    assert all(any(line.startswith(c.id[:25]) for line in lines) for c in cases)
    assert f"cases: {len(cases)}" in table and "tool sequences exact:" in table and "refusals correct:" in table
    json.dumps(report)
    print("\n" + table)  # the offline planner's score, for the log


def test_missing_tools_turn_expected_plans_into_expected_refusals():
    cases = [ev.Case("hat", "chelsea", "add a hat to the cat", ["insert_object"])]
    tools = sample_catalogue()  # no insert_object
    report = ev.evaluate(OfflinePlanner(tools), cases, tools)
    row = report["cases"][0]
    assert (row["wanted"], row["missing"], row["status"]) == ("refuse", ["insert_object"], "refused ok")
    assert report["summary"]["missing_tools"] == ["insert_object"]
    assert "refuse (no insert_object)" in ev.format_table(report)


class _Scripted(Planner):
    """Answers every instruction with a fixed plan, a refusal, or a crash."""

    name = "scripted"

    def __init__(self, answer):
        self.answer = answer

    def plan(self, instruction, image_info=None, references=0, history=None):
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


REMOVE = Plan([Step("s1", "segment_by_text", {"query": "cup"}, {"image": "image"}),
               Step("s2", "remove_object", {}, {"image": "image", "mask": "s1.mask"})])


@pytest.mark.parametrize("answer, expect, args, status", [
    (REMOVE, ["segment_by_text", "remove_object"], {"s1.query": "cup"}, "ok"),
    (REMOVE, ["segment_by_text", "remove_object"], {"segment_by_text.query": "mug"}, "wrong args"),
    (REMOVE, ["segment_by_text", "remove_object"], {"s3.query": "cup"}, "wrong args"),
    (REMOVE, ["segment_by_text", "inpaint"], {}, "wrong tools"),
    (REMOVE, "refuse", {}, "planned (should refuse)"),
    (PlannerDeclined("no"), ["segment_by_text", "remove_object"], {}, "refused (should plan)"),
    (PlannerDeclined("no"), "refuse", {}, "refused ok"),
    (PlannerDeclined("no"), ["insert_object"], {}, "refused (not naming the missing tool)"),
    (RuntimeError("boom"), ["segment_by_text", "remove_object"], {}, "error"),
    (Plan([Step("s1", "KSampler", {}, {})]), ["segment_by_text", "remove_object"], {}, "error"),
])
def test_every_outcome_is_classified(answer, expect, args, status):
    case = ev.Case("c", "coffee", "remove the cup", expect, args=args)
    result = ev.run_case(_Scripted(answer), case, sample_catalogue())
    assert result.status == status, result
    if status == "error":
        assert result.reason.startswith(("RuntimeError: boom", "invalid plan:"))
    if status == "wrong args":
        assert result.failures and result.args_passed == 0


def test_case_file_errors(tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text('{"id": "a", "image": "coffee", "instruction": "x"}\n')
    with pytest.raises(ValueError, match="lacks expect"):
        ev.load_cases(path)
    path.write_text('{"id": "a", "image": "coffee", "instruction": "x", "expect": "maybe"}\n')
    with pytest.raises(ValueError, match="must be a list of tool names"):
        ev.load_cases(path)
    row = '{"id": "a", "image": "coffee", "instruction": "x", "expect": "refuse"}\n'
    path.write_text(row + row)
    with pytest.raises(ValueError, match="used twice"):
        ev.load_cases(path)
    as_json = tmp_path / "cases.json"
    as_json.write_text("[" + row + "]")
    assert ev.load_cases(as_json)[0].expect == "refuse"


def test_main_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert ev.main(["--json", str(out)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["summary"]["cases"] == len(ev.load_cases())
    assert printed.splitlines()[0].split() == ["id", "status", "wanted", "got", "args"]
    assert ev.main(["--fail-under", "1.01"]) == 1

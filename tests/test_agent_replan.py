"""A model-planned edit checks its grounding before it edits, inside one queued prompt.

The AgentPlanner expands the plan's grounding first, with the AgentContinue node after it. The
tiny grounding models decide what is found: "VisionReasoner-7B" always finds the middle half of the
image (it is trained to), the random-weight "Qwen2.5-VL-7B-Instruct" never finds anything. The
planner is the real ``openai`` client against the local stub, which answers with recorded plans.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.comfy_harness import PromptFailed

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

FINDS_NOTHING = "Qwen2.5-VL-7B-Instruct"
FINDS_THE_MIDDLE = "VisionReasoner-7B"
SAMPLE = "agentic_edit_sample.png"


def agent_prompt(instruction: str, base_url: str, grounding_model: str) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": SAMPLE}},
        "2": {"class_type": "AgenticEditAgentPlanner", "inputs": {
            "image": ["1", 0], "instruction": instruction, "planner": "openai", "base_url": base_url,
            "model": "planner-model", "temperature": 0.0, "local_model": FINDS_NOTHING,
            "grounding_model": grounding_model, "sam_model": "sam2.1-hiera-large"}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "replan_result"}},
    }


def recolor_plan(query: str) -> dict:
    return {"steps": [
        {"id": "s1", "tool": "segment_by_text", "args": {"query": query}, "inputs": {"image": "image"}},
        {"id": "s2", "tool": "recolor", "args": {"color": "red"}, "inputs": {"image": "image", "mask": "s1.mask"}}]}


NOTHING_FOUND_PLAN = {"steps": [
    {"id": "s1", "tool": "place_region", "args": {"position": "top"}, "inputs": {"image": "image"}},
    {"id": "s2", "tool": "draw_text", "args": {"text": "nothing found"},
     "inputs": {"image": "image", "boxes": "s1.boxes"}}]}


def run_folder(server, started: set[Path]) -> Path:
    runs = set((server.output_dir / "agentic_edit" / "runs").iterdir()) - started
    assert len(runs) == 1, runs
    return runs.pop()


def existing_runs(server) -> set[Path]:
    root = server.output_dir / "agentic_edit" / "runs"
    return set(root.iterdir()) if root.is_dir() else set()


def executed(result, suffix: str) -> list[str]:
    """Expanded nodes (under the agent node "2") whose id ends with ``.<suffix>``, each time one ran."""
    return [n for n in result.executed_nodes() if n.startswith("2.") and n.endswith(f".{suffix}")]


def source_pixels(server) -> np.ndarray:
    return np.asarray(Image.open(server.input_dir / SAMPLE).convert("RGB")).astype(int)


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_grounding_that_finds_nothing_makes_the_planner_plan_once_more(comfy_server, openai_stub):
    openai_stub.reply_json(recolor_plan("the dog")).reply_json(NOTHING_FOUND_PLAN)
    before = existing_runs(comfy_server)
    result = comfy_server.run(agent_prompt("make the dog red", openai_stub.base_url, FINDS_NOTHING))
    assert result.history["status"]["status_str"] == "success"

    # the planner was asked twice; the second time it was told what was not found, with the image again
    first, second = openai_stub.chat_requests
    assert "found nothing" not in first.text()
    assert "step s1: segment_by_text 'the dog' found nothing in the image" in second.text()
    assert "make the dog red" in second.text() and second.image_urls()
    # the grounding ran once, in the first stage; then only the new plan's steps ran (its s1 is place_region)
    assert executed(result, "s1") == ["2.0.0.s1", "2.0.0._continue.0.0.s1"]
    assert executed(result, "s2") == ["2.0.0._continue.0.0.s2"]

    run = run_folder(comfy_server, before)
    trace = json.loads((run / "trace.json").read_text())
    assert [(s["tool"], s["status"]) for s in trace["steps"]] == [("place_region", "done"), ("draw_text", "done")]
    replanned = trace["replanned"]
    assert replanned["not_found"] == [{"step": "s1", "tool": "segment_by_text", "query": "the dog"}]
    assert [s["tool"] for s in replanned["first_plan"]["steps"]] == ["segment_by_text", "recolor"]
    assert json.loads((run / "plan.json").read_text())["replanned"] == replanned
    assert trace["instruction"] == "make the dog red"
    # the exported workflow is the plan that ran
    api = json.loads((run / "workflow_api.json").read_text())
    assert sorted(n["class_type"] for n in api.values() if n["class_type"].startswith("AgenticEdit")) == \
        ["AgenticEditDrawText", "AgenticEditPlaceRegion"]
    # the plan output is the new plan, and the image has the text at the top and nothing else changed
    [plan_out] = [o for o in result.outputs.values() if "images" in o and o["images"][0]["filename"]
                  .startswith("replan_result")]
    final = png(comfy_server.output_path(plan_out["images"][0]))
    changed = np.abs(final - source_pixels(comfy_server)).max(axis=-1) > 8
    rows = np.flatnonzero(changed.any(axis=1))
    assert rows.size and rows.max() < final.shape[0] // 2, "the text is drawn in the top half only"


def test_a_second_miss_stops_the_run_with_the_clear_message(comfy_server, openai_stub):
    openai_stub.reply_json(recolor_plan("the dog")).reply_json(recolor_plan("the cat"))
    before = existing_runs(comfy_server)
    with pytest.raises(PromptFailed, match="nothing matching 'the cat' was found"):
        comfy_server.run(agent_prompt("make the dog blue", openai_stub.base_url, FINDS_NOTHING))
    assert len(openai_stub.chat_requests) == 2, "the planner is asked again once, not a third time"
    run = run_folder(comfy_server, before)
    plan = json.loads((run / "plan.json").read_text())
    assert plan["plan"]["steps"][0]["args"]["query"] == "the cat"
    assert plan["replanned"]["not_found"][0]["query"] == "the dog"
    assert not (run / "s2.json").exists(), "nothing was recoloured"


def test_a_planner_that_declines_the_second_time_says_why(comfy_server, openai_stub):
    openai_stub.reply_json(recolor_plan("the dog")).reply_json({"refuse": "there is no dog in this photo"})
    before = existing_runs(comfy_server)
    with pytest.raises(PromptFailed, match="(?s)'the dog' found nothing.*there is no dog in this photo"):
        comfy_server.run(agent_prompt("make the dog green", openai_stub.base_url, FINDS_NOTHING))
    plan = json.loads((run_folder(comfy_server, before) / "plan.json").read_text())
    assert plan["replanned"]["declined"] == "the openai:planner-model planner declined: there is no dog in this photo"


def test_when_everything_is_found_the_plan_runs_and_grounds_once(comfy_server, openai_stub):
    openai_stub.reply_json(recolor_plan("the cup"))
    before = existing_runs(comfy_server)
    result = comfy_server.run(agent_prompt("make the cup red", openai_stub.base_url, FINDS_THE_MIDDLE))
    assert result.history["status"]["status_str"] == "success"
    assert len(openai_stub.chat_requests) == 1

    # segment_by_text ran once, in the first stage; the rest of the plan linked to it
    [grounding] = executed(result, "s1")
    assert grounding == "2.0.0.s1"
    assert executed(result, "s2") == ["2.0.0._continue.0.0.s2"]
    assert executed(result, "s1_record") == ["2.0.0._continue.0.0.s1_record"]

    run = run_folder(comfy_server, before)
    trace = json.loads((run / "trace.json").read_text())
    assert "replanned" not in trace
    assert [(s["tool"], s["status"]) for s in trace["steps"]] == [("segment_by_text", "done"), ("recolor", "done")]
    assert trace["steps"][0]["args"]["if_nothing_found"] == "error"  # the plan as planned is what is recorded
    mask = np.asarray(Image.open(run / "s1_mask.png")) > 127
    assert mask.any() and not mask.all()
    # recolour changed the masked pixels (towards red) and nothing outside the mask
    source, final = source_pixels(comfy_server), png(run / "s2_image.png")
    assert np.array_equal(final[~mask], source[~mask])
    inside = final[mask]
    assert (inside[:, 0] >= inside[:, 1]).mean() > 0.9
    assert (np.abs(final - source).max(axis=-1) > 0)[mask].mean() > 0.5


def test_grounding_on_an_edited_image_runs_its_edits_first_and_only_once(comfy_server, openai_stub):
    # the text is drawn first, then the cup is found in the image with the text: all three run in the
    # first stage, and the second stage records them and recolours without running them again
    openai_stub.reply_json({"steps": [
        {"id": "s1", "tool": "place_region", "args": {"position": "bottom"}, "inputs": {"image": "image"}},
        {"id": "s2", "tool": "draw_text", "args": {"text": "CUP"}, "inputs": {"image": "image", "boxes": "s1.boxes"}},
        {"id": "s3", "tool": "segment_by_text", "args": {"query": "the cup"}, "inputs": {"image": "s2.image"}},
        {"id": "s4", "tool": "recolor", "args": {"color": "blue"}, "inputs": {"image": "s2.image", "mask": "s3.mask"}},
    ]})
    before = existing_runs(comfy_server)
    result = comfy_server.run(agent_prompt("write CUP at the bottom, then make the cup blue", openai_stub.base_url,
                                           FINDS_THE_MIDDLE))
    assert result.history["status"]["status_str"] == "success"
    for step in ("s1", "s2", "s3"):
        assert executed(result, step) == [f"2.0.0.{step}"], step
    assert executed(result, "s4") == ["2.0.0._continue.0.0.s4"]
    run = run_folder(comfy_server, before)
    trace = json.loads((run / "trace.json").read_text())
    assert [(s["tool"], s["status"]) for s in trace["steps"]] == [
        ("place_region", "done"), ("draw_text", "done"), ("segment_by_text", "done"), ("recolor", "done")]
    # the recolour started from the image with the text, as recorded for s2
    with_text, final = png(run / "s2_image.png"), png(run / "s4_image.png")
    mask = np.asarray(Image.open(run / "s3_mask.png")) > 127
    assert (with_text != source_pixels(comfy_server)).any()
    assert np.array_equal(final[~mask], with_text[~mask])

"""The grounding node in a real ComfyUI, on the tiny Qwen2.5-VL checkpoint (random weights: the
plumbing and the 'nothing found' contract are checked here; exact boxes in test_grounding_*)."""

from __future__ import annotations

import pytest

from tests.comfy_harness import PromptFailed

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


def _prompt(if_nothing_found: str, model: str = "Qwen2.5-VL-7B-Instruct") -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "agentic_edit_sample.png"}},
        "2": {"class_type": "AgenticEditGround", "inputs": {
            "image": ["1", 0], "query": "the cat", "grounding_model": model, "mode": "auto", "max_pixels": 50176,
            "max_objects": 0, "if_nothing_found": if_nothing_found, "max_new_tokens": 16}},
        "3": {"class_type": "AgenticEditRenderBoxes", "inputs": {
            "image": ["1", 0], "boxes": ["2", 0], "positive_points": ["2", 1], "line_width": 0,
            "show_labels": True, "show_scores": True}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "ground"}},
    }


def test_model_choices_list_the_tiny_checkpoints(comfy_server):
    info = comfy_server.get_json("/object_info/AgenticEditGround")["AgenticEditGround"]
    choices = info["input"]["required"]["grounding_model"][1]["options"]
    assert {"Qwen2.5-VL-7B-Instruct", "VisionReasoner-7B"} <= set(choices)


def test_ground_node_runs_and_feeds_core_shaped_boxes_downstream(comfy_server):
    result = comfy_server.run(_prompt("empty"))
    assert result.history["status"]["status_str"] == "success"
    assert "2" in result.executed_nodes() and result.images()


def test_nothing_found_stops_with_a_clear_message_or_boxes_flow(comfy_server):
    # The tiny model's greedy answer is fixed; with random weights it names no box.
    with pytest.raises(PromptFailed, match="nothing matching 'the cat' was found"):
        comfy_server.run(_prompt("error"))


def test_missing_model_names_the_folder(comfy_server):
    prompt = _prompt("empty", model="Qwen2.5-VL-3B-Instruct")
    with pytest.raises(Exception) as err:
        comfy_server.run(prompt)
    assert "LLM" in str(err.value) and "Qwen2.5-VL-3B-Instruct" in str(err.value)

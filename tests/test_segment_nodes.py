"""SAM-2 nodes in a real ComfyUI on the tiny checkpoints: boxes/points from core-shaped inputs in,
masks out at the image's size, clean errors for bad prompts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.comfy_harness import PromptFailed

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


def _segment_prompt(boxes_json: str, positive: str = "") -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": "agentic_edit_sample.png"}},
        "2": {"class_type": "AgenticEditMakeBoxes", "inputs": {
            "boxes_json": boxes_json, "x": 0, "y": 0, "width": 1, "height": 1, "label": "",
            "positive_points": positive, "negative_points": ""}},
        "3": {"class_type": "AgenticEditSegment", "inputs": {
            "image": ["1", 0], "sam_model": "sam2.1-hiera-large", "multimask": "auto", "grow": 0,
            "fill_holes": False, "remove_islands_below": 0, "close": 0, "feather": 0.0,
            "boxes": ["2", 0], "positive_points": ["2", 1]}},
        "4": {"class_type": "MaskToImage", "inputs": {"mask": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "seg"}},
    }


def test_segment_node_writes_a_mask_of_the_image_size(comfy_server):
    boxes = json.dumps([{"x": 120, "y": 30, "width": 280, "height": 250, "label": "cat"}])
    result = comfy_server.run(_segment_prompt(boxes, json.dumps([{"x": 260, "y": 150}])))
    [ref] = result.images()
    mask = np.asarray(Image.open(comfy_server.output_path(ref)).convert("L"))
    assert mask.shape == (300, 451)
    assert set(np.unique(mask)) <= {0, 255}


def test_segment_node_names_a_bad_box(comfy_server):
    boxes = json.dumps([{"x": 900, "y": 900, "width": 10, "height": 10}])
    with pytest.raises(PromptFailed, match="(?i)box"):
        comfy_server.run(_segment_prompt(boxes))

"""Remove Object (its ObjectClear and inpaint methods, the effect mask) and Replace Text in a real
ComfyUI against the tiny checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.comfy_harness import PromptFailed
from tests.pack import PACK_ROOT

pytestmark = [pytest.mark.comfy, pytest.mark.slow]

SAMPLE = "agentic_edit_sample.png"   # 451x300


def _boxes(boxes: list[dict]) -> dict:
    return {"class_type": "AgenticEditMakeBoxes", "inputs": {
        "boxes_json": json.dumps(boxes), "x": 0, "y": 0, "width": 1, "height": 1, "label": "",
        "positive_points": "", "negative_points": ""}}


def _remove_prompt(method: str, box: dict) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": SAMPLE}},
        "2": _boxes([box]),
        "3": {"class_type": "AgenticEditBoxesToMask", "inputs": {"image": ["1", 0], "boxes": ["2", 0]}},
        "4": {"class_type": "AgenticEditRemoveObject", "inputs": {
            "image": ["1", 0], "mask": ["3", 0], "model": "stable-diffusion-xl-1.0-inpainting-0.1", "grow": 2.0,
            "background_prompt": "empty background", "negative_prompt": "object", "steps": 3, "guidance": 0.0,
            "scheduler": "default", "seed": 0, "batch": 1, "mode": "crop", "context_margin": 0.25, "feather": 4.0,
            "method": method, "objectclear_model": "ObjectClear", "resolution": 0, "effect_threshold": 0.5}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "removed"}},
        "6": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 3]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "effect"}},
        "8": {"class_type": "MaskToImage", "inputs": {"mask": ["4", 1]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "fused"}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["4", 2]}},
    }


def _saved(server, result, node: str) -> np.ndarray:
    [ref] = result.outputs[node]["images"]
    return np.asarray(Image.open(server.output_path(ref)).convert("RGB"))


def _note(result) -> str:
    return "".join(result.outputs["10"]["text"])


@pytest.mark.parametrize("method", ["auto", "inpaint"])
def test_remove_object_node_methods_and_effect_mask(comfy_server, method):
    box = {"x": 150, "y": 60, "width": 150, "height": 140}
    result = comfy_server.run(_remove_prompt(method, box))
    note = _note(result)
    original = np.asarray(Image.open(PACK_ROOT / "workflows" / "inputs" / SAMPLE).convert("RGB"))
    removed, effect, fused = (_saved(comfy_server, result, n) for n in ("5", "7", "9"))
    assert removed.shape == effect.shape == fused.shape == original.shape
    untouched = fused[..., 0] == 0
    assert untouched.any() and np.array_equal(removed[untouched], original[untouched])
    if method == "auto":   # the tiny ObjectClear is installed, so auto picks it
        assert note.startswith("objectclear removal (auto: ObjectClear weights found)"), note
        assert len(np.unique(effect[..., 0])) > 10   # a soft attention map, not a box
    else:
        assert note.startswith("inpaint removal"), note
        grown = effect[..., 0] > 127   # the inpaint method's effect mask: the grown box
        assert grown[60:200, 150:300].all() and not grown[:50].any()


def test_remove_object_node_names_an_object_too_small_to_embed(comfy_server):
    prompt = _remove_prompt("objectclear", {"x": 0, "y": 0, "width": 1, "height": 1})
    prompt["4"]["inputs"]["grow"] = 0.0
    with pytest.raises(PromptFailed, match="too small to embed"):
        comfy_server.run(prompt)


def test_auto_falls_back_to_inpainting_for_a_mask_objectclear_cannot_take(comfy_server):
    result = comfy_server.run(_remove_prompt("auto", {"x": 0, "y": 0, "width": 451, "height": 300}))
    note = _note(result)
    assert note.startswith("inpaint removal (auto: ObjectClear cannot take this mask: mask: covers 100%"), note


def test_replace_text_node_writes_every_box(comfy_server):
    boxes = [{"x": 20, "y": 10, "width": 180, "height": 50}, {"x": 250, "y": 230, "width": 180, "height": 50}]
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": SAMPLE}},
        "2": _boxes(boxes),
        "3": {"class_type": "AgenticEditReplaceText", "inputs": {
            "image": ["1", 0], "boxes": ["2", 0], "text": "SOLD | CLOSED", "match_color": False, "color": "#ff0000",
            "removal": "inpaint", "font": "DejaVuSans", "padding": 0.08, "grow": 2.0,
            "inpaint_model": "stable-diffusion-inpainting", "objectclear_model": "ObjectClear", "steps": 2,
            "seed": 0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "replaced"}},
        "10": {"class_type": "PreviewAny", "inputs": {"source": ["3", 2]}},
    }
    result = comfy_server.run(prompt)
    image = _saved(comfy_server, result, "4").astype(int)
    for box in boxes:   # red letters in each box
        patch = image[box["y"]:box["y"] + box["height"], box["x"]:box["x"] + box["width"]]
        red = (patch[..., 0] > 200) & (patch[..., 1] < 60) & (patch[..., 2] < 60)
        assert red.sum() > 50
    note = _note(result)
    assert "'SOLD' in #ff0000" in note and "'CLOSED' in #ff0000" in note
    prompt["3"]["inputs"]["text"] = "a | b | c"
    with pytest.raises(PromptFailed, match="3 texts for 2 boxes"):
        comfy_server.run(prompt)

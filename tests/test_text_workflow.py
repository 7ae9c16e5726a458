"""The saved text workflow queued through /prompt of a real ComfyUI: every changed pixel lies
inside the given boxes, and each box's text is fitted to it (checked on the rendered output)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.pack import PACK_ROOT

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


def _saved_as_comfy_would(rgb_uint8: np.ndarray) -> np.ndarray:
    # LoadImage divides by 255 in float32 and SaveImage multiplies back and truncates: an
    # untouched pixel comes out exactly as this.
    return np.clip(255.0 * (rgb_uint8.astype(np.float32) / 255.0), 0, 255).astype(np.uint8)


def test_text_workflow_changes_only_pixels_inside_its_boxes(comfy_server):
    prompt = json.loads((PACK_ROOT / "workflows" / "api" / "text_overlay.json").read_text())
    boxes = json.loads(prompt["2"]["inputs"]["boxes_json"])
    result = comfy_server.run(prompt)

    [ref] = result.images()
    out = np.asarray(Image.open(comfy_server.output_path(ref)).convert("RGB"))
    source = np.asarray(Image.open(PACK_ROOT / "workflows" / "inputs" / "agentic_edit_sample.png").convert("RGB"))
    assert out.shape == source.shape

    changed = (out != _saved_as_comfy_would(source)).any(axis=-1)
    inside = np.zeros_like(changed)
    for b in boxes:
        inside[b["y"]:b["y"] + b["height"], b["x"]:b["x"] + b["width"]] = True
    assert changed.any(), "the workflow drew nothing"
    assert not (changed & ~inside).any(), f"{int((changed & ~inside).sum())} changed pixels outside the boxes"

    for b in boxes:
        ink = changed[b["y"]:b["y"] + b["height"], b["x"]:b["x"] + b["width"]]
        rows, cols = np.nonzero(ink)
        assert rows.size, f"box {b['label']} received no text"
        ink_w = cols.max() - cols.min() + 1
        ink_h = rows.max() - rows.min() + 1
        # fitted: the text fills the box along its limiting side (padding is 5% of the short side)
        assert max(ink_w / b["width"], ink_h / b["height"]) > 0.6, (b, ink_w, ink_h)


def test_text_node_reports_text_that_cannot_fit(comfy_server):
    from tests.comfy_harness import PromptFailed

    prompt = json.loads((PACK_ROOT / "workflows" / "api" / "text_overlay.json").read_text())
    prompt["2"]["inputs"]["boxes_json"] = json.dumps([{"x": 10, "y": 10, "width": 12, "height": 6}])
    prompt["3"]["inputs"].update(text="a sentence far too long for a tiny box", one_line_per_box=False, min_size=20)
    with pytest.raises(PromptFailed, match="(?i)fit"):
        comfy_server.run(prompt)

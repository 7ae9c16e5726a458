"""The Insert Object node in a real ComfyUI on the tiny FLUX.1-dev checkpoint: a non-square photo in,
the photo's size out, the mask and the note; a subject missing from the prompt fails with the engine's
message."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.comfy_harness import PromptFailed
from tests.pack import PACK_ROOT

pytestmark = [pytest.mark.comfy, pytest.mark.slow]


def _prompt(**changes) -> dict:
    prompt = json.loads((PACK_ROOT / "workflows" / "api" / "add_object.json").read_text())
    prompt["2"]["inputs"].update({"steps": 4, "structure_transfer_step": 1, "blend_step": 2, "refine": "off",
                                  **changes})
    prompt["3"]["inputs"]["filename_prefix"] = "addit_node"
    prompt["5"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "addit_mask"}}
    return prompt


def test_insert_object_node_runs_and_keeps_the_size(comfy_server):
    result = comfy_server.run(_prompt(source_prompt=""))
    saved = {ref["filename"].split("_")[1]: np.asarray(Image.open(comfy_server.output_path(ref)))
             for ref in result.images()}
    assert saved["node"].shape == (300, 451, 3) and saved["mask"].shape[:2] == (300, 451)
    note = result.outputs["6"]["text"][0]
    assert "Add-it on FLUX at 448x304" in note and "source prompt derived" in note and "scaled" in note


def test_insert_object_node_names_a_subject_missing_from_the_prompt(comfy_server):
    with pytest.raises(PromptFailed, match="subject: 'dog' does not occur in the target prompt"):
        comfy_server.run(_prompt(subject="dog"))

"""Text replacement: texts per box, the old text's colour, removal through the real engines on tiny
checkpoints (inpainting and ObjectClear), every box receiving its text, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from agentic_edit.engines.geometry import Box
from agentic_edit.engines.text_draw import TextInputError, draw_text
from agentic_edit.engines.text_replace import removal_function, replace_text, sample_text_color, split_texts

RED = "#d01010"


@pytest.fixture(scope="module")
def models(tiny_models_dir):
    from agentic_edit.models import free

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield tiny_models_dir
    free("sd15_inpaint")
    free("objectclear")


@pytest.fixture(scope="module")
def signs(photo_coffee):
    """The coffee photo (400x600) with two cream signs carrying red words."""
    image = photo_coffee.astype(np.float32) / 255.0
    boxes = [Box(40, 30, 240, 90), Box(330, 300, 560, 370)]
    for box in boxes:
        image[int(box.y1):int(box.y2), int(box.x1):int(box.x2)] = (0.95, 0.92, 0.8)
    image = draw_text(image, boxes, ["SALE", "OPEN 9-5"], color=RED, padding=0.15).image
    return image, boxes


def test_split_texts():
    assert split_texts("SOLD | CLOSED", 2) == ["SOLD", "CLOSED"]
    assert split_texts("SOLD\nCLOSED\n", 2) == ["SOLD", "CLOSED"]
    assert split_texts("SOLD", 3) == ["SOLD"] * 3
    assert split_texts("Two words\n", 1) == ["Two words"]
    with pytest.raises(TextInputError, match="3 texts for 2 boxes"):
        split_texts("a|b|c", 2)
    with pytest.raises(TextInputError, match="empty"):
        split_texts("  ", 2)
    with pytest.raises(TextInputError, match="parts .* is empty"):
        split_texts("a||b", 3)


def test_the_old_text_colour_is_sampled_from_the_box(signs):
    image, boxes = signs
    for box in boxes:
        colour = sample_text_color(image, box)
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        assert np.abs(rgb - np.array([0xd0, 0x10, 0x10])).max() <= 24, colour
    plain = np.full((50, 50, 3), 0.5, np.float32)
    assert sample_text_color(plain, Box(5, 5, 45, 45)) is None


def _outside(boxes, shape, margin):
    keep = np.ones(shape, bool)
    for box in boxes:
        keep[max(0, int(box.y1) - margin):int(box.y2) + margin, max(0, int(box.x1) - margin):int(box.x2) + margin] = False
    return keep


def test_inpaint_removal_then_every_box_gets_its_text(models, signs):
    image, boxes = signs
    notes: list[str] = []
    steps: list[tuple[int, int]] = []
    remover = removal_function("inpaint", inpaint_model="stable-diffusion-inpainting", steps=2, seed=1,
                               progress=lambda s, t: steps.append((s, t)), notes=notes)
    result = replace_text(image, boxes, ["SOLD", "CLOSED"], remove=remover, match_color=True)
    assert steps and steps[-1][0] == steps[-1][1]
    assert any("stable-diffusion-inpainting" in n for n in notes)
    for box in boxes:   # each box holds new letters, drawn in the sampled red
        rows, cols = slice(int(box.y1), int(box.y2)), slice(int(box.x1), int(box.x2))
        assert (result.text_mask[rows, cols] > 0.5).sum() > 50
        ink = result.image[rows, cols][result.text_mask[rows, cols] > 0.99]
        assert np.abs(ink - np.array([0xd0, 0x10, 0x10]) / 255).max() < 0.1
    assert result.colors[0].startswith("#") and len(result.colors) == 2
    assert "'SOLD'" in result.notes[-1] and "'CLOSED'" in result.notes[-1]
    # Nothing changes beyond the boxes grown for removal and the paste's soft rim.
    far = _outside(boxes, image.shape[:2], margin=3 + 4 + 2)
    assert np.array_equal(result.image[far], image[far])
    assert (result.mask[far] == 0).all()


def test_objectclear_removal_path(models, signs):
    image, boxes = signs
    notes: list[str] = []
    remover = removal_function("auto", inpaint_model="stable-diffusion-inpainting", steps=3, resolution=128,
                               notes=notes)   # auto: the tiny ObjectClear is installed
    result = replace_text(image, boxes[:1], "SOLD", remove=remover, match_color=False, color="#0000ff")
    assert any(n.startswith("ObjectClear") for n in notes)
    assert result.colors == ["#0000ff"]
    box = boxes[0]
    assert (result.text_mask[int(box.y1):int(box.y2), int(box.x1):int(box.x2)] > 0.5).sum() > 50
    assert np.array_equal(result.image[result.mask == 0], image[result.mask == 0])


def test_auto_removal_inpaints_a_box_too_small_for_objectclear(models, signs):
    image, _ = signs
    notes: list[str] = []
    remover = removal_function("auto", inpaint_model="stable-diffusion-inpainting", steps=2, resolution=128,
                               notes=notes)
    result = replace_text(image, [Box(100, 100, 110, 104)], "x", remove=remover, match_color=False)
    assert any("ObjectClear cannot take this mask" in n and "too small to embed" in n for n in notes), notes
    assert any("stable-diffusion-inpainting" in n for n in notes)
    assert np.array_equal(result.image[result.mask == 0], image[result.mask == 0])


def test_auto_removal_falls_back_to_inpainting_without_objectclear(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tmp_path))
    remover = removal_function("auto", inpaint_model="stable-diffusion-inpainting")
    assert remover.__name__ == "with_inpaint"
    with pytest.raises(TextInputError, match="removal"):
        removal_function("blur", inpaint_model="x")


def test_text_found_nowhere_and_mismatched_texts_are_clear_errors(signs):
    image, boxes = signs

    def never(rgb, mask):  # the errors come before any removal
        raise AssertionError("removal ran")

    with pytest.raises(TextInputError, match="found nowhere"):
        replace_text(image, [], "SOLD", remove=never)
    with pytest.raises(TextInputError, match="3 texts for 2 boxes"):
        replace_text(image, boxes, ["a", "b", "c"], remove=never)
    with pytest.raises(TextInputError, match="RGB"):
        replace_text(image[..., 0], boxes, "a", remove=never)

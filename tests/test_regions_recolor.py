"""Named regions and recolouring: exact geometry, shading kept, pixels outside the mask untouched."""

from __future__ import annotations

import numpy as np
import pytest

from agentic_edit.engines.colors import ColorInputError
from agentic_edit.engines.geometry import Box
from agentic_edit.engines.imaging import ImageInputError
from agentic_edit.engines.recolor import _hsv_to_rgb, _rgb_to_hsv, recolor
from agentic_edit.engines.regions import POSITIONS, RegionInputError, place_region


def test_top_band_spans_the_width_inside_the_margin():
    box = place_region(400, 300, "top", size=0.2, margin=0.05)
    assert box == Box(15, 15, 385, 75, label="top")


@pytest.mark.parametrize("position", POSITIONS)
def test_every_position_lies_inside_the_image_where_it_says(position):
    w, h = 451, 300
    box = place_region(w, h, position, size=0.25)
    assert 0 <= box.x1 < box.x2 <= w and 0 <= box.y1 < box.y2 <= h
    cx, cy = (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2
    if "top" in position:
        assert cy < h / 3
    if "bottom" in position:
        assert cy > 2 * h / 3
    if "left" in position:
        assert cx < w / 3
    if "right" in position:
        assert cx > 2 * w / 3
    if position == "center":
        assert abs(cx - w / 2) <= 1 and abs(cy - h / 2) <= 1


def test_region_errors_name_the_input():
    with pytest.raises(RegionInputError, match="position: 'middle-ish'"):
        place_region(10, 10, "middle-ish")
    with pytest.raises(RegionInputError, match="size"):
        place_region(10, 10, "top", size=0)


def test_hsv_round_trip():
    rgb = np.random.default_rng(0).random((50, 3))
    np.testing.assert_allclose(_hsv_to_rgb(*_rgb_to_hsv(rgb)), rgb, atol=1e-9)


def test_recolor_changes_hue_keeps_shading_and_leaves_the_rest_bit_identical(photo_coffee):
    image = photo_coffee.astype(np.float32) / 255
    mask = np.zeros(image.shape[:2], np.float32)
    mask[100:300, 200:400] = 1.0
    out = recolor(image, mask, "#0000ff")
    assert np.array_equal(out[mask == 0], image[mask == 0])
    inside_in, inside_out = image[mask > 0], out[mask > 0]
    # hue moved to blue: blue dominates wherever the pixel is not near black
    bright = inside_out.max(axis=-1) > 0.1
    assert (inside_out[bright].argmax(axis=-1) == 2).mean() > 0.99
    # brightness (HSV value) kept exactly
    np.testing.assert_allclose(inside_out.max(axis=-1), inside_in.max(axis=-1), atol=1e-5)


def test_recolor_soft_mask_strength_and_bad_input():
    image = np.full((4, 4, 3), 0.5, np.float32)
    image[..., 0] = 0.8
    half = recolor(image, np.full((4, 4), 1.0), "blue", strength=0.5)
    full = recolor(image, np.full((4, 4), 1.0), "blue")
    np.testing.assert_allclose(half, (image + full) / 2, atol=1e-6)
    assert np.array_equal(recolor(image, np.zeros((4, 4)), "blue"), image)
    white = recolor(image, np.ones((4, 4)), "white")
    assert np.allclose(white[..., 0], white[..., 1]) and white.mean() > image.mean()
    with pytest.raises(ColorInputError, match="color"):
        recolor(image, np.ones((4, 4)), "blurple")
    with pytest.raises(ImageInputError, match="mask"):
        recolor(image, np.ones((3, 4)), "blue")

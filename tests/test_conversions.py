"""Image, mask, box and point conversions: every input form users feed in, batches kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from agentic_edit.engines.geometry import (Box, GeometryInputError, Point, boxes_per_image, boxes_to_wire,
                                           points_from_value, points_to_wire)
from agentic_edit.engines.imaging import ImageInputError, pil_to_rgb_array, to_mask_array, to_rgb_array
from agentic_edit.nodes.convert import (arrays_to_image_batch, arrays_to_mask_batch, image_batch_to_arrays,
                                        mask_batch_to_arrays)


def test_rgba_is_composited_over_black():
    img = Image.new("RGBA", (4, 3), (200, 100, 50, 128))
    out = pil_to_rgb_array(img)
    assert out.shape == (3, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 0], np.array([200, 100, 50]) / 255 * 128 / 255, atol=1e-6)


def test_grayscale_palette_and_16bit_inputs():
    grey = pil_to_rgb_array(Image.new("L", (5, 2), 51))
    np.testing.assert_allclose(grey, 0.2, atol=1e-6)
    pal = Image.new("P", (3, 3))
    pal.putpalette([255, 0, 0] * 256)
    np.testing.assert_allclose(pil_to_rgb_array(pal)[1, 1], [1, 0, 0])
    deep = Image.fromarray(np.full((2, 2), 65535, dtype=np.uint16))
    np.testing.assert_allclose(pil_to_rgb_array(deep), 1.0)
    np.testing.assert_allclose(to_rgb_array(np.full((2, 2, 3), 32768, dtype=np.uint16)), 32768 / 65535, atol=1e-6)


def test_bad_arrays_get_named_errors():
    with pytest.raises(ImageInputError, match="photo"):
        to_rgb_array(np.zeros((2, 2, 7)), name="photo")
    with pytest.raises(ImageInputError, match="NaN"):
        to_rgb_array(np.full((2, 2, 3), np.nan, dtype=np.float32))
    with pytest.raises(ImageInputError, match="4x3 but the image is 5x3"):
        to_mask_array(np.zeros((3, 4)), shape=(3, 5))


def test_image_batches_round_trip_and_keep_batch():
    batch = torch.rand(3, 7, 5, 3)
    arrays = image_batch_to_arrays(batch)
    assert len(arrays) == 3 and arrays[0].shape == (7, 5, 3)
    assert torch.equal(arrays_to_image_batch(arrays), batch)
    rgba = torch.ones(1, 2, 2, 4)
    rgba[..., 3] = 0.5
    assert image_batch_to_arrays(rgba)[0].max() == pytest.approx(0.5)


def test_mask_batch_broadcast_and_size_check():
    masks = mask_batch_to_arrays(torch.ones(1, 4, 6), count=3, size=(4, 6))
    assert len(masks) == 3 and masks[2].shape == (4, 6)
    assert arrays_to_mask_batch(masks).shape == (3, 4, 6)
    with pytest.raises(ImageInputError, match="6x4 but the image is 6x5"):
        mask_batch_to_arrays(torch.ones(1, 4, 6), count=1, size=(5, 6))
    with pytest.raises(ImageInputError, match="2 masks for 3 images"):
        mask_batch_to_arrays(torch.ones(2, 4, 6), count=3, size=(4, 6))


def test_box_forms_reversed_corners_and_core_dicts():
    assert Box.from_dict({"x": 10, "y": 5, "width": 20, "height": 8}) == Box(10, 5, 30, 13)
    assert Box.from_dict({"bbox_2d": [30, 13, 10, 5]}) == Box(10, 5, 30, 13)
    rt = Box.from_dict({"x": 1.5, "y": 2, "width": 3, "height": 4, "label": "cat", "score": 0.9})
    assert rt.to_dict() == {"x": 1.5, "y": 2, "width": 3, "height": 4, "label": "cat", "score": 0.9}
    assert Box(-5, -5, 50, 50).clamped(20, 10) == Box(0, 0, 20, 10)
    assert Box(0.2, 0.5, 3.1, 2.0).pixel_bounds(10, 10) == (0, 0, 4, 2)
    with pytest.raises(GeometryInputError, match="boxes\\[0\\]"):
        boxes_per_image([{"x": 1}], 1)


def test_boxes_per_image_accepts_core_shapes():
    one = {"x": 0, "y": 0, "width": 2, "height": 2}
    assert len(boxes_per_image(one, 3)) == 3
    assert boxes_per_image([one, one], 2)[1] == [Box(0, 0, 2, 2)] * 2
    per_frame = boxes_per_image([[one], []], 3)
    assert per_frame == [[Box(0, 0, 2, 2)], [], []]
    assert boxes_per_image(json.dumps([one]), 1) == [[Box(0, 0, 2, 2)]]
    assert boxes_to_wire([[Box(0, 0, 2, 2, "a")]]) == [[{"x": 0, "y": 0, "width": 2, "height": 2, "label": "a"}]]


def test_points_follow_sam3_convention():
    pts = points_from_value('[{"x": 3, "y": 4}, [5, 6]]')
    assert pts == [Point(3, 4), Point(5, 6)]
    assert json.loads(points_to_wire(pts)) == [{"x": 3, "y": 4}, {"x": 5, "y": 6}]
    with pytest.raises(GeometryInputError, match="not valid JSON"):
        points_from_value("[{")


def test_a_float_rgb_image_in_range_is_shared_read_only_and_others_are_converted_as_before():
    """``to_rgb_array`` copies no float32 RGB image already in 0..1 (ComfyUI's frames): it returns a
    read-only view with the same bits; anything else gets the checked, clipped float32 copy."""
    rng = np.random.default_rng(11)
    ready = rng.random((9, 13, 3), dtype=np.float32)
    ready[0, 0] = (0.0, 1.0, 0.5)
    for given in (ready, ready[:, ::-1], np.asfortranarray(ready)):
        out = to_rgb_array(given)
        assert np.shares_memory(out, given) and not out.flags.writeable
        assert out.dtype == np.float32 and np.array_equal(out.view(np.uint32), np.asarray(given).view(np.uint32))
    assert ready.flags.writeable  # the caller's own array keeps its flags
    for name, value in {"above one": ready * np.float32(1.5), "negative": ready - np.float32(0.5),
                        "minus zero": np.where(ready > 0.5, ready, np.float32(-0.0)),
                        "float64": ready.astype(np.float64) * 1.2, "float16": ready.astype(np.float16)}.items():
        out = to_rgb_array(value)
        assert not np.shares_memory(out, value) and out.flags.writeable, name
        expected = np.clip(np.asarray(value).astype(np.float32), 0.0, 1.0)   # the conversion's definition
        assert np.array_equal(out.view(np.uint32), expected.view(np.uint32)), name
    for bad in (np.nan, np.inf, -np.inf):
        spoiled = ready.copy()
        spoiled[2, 3, 1] = bad
        with pytest.raises(ImageInputError, match="NaN or infinite"):
            to_rgb_array(spoiled)
    mask = ready[..., 0].copy()
    assert not np.shares_memory(to_mask_array(mask), mask)  # masks are still copied (engines edit them)

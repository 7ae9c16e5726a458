"""Crop-and-stitch on its own (engines/crop_stitch.py): box math, working sizes, the paste mask, and
that pasting never changes a pixel outside the paste mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from agentic_edit.engines.crop_stitch import (CropBox, CropPlan, CropStitchInputError, crop_for_model, ensure_min_size,
                                              expand_box, expand_to_aspect, margin_pixels, mask_bounds,
                                              outward_feather, paste_back, plan_crop, resize_image, resize_mask,
                                              working_size)


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def rect_mask(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.float32)
    mask[top:bottom, left:right] = 1.0
    return mask


# ---- box math -----------------------------------------------------------------------------------------

def test_mask_bounds_is_the_tight_box_and_none_when_empty():
    mask = rect_mask(77, 123, 20, 30, 41, 61)
    mask[50, 5] = 0.2  # a faint pixel still counts
    assert mask_bounds(mask) == CropBox(5, 20, 56, 31)
    assert mask_bounds(np.zeros((5, 7), np.float32)) is None


def test_margin_pixels_takes_fractions_of_the_longer_side_or_pixels():
    box = CropBox(10, 10, 40, 20)
    assert margin_pixels(0.25, box) == 10
    assert margin_pixels(0, box) == 0
    assert margin_pixels(12, box) == 12
    assert margin_pixels(7.6, box) == 8
    for bad in (-1, float("nan"), "10", True):
        with pytest.raises(CropStitchInputError, match="context_margin"):
            margin_pixels(bad, box)


def test_expand_box_and_min_size_stay_inside_the_image():
    assert expand_box(CropBox(2, 3, 10, 10), 5, 100, 50) == CropBox(0, 0, 17, 18)
    assert expand_box(CropBox(90, 40, 10, 10), 5, 100, 50) == CropBox(85, 35, 15, 15)
    # widened around its centre, then shifted back inside at the border
    assert ensure_min_size(CropBox(45, 20, 10, 10), 30, 100, 50) == CropBox(35, 10, 30, 30)
    assert ensure_min_size(CropBox(0, 0, 4, 4), 30, 100, 50) == CropBox(0, 0, 30, 30)
    # never more than the image
    assert ensure_min_size(CropBox(0, 0, 4, 4), 300, 100, 50) == CropBox(0, 0, 100, 50)


def test_expand_to_aspect_grows_one_side_only():
    wide = expand_to_aspect(CropBox(40, 40, 20, 20), 2.0, 200, 200)
    assert (wide.width, wide.height) == (40, 20) and wide.x == 30 and wide.y == 40
    tall = expand_to_aspect(CropBox(40, 40, 20, 20), 0.5, 200, 200)
    assert (tall.width, tall.height) == (20, 40) and tall.y == 30
    clamped = expand_to_aspect(CropBox(0, 0, 20, 20), 4.0, 50, 50)
    assert clamped == CropBox(0, 0, 50, 20)


def test_working_size_keeps_area_aspect_and_multiples():
    assert working_size(512, 512, 512) == (512, 512)
    w, h = working_size(600, 400, 1024)
    assert w % 64 == 0 and h % 64 == 0 and abs(w * h - 1024**2) / 1024**2 < 0.1
    w8, h8 = working_size(123, 77, 512, multiple=8)
    assert w8 % 8 == 0 and h8 % 8 == 0 and abs(w8 / h8 - 123 / 77) < 0.02
    thin = working_size(1, 500, 64)  # a side never drops below one multiple
    assert thin[0] == 64 and thin[1] % 64 == 0 and thin[1] > thin[0]


# ---- planning -----------------------------------------------------------------------------------------

def test_plan_covers_the_mask_with_margin_and_uses_64_multiples_when_it_has_room():
    mask = rect_mask(300, 451, 100, 200, 140, 260)
    plan = plan_crop(mask, 512, context_margin=0.25)
    box = plan.box
    assert box.x <= 200 - 15 and box.right >= 260 + 15 and box.y <= 100 - 15 and box.bottom >= 140 + 15
    assert 0 <= box.x and box.right <= 451 and 0 <= box.y and box.bottom <= 300
    assert min(box.width, box.height) >= 256  # resolution // 2 of context around a small mask
    assert plan.work_width % 64 == 0 and plan.work_height % 64 == 0
    assert abs((box.width / box.height) / (plan.work_width / plan.work_height) - 1) <= 0.01
    assert not plan.is_full_image


def test_plan_full_mode_and_all_white_mask_use_the_whole_image_at_8_multiples():
    mask = rect_mask(77, 123, 10, 10, 20, 20)
    full = plan_crop(mask, 512, mode="full")
    assert full.is_full_image and full.box == CropBox(0, 0, 123, 77)
    # no room to reach a 64-multiple aspect: multiples of 8 keep the stretch small
    assert (full.work_width, full.work_height) == (648, 408)
    assert abs((full.work_width / full.work_height) / (123 / 77) - 1) < 0.02
    white = plan_crop(np.ones((77, 123), np.float32), 64, mode="crop")
    assert white.is_full_image


def test_plan_for_a_mask_at_the_border_and_odd_sizes():
    mask = rect_mask(53, 37, 50, 34, 53, 37)  # the bottom-right corner
    plan = plan_crop(mask, 64, context_margin=2, min_context=0)
    assert plan.box.right == 37 and plan.box.bottom == 53
    assert plan.box.x <= 32 and plan.box.y <= 48
    assert plan.work_width % 8 == 0 and plan.work_height % 8 == 0
    assert plan_crop(np.zeros((53, 37), np.float32), 64) is None


def test_plan_rejects_bad_arguments():
    mask = rect_mask(20, 20, 5, 5, 10, 10)
    with pytest.raises(CropStitchInputError, match="mode"):
        plan_crop(mask, 64, mode="zoom")
    with pytest.raises(CropStitchInputError, match="resolution"):
        plan_crop(mask, 32)
    with pytest.raises(CropStitchInputError, match="mask"):
        plan_crop(np.zeros((3, 4, 5)), 64)


# ---- the paste mask --------------------------------------------------------------------------------------

def test_outward_feather_keeps_the_mask_and_adds_a_rim_that_ends_at_the_radius():
    mask = rect_mask(60, 60, 20, 20, 40, 40)
    rim = outward_feather(mask, 8)
    assert np.array_equal(rim[20:40, 20:40], np.ones((20, 20), np.float32))  # the mask is fully replaced
    assert 0 < rim[30, 40] < 1 and rim[30, 40] > rim[30, 44] > 0  # a ramp outwards
    assert rim[30, 48] == 0 and rim[30, 55] == 0  # 8 px away and beyond: untouched
    assert np.array_equal(outward_feather(mask, 0), mask)
    with pytest.raises(CropStitchInputError, match="feather"):
        outward_feather(mask, -1)


def whole_image_outward_feather(mask, radius):
    """Reference: the whole-image distance transform outward_feather used before it was windowed."""
    solid = mask >= 0.5
    if radius == 0 or not solid.any():
        return mask.copy()
    t = np.clip(1.0 - ndimage.distance_transform_edt(~solid) / radius, 0.0, 1.0)
    return np.maximum(mask, (t * t * (3.0 - 2.0 * t)).astype(np.float32))


def test_outward_feather_is_bit_identical_to_the_whole_image_transform():
    rng = np.random.default_rng(3)
    for shape in ((41, 67), (70, 33), (1, 25), (19, 1)):
        height, width = shape
        masks = []
        for _ in range(6):
            mask = np.zeros(shape, np.float32)
            for _ in range(rng.integers(1, 4)):
                top, left = rng.integers(0, height), rng.integers(0, width)
                mask[top:top + rng.integers(1, height + 1), left:left + rng.integers(1, width + 1)] = rng.random()
            mask[rng.random(shape) < 0.03] = rng.random()  # soft speckles outside the window stay as they are
            masks.append(mask)
        corners = np.zeros(shape, np.float32)
        corners[0, 0] = corners[-1, -1] = 1.0  # a rim that runs into the border
        negative = rng.random(shape).astype(np.float32) * 1.4 - 0.2  # out-of-range values: max(mask, 0) as before
        masks += [corners, negative, np.zeros(shape, np.float32), np.ones(shape, np.float32),
                  np.full(shape, 0.3, np.float32)]
        for i, mask in enumerate(masks):
            for radius in (0.5, 1, 2.5, 8, 60):
                assert np.array_equal(outward_feather(mask, radius), whole_image_outward_feather(mask, radius)), \
                    f"{shape} mask {i} radius {radius}"


def test_outward_feather_runs_the_distance_transform_on_the_padded_window_only(monkeypatch):
    shapes = []
    real = ndimage.distance_transform_edt

    def spy(binary, *args, **kwargs):
        shapes.append(binary.shape)
        return real(binary, *args, **kwargs)

    monkeypatch.setattr(ndimage, "distance_transform_edt", spy)
    outward_feather(rect_mask(300, 400, 100, 200, 120, 230), 8)
    outward_feather(rect_mask(300, 400, 290, 0, 300, 5), 7.2)  # bottom-left corner: the window is cut there
    with pytest.raises(CropStitchInputError, match="mask"):
        outward_feather(np.ones((2, 3, 4), np.float32), 4)
    assert shapes == [(20 + 2 * 10, 30 + 2 * 10), (10 + 10, 5 + 10)]


# ---- crop, resize, paste --------------------------------------------------------------------------------

def test_resizes_keep_float_range_and_shapes():
    image = random_image(33, 47)
    resized = resize_image(image, 64, 48)
    assert resized.shape == (48, 64, 3) and resized.dtype == np.float32
    assert resized.min() >= 0 and resized.max() <= 1
    assert np.array_equal(resize_image(image, 47, 33), image)
    mask = resize_mask(rect_mask(33, 47, 0, 0, 10, 10), 64, 48)
    assert mask.shape == (48, 64) and mask.min() >= 0 and mask.max() <= 1


def test_crop_for_model_gives_working_size_and_a_binary_mask_covering_the_paste_area():
    image = random_image(77, 123)
    paste = outward_feather(rect_mask(77, 123, 20, 30, 40, 60), 6)
    plan = plan_crop(paste, 64)
    work_image, work_mask = crop_for_model(image, paste, plan)
    assert work_image.shape == (plan.work_height, plan.work_width, 3)
    assert work_mask.shape == (plan.work_height, plan.work_width)
    assert set(np.unique(work_mask)) == {0.0, 1.0}


@pytest.mark.parametrize("mode", ["crop", "full"])
@pytest.mark.parametrize("shape", [(77, 123), (64, 64), (31, 200)])
def test_paste_back_is_bit_identical_outside_the_paste_mask(mode, shape):
    height, width = shape
    image = random_image(height, width, seed=1)
    paste = outward_feather(rect_mask(height, width, height // 4, width // 3, height // 2, width // 2), 5)
    plan = plan_crop(paste, 64, mode=mode)
    generated = random_image(plan.work_height, plan.work_width, seed=2)
    result = paste_back(image, generated, paste, plan)
    outside = paste == 0
    assert outside.any()
    assert np.array_equal(result[outside], image[outside])
    inside = paste == 1
    assert not np.array_equal(result[inside], image[inside])
    assert result.dtype == np.float32 and result.shape == image.shape


def test_paste_back_places_the_generated_pixels_exactly_where_the_mask_is_full():
    image = random_image(64, 64)
    paste = rect_mask(64, 64, 10, 10, 30, 30)
    plan = CropPlan(CropBox(0, 0, 64, 64), 64, 64, 64, 64)  # working size == crop size: no resampling
    generated = random_image(64, 64, seed=5)
    result = paste_back(image, generated, paste, plan)
    assert np.array_equal(result[10:30, 10:30], generated[10:30, 10:30])
    assert np.array_equal(result[40:, 40:], image[40:, 40:])


def test_paste_back_refuses_a_mask_outside_the_crop():
    image = random_image(50, 50)
    plan = CropPlan(CropBox(0, 0, 20, 20), 64, 64, 50, 50)
    with pytest.raises(CropStitchInputError, match="outside the crop"):
        paste_back(image, random_image(64, 64), rect_mask(50, 50, 30, 30, 40, 40), plan)
    with pytest.raises(CropStitchInputError, match="paste_mask is 10x10"):
        paste_back(image, random_image(64, 64), np.zeros((10, 10), np.float32), plan)

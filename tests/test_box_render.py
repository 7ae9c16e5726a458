"""The box renderer: outlines, label tabs and points drawn where they belong, in the right colours."""

import numpy as np
import pytest

from agentic_edit.engines.box_render import (
    NEGATIVE_POINT, PALETTE, POSITIVE_POINT, auto_line_width, label_colors, render_boxes)
from agentic_edit.engines.geometry import Box, Point


def noise(height=120, width=160, seed=0):
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


def changed_pixels(before, after):
    return np.any(before != after, axis=-1)


def frame_band(shape, left, top, right, bottom, width):
    """The pixels of a rectangle outline ``width`` thick drawn inside (left, top, right, bottom)."""
    band = np.zeros(shape, bool)
    band[top:bottom, left:right] = True
    band[top + width:bottom - width, left + width:right - width] = False
    return band


def rgb(color):
    return np.asarray(color, np.float32) / 255.0


def test_outline_only_changes_the_band_inside_the_box_edges():
    image = noise()
    copy = image.copy()
    out = render_boxes(image, [Box(20, 30, 80, 90)], line_width=3)
    assert np.array_equal(image, copy)
    band = frame_band(image.shape[:2], 20, 30, 80, 90, 3)
    assert np.array_equal(changed_pixels(image, out), band)
    assert np.allclose(out[band], rgb(PALETTE[0]))
    # Untouched pixels keep their exact float values (no 8-bit round trip).
    assert np.array_equal(out[~band], image[~band])


def test_auto_line_width_scales_with_the_image():
    assert auto_line_width(64, 64) == 2
    assert auto_line_width(3000, 1500) == 10
    image = noise(600, 900)
    out = render_boxes(image, [Box(100, 100, 500, 400)])
    band = frame_band(image.shape[:2], 100, 100, 500, 400, 3)
    assert np.array_equal(changed_pixels(image, out), band)


def test_label_and_score_tab_sits_above_the_box():
    image = np.zeros((120, 160, 3), np.float32)
    box = Box(30, 50, 130, 110, label="cat", score=0.87)
    out = render_boxes(image, [box], line_width=2, label_size=12)
    changed = changed_pixels(image, out)
    outside_box = changed.copy()
    outside_box[50:110, 30:130] = False
    rows, cols = np.nonzero(outside_box)
    # The tab: directly above the box's top-left corner, at most a label's height tall.
    assert rows.size > 100 and rows.max() == 49 and rows.min() >= 50 - 20
    assert cols.min() == 30 and cols.max() < 130
    tab = out[rows.min():50, 30:cols.max() + 1]
    box_colour = rgb(PALETTE[0])
    assert np.isclose(tab, box_colour, atol=1e-6).all(axis=-1).mean() > 0.5   # filled tab
    assert np.isclose(tab, 1.0, atol=0.02).all(axis=-1).sum() > 10           # white caption on it
    # Showing neither label nor score leaves no tab.
    bare = render_boxes(image, [box], line_width=2, show_labels=False, show_scores=False)
    assert np.array_equal(changed_pixels(image, bare), frame_band(image.shape[:2], 30, 50, 130, 110, 2))


def test_tab_goes_inside_a_box_at_the_top_edge():
    image = np.zeros((100, 100, 3), np.float32)
    out = render_boxes(image, [Box(10, 0, 90, 90, label="sky")], line_width=2, label_size=12)
    changed = changed_pixels(image, out)
    assert not changed[90:].any() and not changed[:, :10].any() and not changed[:, 90:].any()
    assert changed[4:12, 12:30].any()  # the tab, inside the box below its top edge


def test_one_colour_per_label():
    image = np.zeros((100, 200, 3), np.float32)
    boxes = [Box(0, 0, 50, 50, label="dog"), Box(60, 0, 110, 50, label="cat"), Box(120, 0, 170, 50, label="dog")]
    out = render_boxes(image, boxes, line_width=2, show_labels=False)
    edge = lambda b: out[40, int(b.x1)]  # noqa: E731  (a pixel on the left edge, below any tab)
    assert np.allclose(edge(boxes[0]), rgb(PALETTE[0])) and np.allclose(edge(boxes[2]), rgb(PALETTE[0]))
    assert np.allclose(edge(boxes[1]), rgb(PALETTE[1]))
    # A caller-given mapping wins, so colours can stay the same across a batch.
    out = render_boxes(image, boxes, line_width=2, show_labels=False, colors={"cat": (255, 0, 0)})
    assert np.allclose(out[40, 60], [1, 0, 0]) and np.allclose(out[40, 0], rgb(PALETTE[1]))
    assert label_colors(["a", "b", "a", None]) == {"a": PALETTE[0], "b": PALETTE[1], None: PALETTE[2]}


def test_points_are_green_and_red_circles():
    image = np.zeros((100, 100, 3), np.float32)
    out = render_boxes(image, [], [Point(25, 25, True), Point(75, 60, False)], point_radius=6)
    assert np.allclose(out[25, 25], rgb(POSITIVE_POINT)) and np.allclose(out[60, 75], rgb(NEGATIVE_POINT))
    assert np.allclose(out[25, 19], 1.0)  # the white rim
    changed = changed_pixels(image, out)
    near = np.zeros_like(changed)
    near[18:33, 18:33] = near[53:68, 68:83] = True
    assert not (changed & ~near).any()


def test_boxes_outside_the_image_are_skipped_and_partial_ones_clipped():
    image = noise(60, 80)
    out = render_boxes(image, [Box(200, 200, 300, 300), Box(-20, -20, 40, 30)], line_width=2,
                       show_labels=False)
    assert np.array_equal(changed_pixels(image, out), frame_band(image.shape[:2], 0, 0, 40, 30, 2))


def test_highest_score_is_drawn_on_top():
    image = np.zeros((60, 60, 3), np.float32)
    boxes = [Box(0, 0, 40, 40, label="high", score=0.9), Box(0, 0, 40, 40, label="low", score=0.2)]
    out = render_boxes(image, boxes, line_width=2, show_labels=False, show_scores=False)
    assert np.allclose(out[39, 0], rgb(PALETTE[0]))  # "high" came first, so it has PALETTE[0]


def test_bad_image_shape():
    with pytest.raises(ValueError, match="RGB"):
        render_boxes(np.zeros((10, 10)), [Box(0, 0, 5, 5)])

"""The weight-free mask tools: engine behaviour checked pixel by pixel, plus the V3 nodes run
directly (without a server) when a ComfyUI checkout is available."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import ndimage

from agentic_edit.engines.colors import ColorInputError, color_to_unit

from agentic_edit.engines import mask_ops
from agentic_edit.engines.geometry import Box
from agentic_edit.engines.mask_ops import MaskInputError


def disk(shape, center, radius) -> np.ndarray:
    """Reference disk by brute force: every pixel whose centre is within ``radius`` of ``center``."""
    rows, cols = np.indices(shape)
    return ((rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius ** 2).astype(np.float32)


def point(shape, at) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    mask[at] = 1.0
    return mask


# ---- grow / shrink / close ----------------------------------------------------------------------

@pytest.mark.parametrize("radius, pixels", [(1, 5), (2, 13), (3, 29), (5, 81), (7, 149)])
def test_grow_turns_a_pixel_into_a_disk(radius, pixels):
    grown = mask_ops.grow(point((31, 41), (15, 20)), radius)
    # Gauss circle numbers: lattice points within distance r of the origin.
    assert grown.sum() == pixels
    np.testing.assert_array_equal(grown, disk((31, 41), (15, 20), radius))


def test_grow_by_a_large_radius_is_still_a_disk():
    grown = mask_ops.grow(point((121, 131), (60, 65)), 55)
    np.testing.assert_array_equal(grown, disk((121, 131), (60, 65), 55))


def test_shrink_undoes_grow():
    for mask in (point((25, 25), (12, 12)), np.pad(np.ones((6, 9), np.float32), 10)):
        for radius in (1, 3, 6):
            restored = mask_ops.shrink(mask_ops.grow(mask, radius), radius)
            np.testing.assert_array_equal(restored, mask)


def test_negative_grow_shrinks_a_disk_to_a_smaller_disk():
    big = disk((41, 41), (20, 20), 12)
    shrunk = mask_ops.grow(big, -5)
    np.testing.assert_array_equal(shrunk, mask_ops.shrink(big, 5))
    assert shrunk.sum() < big.sum()
    assert (shrunk <= big).all()
    # What survives is within 12 - 5 = 7 pixels of the centre, and the centre survives.
    assert shrunk[20, 20] == 1.0
    assert (shrunk <= disk((41, 41), (20, 20), 7.5)).all()


def test_shrink_does_not_eat_a_mask_from_the_image_border():
    mask = np.zeros((20, 20), np.float32)
    mask[:, :10] = 1.0  # touches the left, top and bottom borders
    shrunk = mask_ops.shrink(mask, 3)
    assert shrunk[:, :7].all() and not shrunk[:, 7:].any()


def test_morphology_thresholds_soft_masks_at_one_half():
    mask = np.zeros((15, 15), np.float32)
    mask[3, 3] = 0.4
    mask[10, 10] = 0.6
    grown = mask_ops.grow(mask, 2)
    assert set(np.unique(grown)) == {0.0, 1.0}
    assert grown[3, 3] == 0.0 and grown.sum() == 13  # only the 0.6 pixel counts as "in"
    # A zero radius leaves a soft mask as it is.
    np.testing.assert_array_equal(mask_ops.grow(mask, 0), mask)


# grow and shrink run the distance transform on a window around the mask only; these pin the result
# to the whole-image transform bit for bit, on the cases where a window could go wrong.

def whole_image_grow(mask, r):
    """Reference: the whole-image distance transform grow used before it was windowed."""
    binary = np.clip(mask, 0, 1) >= 0.5
    if not binary.any():
        return binary.astype(np.float32)
    return (ndimage.distance_transform_edt(~binary) <= r).astype(np.float32)


def whole_image_shrink(mask, r):
    binary = np.clip(mask, 0, 1) >= 0.5
    if binary.all():
        return binary.astype(np.float32)
    return (ndimage.distance_transform_edt(binary) > r).astype(np.float32)


def random_masks(seed=0):
    """Soft random blobs of several sizes, some touching one or more borders, plus the edge cases."""
    rng = np.random.default_rng(seed)
    masks = []
    for shape in ((37, 53), (64, 29), (1, 17), (23, 1)):
        height, width = shape
        for _ in range(6):
            mask = np.zeros(shape, np.float32)
            for _ in range(rng.integers(1, 4)):
                top, left = rng.integers(0, height), rng.integers(0, width)
                mask[top:top + rng.integers(1, height + 1), left:left + rng.integers(1, width + 1)] = rng.random()
            mask[rng.random(shape) < 0.03] = rng.random()  # soft speckles, some below 0.5
            masks.append(mask)
        edges = np.zeros(shape, np.float32)
        edges[0, 0] = edges[-1, -1] = 1.0  # corners: the window is cut by the border on two sides
        holes = np.ones(shape, np.float32)
        holes[height // 2, width // 2] = 0.0  # touches every border, one hole: shrink's window is the image
        masks += [edges, holes, np.zeros(shape, np.float32), np.ones(shape, np.float32),
                  np.full(shape, 0.49, np.float32), np.full(shape, 0.5, np.float32)]
    return masks


@pytest.mark.parametrize("r", [0.5, 1, 1.5, 2, 3.7, 6, 40])
def test_grow_and_shrink_are_bit_identical_to_the_whole_image_transform(r):
    for i, mask in enumerate(random_masks()):
        assert np.array_equal(mask_ops.grow(mask, r), whole_image_grow(mask, r)), f"grow, mask {i}"
        assert np.array_equal(mask_ops.shrink(mask, r), whole_image_shrink(mask, r)), f"shrink, mask {i}"
        assert np.array_equal(mask_ops.grow(mask, -r), whole_image_shrink(mask, r)), f"grow(-r), mask {i}"


def test_grow_and_shrink_run_the_distance_transform_on_the_padded_window_only(monkeypatch):
    shapes = []
    real = ndimage.distance_transform_edt

    def spy(binary, *args, **kwargs):
        shapes.append(binary.shape)
        return real(binary, *args, **kwargs)

    monkeypatch.setattr(ndimage, "distance_transform_edt", spy)
    mask = np.zeros((300, 400), np.float32)
    mask[100:120, 200:230] = 1.0  # 20 rows x 30 columns
    mask_ops.grow(mask, 4)
    mask_ops.grow(mask, 4.5)
    mask_ops.shrink(mask, 4)
    edge = np.zeros((300, 400), np.float32)
    edge[0:10, 390:400] = 1.0  # at the top-right corner the window is cut by the image
    mask_ops.grow(edge, 6)
    mask_ops.shrink(edge, 2)
    assert shapes == [
        (20 + 2 * 6, 30 + 2 * 6),   # radius 4, padded by 4 + 2
        (20 + 2 * 7, 30 + 2 * 7),   # radius 4.5 rounds up
        (20 + 2, 30 + 2),           # shrink needs only the ring of outside pixels around the box
        (10 + 8, 10 + 8),           # padded by 8 below and left only
        (10 + 1, 10 + 1),
    ]


def test_close_bridges_a_gap_and_keeps_the_outline():
    mask = np.zeros((20, 30), np.float32)
    mask[5:15, 3:13] = 1.0
    mask[5:15, 15:25] = 1.0  # two squares, a 2-pixel gap between them
    closed = mask_ops.close(mask, 2)
    assert closed[6:14, 13:15].all(), "the gap is bridged"
    assert (closed >= mask).all(), "closing never removes mask pixels"
    hull = np.zeros_like(mask)
    hull[5:15, 3:25] = 1.0
    assert (closed <= hull).all(), "nothing grew outside the two squares' hull"
    # The gap's ends on the outline stay open: a round brush cannot reach into a square corner.
    assert closed[5, 13] == 0.0 and closed[14, 14] == 0.0


# ---- fill holes / islands -------------------------------------------------------------------

def test_fill_holes_fills_a_ring():
    ring = disk((31, 31), (15, 15), 10) - disk((31, 31), (15, 15), 5)
    np.testing.assert_array_equal(mask_ops.fill_holes(ring), disk((31, 31), (15, 15), 10))


def test_fill_holes_leaves_an_opening_to_the_border():
    cup = np.zeros((12, 12), np.float32)
    cup[0:8, 2] = cup[0:8, 9] = 1.0
    cup[7, 2:10] = 1.0  # a U open at the top edge: its inside is not enclosed
    np.testing.assert_array_equal(mask_ops.fill_holes(cup), cup)


def islands() -> np.ndarray:
    mask = np.zeros((30, 30), np.float32)
    mask[2:12, 2:12] = 1.0     # 100 pixels
    mask[20:23, 20:23] = 1.0   # 9 pixels
    mask[25:27, 3:5] = 1.0     # 4 pixels
    mask[15, 25] = mask[16, 26] = 1.0  # 2 pixels touching by a corner: one region
    return mask


def test_remove_small_islands_by_area():
    mask = islands()
    kept = mask_ops.remove_small_islands(mask, 5)
    assert kept[2:12, 2:12].all() and kept[20:23, 20:23].all()
    assert not kept[25:27, 3:5].any() and kept[15, 25] == 0 and kept.sum() == 109
    assert mask_ops.remove_small_islands(mask, 10).sum() == 100
    # Diagonal neighbours are one region of 2: kept at a limit of 2.
    assert mask_ops.remove_small_islands(mask, 2).sum() == mask.sum()


def test_remove_small_islands_by_fraction_of_the_image():
    mask = islands()
    # 1% of 900 pixels is 9: the 9-pixel island stays, smaller ones go.
    assert mask_ops.remove_small_islands(mask, min_fraction=0.01).sum() == 109
    assert mask_ops.remove_small_islands(mask, min_fraction=0.05).sum() == 100
    np.testing.assert_array_equal(mask_ops.remove_small_islands(mask, 0), mask)


# ---- feather -------------------------------------------------------------------------------

def test_feather_stays_in_range_and_is_smooth():
    mask = np.zeros((40, 40), np.float32)
    mask[10:30, 10:30] = 1.0
    soft = mask_ops.feather(mask, 6)
    assert soft.dtype == np.float32 and soft.min() >= 0.0 and soft.max() <= 1.0
    # Smooth: no step between neighbours is close to the hard edge's step of 1.
    steps = max(np.abs(np.diff(soft, axis=0)).max(), np.abs(np.diff(soft, axis=1)).max())
    assert steps < 0.25
    # The edge fades monotonically across the boundary...
    profile = soft[20, 0:20]
    assert (np.diff(profile) >= -1e-6).all() and 0.3 < soft[20, 10] < 0.7
    # ...and only within the radius: far outside stays 0, deep inside stays 1.
    assert soft[20, :4].max() == 0.0 and soft[16:24, 16:24].min() > 0.999


def test_feather_keeps_a_mask_solid_at_the_image_border():
    mask = np.ones((10, 10), np.float32)
    np.testing.assert_allclose(mask_ops.feather(mask, 4), 1.0, atol=1e-6)


# ---- boolean ops ---------------------------------------------------------------------------

def test_boolean_ops_on_soft_masks():
    a = np.array([[0.0, 0.2, 1.0, 1.0]], np.float32)
    b = np.array([[0.0, 0.6, 0.5, 1.0]], np.float32)
    np.testing.assert_allclose(mask_ops.union(a, b), [[0.0, 0.6, 1.0, 1.0]])
    np.testing.assert_allclose(mask_ops.intersect(a, b), [[0.0, 0.2, 0.5, 1.0]])
    np.testing.assert_allclose(mask_ops.subtract(a, b), [[0.0, 0.08, 0.5, 0.0]], atol=1e-6)
    np.testing.assert_allclose(mask_ops.invert(a), [[1.0, 0.8, 0.0, 0.0]])
    np.testing.assert_allclose(mask_ops.combine(a, b, "subtract"), mask_ops.subtract(a, b))
    with pytest.raises(MaskInputError, match="union"):
        mask_ops.combine(a, b, "xor")


def test_size_mismatch_names_both_sizes():
    a, b = np.zeros((20, 30), np.float32), np.zeros((30, 20), np.float32)
    for op in (mask_ops.union, mask_ops.intersect, mask_ops.subtract):
        with pytest.raises(MaskInputError, match=r"mask_a is 30x20 but mask_b is 20x30"):
            op(a, b)
    with pytest.raises(ValueError, match=r"image is 30x20 but mask is 20x30"):
        mask_ops.overlay(np.zeros((20, 30, 3), np.float32), b)


@pytest.mark.parametrize("call, message", [
    (lambda m: mask_ops.feather(m, -1), "feather: must be 0 or more"),
    (lambda m: mask_ops.close(m, -2), "close: must be 0 or more"),
    (lambda m: mask_ops.shrink(m, -2), "shrink: must be 0 or more"),
    (lambda m: mask_ops.grow(m, float("nan")), "grow: expected a finite number"),
    (lambda m: mask_ops.grow(m, 1e9), "out of range"),
    (lambda m: mask_ops.feather(m, "wide"), "feather: expected a number"),
    (lambda m: mask_ops.remove_small_islands(m, -3), "min_area_pixels: must be 0 or more"),
    (lambda m: mask_ops.remove_small_islands(m, min_fraction=2.0), "min_fraction"),
    (lambda m: mask_ops.threshold(m, 1.5), "threshold"),
])
def test_bad_radii_and_limits_are_clear_errors(call, message):
    with pytest.raises(MaskInputError, match=message):
        call(np.zeros((8, 8), np.float32))


def test_threshold():
    mask = np.array([[0.1, 0.5, 0.9]], np.float32)
    np.testing.assert_array_equal(mask_ops.threshold(mask, 0.5), [[0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(mask_ops.threshold(mask, 0.95), [[0.0, 0.0, 0.0]])


# ---- boxes and regions ---------------------------------------------------------------------

def test_fractional_box_covers_every_pixel_it_touches():
    mask = mask_ops.boxes_to_mask([Box(1.5, 2.2, 4.1, 5.0)], height=8, width=10)
    expected = np.zeros((8, 10), np.float32)
    expected[2:5, 1:5] = 1.0  # rows 2..4 (5.0 is an edge, not a touch), columns 1..4
    np.testing.assert_array_equal(mask, expected)


def test_boxes_outside_the_image_are_clipped_and_overlaps_stay_binary():
    boxes = [Box(-5, -5, 3, 2), Box(8, 6, 30, 30), Box(1, 0, 4, 1)]
    mask = mask_ops.boxes_to_mask(boxes, height=8, width=10)
    assert mask.shape == (8, 10) and set(np.unique(mask)) == {0.0, 1.0}
    assert mask[0:2, 0:3].all() and mask[6:8, 8:10].all() and mask[0, 3] == 1.0
    assert mask.sum() == 6 + 4 + 1
    assert mask_ops.boxes_to_mask([], 4, 5).sum() == 0


def test_connected_regions_in_reading_order():
    mask = np.zeros((20, 30), np.float32)
    mask[12:16, 2:6] = 1.0     # lower left
    mask[3:5, 20:27] = 1.0     # upper right
    mask[12, 20] = 1.0         # a single-pixel speck
    regions = mask_ops.connected_regions(mask)
    assert [(b.x1, b.y1, b.x2, b.y2, b.score) for b in regions] == [
        (20, 3, 27, 5, 14.0), (2, 12, 6, 16, 16.0), (20, 12, 21, 13, 1.0)]
    assert len(mask_ops.connected_regions(mask, min_area_pixels=2)) == 2
    # The boxes drawn back cover the rectangles exactly.
    np.testing.assert_array_equal(mask_ops.boxes_to_mask(regions, 20, 30), mask)
    assert mask_ops.connected_regions(np.zeros((4, 4), np.float32)) == []


# ---- refine recipe -------------------------------------------------------------------------

def test_refine_removes_specks_before_growing_and_closes_before_filling():
    mask = disk((41, 41), (20, 20), 12) - disk((41, 41), (20, 20), 8)
    mask[20, 29:34] = 0.0       # cut the ring: a 1-pixel-wide opening, so no hole is enclosed
    mask[2, 2] = mask[2, 3] = 1.0  # a 2-pixel speck
    assert mask_ops.fill_holes(mask).sum() == mask.sum()

    refined = mask_ops.refine(mask, remove_islands_below=5, close_radius=2, fill=True, grow_pixels=1)
    assert refined[0:6, 0:6].sum() == 0, "the speck went before it could grow"
    assert refined[20, 20] == 1.0, "closing sealed the ring, so its inside was filled"
    assert (refined >= disk((41, 41), (20, 20), 11)).all()
    assert (refined <= mask_ops.grow(disk((41, 41), (20, 20), 12), 1)).all()


def test_refine_feathers_last_and_neutral_values_change_nothing():
    mask = np.zeros((30, 30), np.float32)
    mask[10:20, 10:20] = 0.7
    np.testing.assert_array_equal(mask_ops.refine(mask), mask)
    soft = mask_ops.refine(mask, grow_pixels=2, feather_radius=3)
    assert 0.0 < soft[9, 15] < 1.0 and soft[15, 15] == pytest.approx(1.0)


# ---- overlay ------------------------------------------------------------------------------------

def test_overlay_changes_only_pixels_under_and_around_the_mask():
    rng = np.random.default_rng(0)
    image = rng.random((24, 32, 3), dtype=np.float32)
    mask = np.zeros((24, 32), np.float32)
    mask[8:16, 10:20] = 1.0
    preview = mask_ops.overlay(image, mask, color="#00ff00", opacity=0.5, outline=2)

    near = mask_ops.grow(mask, 2).astype(bool)
    np.testing.assert_array_equal(preview[~near], image[~near])
    tinted = 0.5 * image[8:16, 10:20] + 0.5 * np.array([0, 1, 0], np.float32)
    np.testing.assert_allclose(preview[8:16, 10:20], tinted, atol=1e-6)
    ring = near & ~mask.astype(bool)
    np.testing.assert_array_equal(preview[ring], np.broadcast_to([0.0, 1.0, 0.0], (ring.sum(), 3)))


def test_overlay_with_nothing_to_draw_is_the_image_and_bad_colours_are_clear():
    image = np.full((6, 7, 3), 0.25, np.float32)
    mask = np.ones((6, 7), np.float32)
    np.testing.assert_array_equal(mask_ops.overlay(image, mask, opacity=0.0, outline=0), image)
    with pytest.raises(ColorInputError, match="color: 'not-a-colour' is not a colour"):
        mask_ops.overlay(image, mask, color="not-a-colour")
    with pytest.raises(MaskInputError, match="opacity"):
        mask_ops.overlay(image, mask, opacity=2.0)


@pytest.mark.parametrize("value, rgb", [
    ("#f00", (1.0, 0.0, 0.0)), ("00ff0080", (0.0, 1.0, 0.0)), ("blue", (0.0, 0.0, 1.0)), ("0, 255, 0", (0.0, 1.0, 0.0)),
    ((255, 255, 0), (1.0, 1.0, 0.0)), ((0.5, 0.25, 1.0), (0.5, 0.25, 1.0)),
])
def test_parse_color(value, rgb):
    assert color_to_unit(value) == pytest.approx(rgb, abs=0.5 / 255)  # 8-bit precision


# ---- nodes, run directly (no server) ---------------------------------------------------------

@pytest.fixture(scope="module")
def nodes():
    from tests.comfy_harness import find_comfyui

    root = find_comfyui()
    if root is None:
        pytest.skip("no ComfyUI checkout (set COMFYUI_PATH)")
    if str(root) not in sys.path:
        sys.path.append(str(root))  # appended, so ComfyUI's top-level modules shadow nothing of ours
    pytest.importorskip("comfy_api.latest")
    from agentic_edit.nodes import masks

    return masks


def test_node_schemas_come_from_the_catalogue(nodes):
    from agentic_edit.catalogue import masks as catalogue

    assert [n.TOOL for n in nodes.NODES] == list(catalogue.TOOLS)
    for node in nodes.NODES:
        schema = node.GET_SCHEMA()
        assert schema.node_id == node.__name__ == node.TOOL.node_id
        assert schema.category == "agentic_edit/mask" and schema.description
        assert [i.id for i in schema.inputs] == [a.name for a in node.TOOL.args]
        assert all(i.tooltip for i in schema.inputs)


def test_refine_node_keeps_the_batch(nodes):
    import torch

    masks = torch.zeros(2, 21, 25)
    masks[0, 10, 12] = 1.0
    masks[1, 5, 5] = 1.0
    out = nodes.AgenticEditRefineMask.execute(mask=masks, grow=3, fill_holes=False, remove_islands_below=0,
                                              close=0, feather=0.0).result[0]
    assert out.shape == (2, 21, 25) and out.dtype == torch.float32
    assert out[0].sum() == 29 and out[1].sum() == 29 and out[1, 5, 5] == 1.0 and out[0, 5, 5] == 0.0


def test_combine_node_broadcasts_a_single_mask_and_names_bad_batches(nodes):
    import torch

    a = torch.zeros(3, 8, 8)
    a[:, :, :4] = 1.0
    b = torch.zeros(1, 8, 8)
    b[:, :4, :] = 1.0
    out = nodes.AgenticEditCombineMasks.execute(mask_a=a, mask_b=b, operation="intersect").result[0]
    assert out.shape == (3, 8, 8) and (out.sum(dim=(1, 2)) == 16).all()
    with pytest.raises(ValueError, match="batch of 3 and mask_b a batch of 2"):
        nodes.AgenticEditCombineMasks.execute(mask_a=a, mask_b=torch.zeros(2, 8, 8), operation="union")
    with pytest.raises(ValueError, match="mask_a is 8x8 but mask_b is 9x8"):
        nodes.AgenticEditCombineMasks.execute(mask_a=a, mask_b=torch.zeros(1, 8, 9), operation="union")


def test_boxes_invert_and_overlay_nodes(nodes):
    import torch

    image = torch.rand(2, 10, 12, 3)
    boxes = [[{"x": 1, "y": 1, "width": 3, "height": 2}], [{"x": 5.5, "y": 4, "width": 2, "height": 2}]]
    masks = nodes.AgenticEditBoxesToMask.execute(image=image, boxes=boxes).result[0]
    assert masks.shape == (2, 10, 12) and masks[0].sum() == 6 and masks[1].sum() == 6

    inverted = nodes.AgenticEditInvertMask.execute(mask=masks).result[0]
    assert torch.equal(inverted, 1.0 - masks)

    # One image under a batch of masks: one preview per mask.
    preview = nodes.AgenticEditMaskOverlay.execute(image=image[:1], mask=masks, color="#ffffff",
                                                   opacity=1.0, outline=0).result[0]
    assert preview.shape == (2, 10, 12, 3)
    assert (preview[0, 1:3, 1:4] == 1.0).all() and torch.equal(preview[0, 5:, :], image[0, 5:, :])
    assert torch.equal(preview[1, :4], image[0, :4])

"""Weight-free mask tools: boxes to masks, morphology, soft boolean ops and a preview overlay.

Masks are ``float32 [H, W]`` in 0..1 (``engines/imaging.py``); images are ``float32 RGB [H, W, 3]``.

Two families of operation, with two rules:

* Morphological operations (``grow``, ``shrink``, ``close``, ``fill_holes``,
  ``remove_small_islands``) decide per pixel "in or out", so they threshold the mask at 0.5 first
  and return a binary mask (0.0 or 1.0). Growing a soft edge would otherwise smear it in ways that
  depend on how soft it was. A neutral value (radius 0, minimum area 0) is a no-op and returns the
  mask as given, soft or not.
* Soft operations (``feather``, ``union``, ``intersect``, ``subtract``, ``invert``) work on the
  values themselves (max, min, a*(1-b), 1-a), so a feathered edge survives a combination.

Growing and shrinking use a Euclidean distance transform: a pixel joins the grown mask when its
distance to the mask is at most ``r``, which is exactly a dilation by a disk of radius ``r`` and
costs the same for ``r = 2`` and ``r = 200``. Pixels outside the image count as neither in nor out:
a mask that touches the border is not eaten away from the border by a shrink. The transform runs only
on the mask's bounding box widened by the radius (grow) or by one pixel (shrink): every distance
that decides a pixel comes from inside that window, so the result is bit-identical to a transform
of the whole image at a fraction of its cost on a small mask in a large image. A large window is
split into strips transformed on threads (``engines/distance.py``), again with identical results.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np
from scipy import ndimage

from .colors import color_to_unit
from .distance import distance_to_zeros
from .geometry import Box
from .imaging import ImageInputError


# Radii above this are refused: no image ComfyUI handles is this large (core's MAX_RESOLUTION is
# 16384), so such a value is a typo or a unit mix-up, not a request.
MAX_RADIUS = 16384

# 8-connectivity: pixels that touch by a corner belong to one region (what a person sees as one blob).
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class MaskInputError(ImageInputError):
    """Bad mask input (sizes that do not match, radii out of range); the message names the input."""


# ---- checks -------------------------------------------------------------------------------

def _as_mask(mask, name: str) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise MaskInputError(f"{name}: expected a mask of shape [H, W], got {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise MaskInputError(f"{name}: the mask is empty ({array.shape[1]}x{array.shape[0]} pixels)")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise MaskInputError(f"{name}: the mask contains NaN or infinite values")
    return np.clip(array, 0.0, 1.0)


def check_same_size(a: np.ndarray, b: np.ndarray, name_a: str = "mask_a", name_b: str = "mask_b") -> None:
    """Raise ``MaskInputError`` naming both sizes (width x height) unless ``a`` and ``b`` match."""
    if tuple(a.shape[:2]) != tuple(b.shape[:2]):
        raise MaskInputError(
            f"{name_a} is {a.shape[1]}x{a.shape[0]} but {name_b} is {b.shape[1]}x{b.shape[0]}; "
            "they must be the same size: resize one to the other before using them together")


def _radius(value, name: str, allow_negative: bool = False) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        raise MaskInputError(f"{name}: expected a number of pixels, got {value!r}") from None
    if not math.isfinite(r):
        raise MaskInputError(f"{name}: expected a finite number of pixels, got {value!r}")
    if r < 0 and not allow_negative:
        raise MaskInputError(f"{name}: must be 0 or more pixels, got {value!r}")
    if abs(r) > MAX_RADIUS:
        raise MaskInputError(f"{name}: {value!r} pixels is out of range; use at most {MAX_RADIUS}")
    return r


def binarize(mask: np.ndarray) -> np.ndarray:
    """The boolean mask that morphological operations act on: pixels at 0.5 or above are in."""
    return np.asarray(mask) >= 0.5


def _float(binary: np.ndarray) -> np.ndarray:
    return binary.astype(np.float32)


def _window(binary: np.ndarray, pad: int) -> tuple[slice, slice]:
    """The bounding box of ``binary``'s True pixels widened by ``pad`` on every side, clipped to the
    image (``binary`` must have a True pixel)."""
    rows = np.flatnonzero(binary.any(axis=1))
    cols = np.flatnonzero(binary.any(axis=0))
    height, width = binary.shape
    return (slice(max(int(rows[0]) - pad, 0), min(int(rows[-1]) + 1 + pad, height)),
            slice(max(int(cols[0]) - pad, 0), min(int(cols[-1]) + 1 + pad, width)))


# ---- building masks ------------------------------------------------------------------------

def boxes_to_mask(boxes: Iterable[Box], height: int, width: int) -> np.ndarray:
    """A binary mask of ``height`` x ``width`` that covers every pixel any box touches.

    A box with fractional corners covers the partly covered pixels too (``Box.pixel_bounds``), so a
    mask drawn from a detector's box never cuts into the object. Parts outside the image are dropped.
    """
    if int(height) <= 0 or int(width) <= 0:
        raise MaskInputError(f"mask size must be positive, got {width}x{height}")
    height, width = int(height), int(width)
    mask = np.zeros((height, width), dtype=np.float32)
    for i, box in enumerate(boxes):
        if not isinstance(box, Box):
            raise MaskInputError(f"boxes[{i}]: expected a Box, got {type(box).__name__}")
        left, top, right, bottom = box.pixel_bounds(width, height)
        mask[top:bottom, left:right] = 1.0
    return mask


def threshold(mask: np.ndarray, t: float = 0.5) -> np.ndarray:
    """1.0 where the mask is at least ``t``, else 0.0."""
    mask = _as_mask(mask, "mask")
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise MaskInputError(f"threshold: must be between 0 and 1, got {t!r}")
    return _float(mask >= t)


# ---- morphology (binary in, binary out) ---------------------------------------------------------

def grow(mask: np.ndarray, pixels: float) -> np.ndarray:
    """Dilate by a disk of radius ``pixels`` (a negative value shrinks instead).

    A single pixel grown by ``r`` becomes the disk of every pixel whose centre lies within ``r``.
    """
    mask = _as_mask(mask, "mask")
    r = _radius(pixels, "grow", allow_negative=True)
    if r == 0:
        return mask.copy()
    if r < 0:
        return shrink(mask, -r)
    binary = binarize(mask)
    if not binary.any():
        return _float(binary)
    # Only pixels within r of the mask can join it, and they all lie in the mask's bounding box
    # widened by r. Every pixel of that window has its nearest mask pixel inside the window too, so
    # the window's distance transform gives exactly the whole image's distances there.
    window = _window(binary, math.ceil(r) + 2)
    # Distance of every outside pixel to the nearest mask pixel (0 inside the mask).
    distance = distance_to_zeros(~binary[window], r)
    grown = np.zeros(binary.shape, dtype=np.float32)
    grown[window] = distance <= r
    return grown


def shrink(mask: np.ndarray, pixels: float) -> np.ndarray:
    """Erode by a disk of radius ``pixels``: a pixel stays when no outside pixel is within ``pixels``."""
    mask = _as_mask(mask, "mask")
    r = _radius(pixels, "shrink")
    if r == 0:
        return mask.copy()
    binary = binarize(mask)
    if binary.all() or not binary.any():
        # All in: nothing outside the mask inside the image to erode towards (see module doc).
        # All out: nothing to erode.
        return _float(binary)
    # Only mask pixels can survive. The mask's bounding box widened by one pixel holds them all and,
    # wherever it is not cut by the image border, a ring of outside pixels: any outside pixel beyond
    # the window has a closer one on that ring, so the window's distances are the whole image's. The
    # image border still adds no outside pixels (the window never reaches past it).
    window = _window(binary, 1)
    # Distance of every mask pixel to the nearest outside pixel.
    distance = distance_to_zeros(binary[window], r)
    shrunk = np.zeros(binary.shape, dtype=np.float32)
    shrunk[window] = distance > r
    return shrunk


def close(mask: np.ndarray, radius: float) -> np.ndarray:
    """Morphological closing (grow, then shrink by the same disk): bridges gaps and notches
    narrower than about ``2 * radius`` while keeping the outline where it was."""
    mask = _as_mask(mask, "mask")
    r = _radius(radius, "close")
    if r == 0:
        return mask.copy()
    return shrink(grow(mask, r), r)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill every background region that the mask encloses completely (not touching the border)."""
    mask = _as_mask(mask, "mask")
    return _float(ndimage.binary_fill_holes(binarize(mask)))


def remove_small_islands(mask: np.ndarray, min_area_pixels: int = 0, min_fraction: float = 0.0) -> np.ndarray:
    """Drop connected regions (8-connected) smaller than ``min_area_pixels`` pixels or smaller than
    ``min_fraction`` of the image area, whichever limit is larger."""
    mask = _as_mask(mask, "mask")
    try:
        min_pixels = int(min_area_pixels)
    except (TypeError, ValueError):
        raise MaskInputError(f"min_area_pixels: expected a whole number, got {min_area_pixels!r}") from None
    if min_pixels < 0:
        raise MaskInputError(f"min_area_pixels: must be 0 or more, got {min_area_pixels!r}")
    fraction = float(min_fraction)
    if not 0.0 <= fraction <= 1.0:
        raise MaskInputError(f"min_fraction: must be between 0 and 1 (a share of the image area), got {min_fraction!r}")
    limit = max(min_pixels, math.ceil(fraction * mask.size))
    if limit <= 1:
        return mask.copy()  # every region has at least one pixel: nothing to remove
    binary = binarize(mask)
    labels, count = ndimage.label(binary, structure=_EIGHT_CONNECTED)
    if count == 0:
        return _float(binary)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    keep = areas >= limit
    keep[0] = False  # label 0 is the background
    return _float(keep[labels])


# ---- soft operations --------------------------------------------------------------------------

def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """Soften the edge with a gaussian blur that reaches ``radius`` pixels on each side of it.

    sigma is ``radius / 2`` and the kernel is cut at 2 sigma, so the blur's reach is the radius the
    user asked for. The image border repeats the edge pixels, so a mask touching the border stays
    solid there. The result is clipped to 0..1.
    """
    mask = _as_mask(mask, "mask")
    r = _radius(radius, "feather")
    if r == 0:
        return mask.copy()
    blurred = ndimage.gaussian_filter(mask, sigma=r / 2.0, truncate=2.0, mode="nearest")
    return np.clip(blurred, 0.0, 1.0).astype(np.float32)


def union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels in either mask: ``max(a, b)``."""
    a, b = _as_mask(a, "mask_a"), _as_mask(b, "mask_b")
    check_same_size(a, b)
    return np.maximum(a, b)


def intersect(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels in both masks: ``min(a, b)``."""
    a, b = _as_mask(a, "mask_a"), _as_mask(b, "mask_b")
    check_same_size(a, b)
    return np.minimum(a, b)


def subtract(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels of ``a`` not in ``b``: ``a * (1 - b)`` (a soft ``b`` removes part of ``a``)."""
    a, b = _as_mask(a, "mask_a"), _as_mask(b, "mask_b")
    check_same_size(a, b)
    return (a * (1.0 - b)).astype(np.float32)


def invert(mask: np.ndarray) -> np.ndarray:
    """``1 - mask``."""
    return (1.0 - _as_mask(mask, "mask")).astype(np.float32)


COMBINE_OPERATIONS = {"union": union, "intersect": intersect, "subtract": subtract}


def combine(a: np.ndarray, b: np.ndarray, operation: str) -> np.ndarray:
    """``union``, ``intersect`` or ``subtract`` by name (what the combine node and planner pass)."""
    try:
        op = COMBINE_OPERATIONS[operation]
    except KeyError:
        raise MaskInputError(
            f"operation: unknown {operation!r}; use one of {sorted(COMBINE_OPERATIONS)}") from None
    return op(a, b)


def refine(mask: np.ndarray, grow_pixels: float = 0, fill: bool = False, remove_islands_below: int = 0,
           close_radius: float = 0, feather_radius: float = 0) -> np.ndarray:
    """The refine-mask recipe, in this order (each step is skipped at its neutral value):

    1. remove islands below ``remove_islands_below`` pixels: speckles go before they could grow
       and merge with the object;
    2. close by ``close_radius``: bridges thin gaps, so a nearly closed outline becomes closed;
    3. fill holes: after closing, holes inside such outlines are enclosed and get filled;
    4. grow (or shrink, negative) by ``grow_pixels``: on the cleaned shape;
    5. feather by ``feather_radius``: last, because every step before it is binary.
    """
    out = _as_mask(mask, "mask")
    if remove_islands_below:
        out = remove_small_islands(out, remove_islands_below)
    if close_radius:
        out = close(out, close_radius)
    if fill:
        out = fill_holes(out)
    if grow_pixels:
        out = grow(out, grow_pixels)
    if feather_radius:
        out = feather(out, feather_radius)
    return out


# ---- reading masks ----------------------------------------------------------------------------

def connected_regions(mask: np.ndarray, min_area_pixels: int = 1) -> list[Box]:
    """The bounding box of each 8-connected region of the (0.5-thresholded) mask, in reading order
    (top to bottom, then left to right); regions under ``min_area_pixels`` are skipped.

    Boxes are whole-pixel (right/bottom exclusive) and carry the region's pixel count as ``score``.
    """
    mask = _as_mask(mask, "mask")
    labels, count = ndimage.label(binarize(mask), structure=_EIGHT_CONNECTED)
    if count == 0:
        return []
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    boxes = []
    for index, slices in enumerate(ndimage.find_objects(labels), start=1):
        if slices is None or areas[index] < min_area_pixels:
            continue
        rows, cols = slices
        boxes.append(Box(float(cols.start), float(rows.start), float(cols.stop), float(rows.stop),
                         score=float(areas[index])))
    return reading_order(boxes)


def reading_order(boxes: list[Box]) -> list[Box]:
    """Rows top to bottom, left to right within a row; a box joins the current row when its
    vertical centre lies within the row's first box (so a slightly lower word stays on its line)."""
    rows: list[list[Box]] = []
    for box in sorted(boxes, key=lambda b: (b.y1, b.x1)):
        centre = (box.y1 + box.y2) / 2
        if rows and rows[-1][0].y1 <= centre <= rows[-1][0].y2:
            rows[-1].append(box)
        else:
            rows.append([box])
    return [box for row in rows for box in sorted(row, key=lambda b: b.x1)]


# ---- preview --------------------------------------------------------------------------------------

def overlay(image: np.ndarray, mask: np.ndarray, color="#ff0000", opacity: float = 0.5,
            outline: int = 2) -> np.ndarray:
    """A preview: ``image`` with the mask tinted in ``color`` and an ``outline``-pixel line drawn
    just outside the mask's edge (0 draws none). Pixels neither under nor next to the mask are
    left exactly as they were."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise MaskInputError(f"image: expected an RGB image of shape [H, W, 3], got {tuple(image.shape)}")
    mask = _as_mask(mask, "mask")
    check_same_size(image, mask, "image", "mask")
    opacity = float(opacity)
    if not 0.0 <= opacity <= 1.0:
        raise MaskInputError(f"opacity: must be between 0 and 1, got {opacity!r}")
    width = _radius(outline, "outline")
    rgb = np.asarray(color_to_unit(color), dtype=np.float32)

    weight = (mask * opacity)[..., None]
    out = image * (1.0 - weight) + rgb * weight
    if width > 0:
        inside = binarize(mask)
        ring = (grow(mask, width) > 0.5) & ~inside
        out[ring] = rgb
    return np.clip(out, 0.0, 1.0).astype(np.float32)


__all__ = [
    "MAX_RADIUS", "MaskInputError", "COMBINE_OPERATIONS", "binarize", "boxes_to_mask", "check_same_size",
    "close", "combine", "connected_regions", "feather", "fill_holes", "grow", "intersect", "invert",
    "overlay", "refine", "remove_small_islands", "shrink", "subtract", "threshold", "union",
]


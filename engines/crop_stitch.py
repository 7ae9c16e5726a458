"""Crop and stitch: inpaint only the part of the image around the mask, at the model's resolution.

The recipe good inpainting front ends use, with no model code (numpy; PIL to resize; scipy's
distance transform for the rim):

1. ``plan_crop``: the mask's bounding box, widened by a context margin (and to a minimum size, so
   a tiny mask still shows the model its surroundings), widened again to the aspect of a working
   size the model likes (sides multiples of 64 near ``resolution``² pixels), clamped to the image.
   Where the image leaves no room to reach that aspect (the crop is the whole image, say) the working
   size keeps the crop's own aspect with sides multiples of 8 instead, so nothing is stretched by
   more than a few pixels. ``mode="full"`` plans the whole image the same way.
2. ``crop_for_model``: the crop and its mask resized to the working size (any image size works:
   odd sides are resized, never assumed).
3. ``outward_feather`` makes the paste mask: the (grown) mask plus a soft rim outside it, so the
   mask itself is replaced completely and only the rim blends.
4. ``paste_back``: the model's output resized back to the crop and blended into a copy of the
   original through the paste mask only. Pixels where the paste mask is 0 are copied, never
   recomputed, so they are bit-identical to the input; where it is 1 they are the model's.

Images are float32 RGB ``[H, W, 3]`` in 0..1 and masks float32 ``[H, W]`` (engines/imaging.py).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .distance import distance_to_zeros
from .geometry import Box
from .imaging import ImageInputError

MODES = ("crop", "full")
# Working sides are multiples of this when the crop can take the matching aspect (UNet-friendly:
# SD's latent is 1/8 of the image and its UNet halves that three times).
PREFERRED_MULTIPLE = 64
# diffusers' SD pipelines need sides divisible by 8 (the VAE's factor).
REQUIRED_MULTIPLE = 8
# How far the crop's aspect may differ from the 64-multiple working size before we fall back to
# multiples of 8 (a 1% stretch is invisible and undone when pasting back).
ASPECT_TOLERANCE = 0.01


class CropStitchInputError(ImageInputError):
    """Bad crop-and-stitch input; the message names the input and what to do."""


@dataclass(frozen=True)
class CropBox:
    """A whole-pixel rectangle of the image: ``x``, ``y`` its top-left corner, right/bottom exclusive."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.bottom), slice(self.x, self.right)

    def to_box(self) -> Box:
        """The same rectangle as a ``geometry.Box`` (core's BOUNDING_BOX on the wire)."""
        return Box(float(self.x), float(self.y), float(self.right), float(self.bottom))


@dataclass(frozen=True)
class CropPlan:
    """Where to crop and at which size the model works on the crop."""

    box: CropBox
    work_width: int
    work_height: int
    image_width: int
    image_height: int

    @property
    def is_full_image(self) -> bool:
        return self.box == CropBox(0, 0, self.image_width, self.image_height)


# ---- box math -------------------------------------------------------------------------------------

def mask_bounds(mask: np.ndarray) -> CropBox | None:
    """The smallest box holding every pixel where ``mask > 0``; None for an empty mask."""
    rows = np.flatnonzero(np.asarray(mask).max(axis=1) > 0)
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.asarray(mask).max(axis=0) > 0)
    return CropBox(int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def margin_pixels(context_margin, box: CropBox) -> int:
    """The context margin in pixels: a number below 1 is a fraction of the box's longer side
    (0.25 adds a quarter of it on every side), 1 or more is pixels."""
    if isinstance(context_margin, bool) or not isinstance(context_margin, numbers.Real):
        raise CropStitchInputError(f"context_margin: expected pixels (>= 1) or a fraction (0..1), "
                                   f"got {context_margin!r}")
    value = float(context_margin)
    if not math.isfinite(value) or value < 0:
        raise CropStitchInputError(f"context_margin: must be 0 or more, got {context_margin!r}")
    if value < 1:
        return int(round(value * max(box.width, box.height)))
    return int(round(value))


def _grow_side(start: int, length: int, wanted: int, limit: int) -> tuple[int, int]:
    """Widen the span [start, start+length) to ``wanted`` around its centre, shifted to fit in [0, limit)."""
    wanted = min(max(wanted, length), limit)
    start = start - (wanted - length) // 2
    start = min(max(start, 0), limit - wanted)
    return start, wanted


def expand_box(box: CropBox, margin: int, image_width: int, image_height: int) -> CropBox:
    """``box`` widened by ``margin`` on every side, clamped to the image."""
    left, top = max(box.x - margin, 0), max(box.y - margin, 0)
    right, bottom = min(box.right + margin, image_width), min(box.bottom + margin, image_height)
    return CropBox(left, top, right - left, bottom - top)


def ensure_min_size(box: CropBox, min_side: int, image_width: int, image_height: int) -> CropBox:
    """``box`` widened (around its centre, inside the image) until each side is at least ``min_side``."""
    x, width = _grow_side(box.x, box.width, min_side, image_width)
    y, height = _grow_side(box.y, box.height, min_side, image_height)
    return CropBox(x, y, width, height)


def expand_to_aspect(box: CropBox, aspect: float, image_width: int, image_height: int) -> CropBox:
    """``box`` widened along one side towards ``aspect`` (width / height), never shrunk; as close as
    the image allows."""
    if box.width / box.height < aspect:
        x, width = _grow_side(box.x, box.width, int(round(box.height * aspect)), image_width)
        return CropBox(x, box.y, width, box.height)
    y, height = _grow_side(box.y, box.height, int(round(box.width / aspect)), image_height)
    return CropBox(box.x, y, box.width, height)


def working_size(width: int, height: int, resolution: int, multiple: int = PREFERRED_MULTIPLE) -> tuple[int, int]:
    """A size of about ``resolution``² pixels with ``width / height``'s aspect and sides that are
    multiples of ``multiple`` (at least one multiple each)."""
    scale = resolution / math.sqrt(width * height)
    return (max(multiple, int(round(width * scale / multiple)) * multiple),
            max(multiple, int(round(height * scale / multiple)) * multiple))


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Integral) or resolution < 64:
        raise CropStitchInputError(f"resolution: expected a whole number of pixels of at least 64, got {resolution!r}")
    return int(resolution)


def plan_crop(mask: np.ndarray, resolution: int, context_margin=0.25, mode: str = "crop",
              min_context: int | None = None) -> CropPlan | None:
    """Plan the crop for ``mask`` (float ``[H, W]``; pixels > 0 are inpainted). Returns None for an
    empty mask in ``crop`` mode.

    ``context_margin``: pixels (>= 1) or a fraction of the mask box's longer side (< 1) added on
    every side. ``min_context``: the crop's smallest side (default ``resolution // 2``, clamped to
    the image), so a small mask still shows the model enough of its surroundings.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2 or 0 in mask.shape:
        raise CropStitchInputError(f"mask: expected a non-empty [H, W] mask, got shape {tuple(mask.shape)}")
    if mode not in MODES:
        raise CropStitchInputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    resolution = _check_resolution(resolution)
    image_height, image_width = mask.shape
    full = CropBox(0, 0, image_width, image_height)
    if mode == "full":
        box = full
    else:
        bounds = mask_bounds(mask)
        if bounds is None:
            return None
        box = expand_box(bounds, margin_pixels(context_margin, bounds), image_width, image_height)
        min_side = resolution // 2 if min_context is None else int(min_context)
        box = ensure_min_size(box, min_side, image_width, image_height)
    target = working_size(box.width, box.height, resolution, PREFERRED_MULTIPLE)
    if mode == "crop":
        box = expand_to_aspect(box, target[0] / target[1], image_width, image_height)
    if abs((box.width / box.height) / (target[0] / target[1]) - 1.0) > ASPECT_TOLERANCE:
        target = working_size(box.width, box.height, resolution, REQUIRED_MULTIPLE)
    return CropPlan(box, target[0], target[1], image_width, image_height)


# ---- the paste mask -------------------------------------------------------------------------------------

def outward_feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """``mask`` with a soft rim ``radius`` pixels wide added outside it (smoothstep from 1 at the edge
    to 0 at ``radius``). Inside the mask nothing is weakened, so what the mask covers is replaced
    completely; pixels ``radius`` or more away from it stay exactly 0."""
    mask = np.asarray(mask, dtype=np.float32)
    radius = float(radius)
    if radius < 0 or not math.isfinite(radius):
        raise CropStitchInputError(f"feather: must be 0 or more pixels, got {radius!r}")
    if mask.ndim != 2:
        raise CropStitchInputError(f"mask: expected a [H, W] mask, got shape {tuple(mask.shape)}")
    solid = mask >= 0.5
    if radius == 0 or not solid.any():
        return mask.copy()
    # The rim is 0 from ``radius`` pixels out, so it lives in the solid part's bounding box widened by
    # the radius; every pixel there has its nearest solid pixel inside that window too, so the
    # window's distance transform is exactly the whole image's there (and far cheaper on a big image).
    height, width = mask.shape
    window = expand_box(mask_bounds(solid), math.ceil(radius) + 2, width, height).slices
    distance = distance_to_zeros(~solid[window], radius)
    t = np.clip(1.0 - distance / radius, 0.0, 1.0)
    rim = np.zeros(mask.shape, dtype=np.float32)
    rim[window] = t * t * (3.0 - 2.0 * t)
    return np.maximum(mask, rim)


# ---- resizing and pasting ---------------------------------------------------------------------------

def resize_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """float RGB ``[h, w, 3]`` -> ``[height, width, 3]``, Lanczos per channel at full float precision."""
    image = np.asarray(image, dtype=np.float32)
    if image.shape[1] == width and image.shape[0] == height:
        return image.copy()
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(image[..., c]), "F").resize((width, height),
                                                                                             Image.LANCZOS))
                for c in range(image.shape[-1])]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0).astype(np.float32)


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """float mask ``[h, w]`` -> ``[height, width]`` (bilinear, 0..1)."""
    mask = np.asarray(mask, dtype=np.float32)
    if mask.shape[1] == width and mask.shape[0] == height:
        return mask.copy()
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(mask), "F").resize((width, height), Image.BILINEAR))
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def crop_for_model(image: np.ndarray, mask: np.ndarray, plan: CropPlan) -> tuple[np.ndarray, np.ndarray]:
    """The crop of ``image`` and ``mask`` at the working size. The mask comes back binary: every
    working pixel that any masked source pixel touches is 1, so the model repaints at least
    everything that will be pasted back."""
    rows, cols = plan.box.slices
    work_image = resize_image(image[rows, cols], plan.work_width, plan.work_height)
    work_mask = resize_mask((np.asarray(mask)[rows, cols] > 0).astype(np.float32), plan.work_width, plan.work_height)
    return work_image, (work_mask > 0).astype(np.float32)


def paste_back(original: np.ndarray, generated: np.ndarray, paste_mask: np.ndarray, plan: CropPlan) -> np.ndarray:
    """A copy of ``original`` with ``generated`` (the model's output at the working size) blended in
    through ``paste_mask``. Pixels where ``paste_mask`` is 0 are the original's bits exactly."""
    original = np.asarray(original, dtype=np.float32)
    paste_mask = np.asarray(paste_mask, dtype=np.float32)
    if paste_mask.shape != original.shape[:2]:
        raise CropStitchInputError(f"paste_mask is {paste_mask.shape[1]}x{paste_mask.shape[0]} but the image is "
                                   f"{original.shape[1]}x{original.shape[0]}")
    box = plan.box
    result = original.copy()
    touched = mask_bounds(paste_mask)
    if touched is None:
        return result
    if touched.x < box.x or touched.y < box.y or touched.right > box.right or touched.bottom > box.bottom:
        raise CropStitchInputError("paste_mask reaches outside the crop box; plan the crop from the paste mask")
    if generated.shape[:2] != (box.height, box.width):
        generated = resize_image(generated, box.width, box.height)
    # Only the paste mask's bounds are blended (a full-image edit of a small object touches a few
    # percent of the pixels); everything outside them is the original copy.
    rows, cols = touched.slices
    patch = np.asarray(generated, dtype=np.float32)[touched.y - box.y:touched.bottom - box.y,
                                                    touched.x - box.x:touched.right - box.x]
    region = result[rows, cols]
    weight = paste_mask[rows, cols][..., None]
    blended = region * (1.0 - weight) + patch * weight
    np.copyto(region, blended, where=weight > 0)
    return result


__all__ = [
    "ASPECT_TOLERANCE", "MODES", "PREFERRED_MULTIPLE", "REQUIRED_MULTIPLE", "CropBox", "CropPlan",
    "CropStitchInputError", "crop_for_model", "ensure_min_size", "expand_box", "expand_to_aspect", "margin_pixels",
    "mask_bounds", "outward_feather", "paste_back", "plan_crop", "resize_image", "resize_mask", "working_size",
]

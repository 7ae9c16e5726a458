"""Pictures in and out of a try-on: the person's crop, the padded garment, the paste back.

CatVTON works on one fixed frame (1024x768 for the mix weights): the person photo is cut to that
aspect around its centre and resized (``PersonCrop``), the garment is fitted inside it and padded
with white, the way the authors prepared both. The result covers only the crop; ``paste_back``
resizes it back over the crop of the original photo, through the try-on mask when repainting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .crop_stitch import outward_feather, resize_image, resize_mask
from .imaging import ImageInputError, to_mask_array, to_rgb_array

MAX_GARMENT_ASPECT = 8.0     # a garment picture longer than this on one side is a strip, not a garment
MIN_SIDE = 8                 # pixels; anything smaller carries no garment
MASK_BLUR = 9                # the authors' demo blurs the mask with this radius before binarising it


class TryOnInputError(ImageInputError):
    """Bad input to the try-on; the message names the input and what to do."""


@dataclass(frozen=True)
class PersonCrop:
    """The centred part of the person photo with the working aspect: ``x, y, width, height``."""

    x: int
    y: int
    width: int
    height: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.height), slice(self.x, self.x + self.width)

    @classmethod
    def centred(cls, image_height: int, image_width: int, work_height: int, work_width: int) -> "PersonCrop":
        aspect = work_width / work_height
        if image_width / image_height < aspect:   # too tall: keep the width, cut rows
            width, height = image_width, max(1, min(image_height, round(image_width / aspect)))
        else:                                      # too wide: keep the height, cut columns
            width, height = max(1, min(image_width, round(image_height * aspect))), image_height
        return cls((image_width - width) // 2, (image_height - height) // 2, width, height)


def person_array(image, name: str = "image") -> np.ndarray:
    rgb = to_rgb_array(image, name)
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise TryOnInputError(f"{name}: the person photo is {rgb.shape[1]}x{rgb.shape[0]} pixels; it needs at least "
                              f"{MIN_SIDE} on each side (a photo of a person, ideally 768x1024 or larger)")
    return rgb


def garment_array(garment, name: str = "garment") -> np.ndarray:
    """The garment picture as float RGB with transparency turned white (a cut-out on white is what
    the model saw in training; black would read as a dark garment edge)."""
    if isinstance(garment, Image.Image):
        rgba = np.asarray(garment.convert("RGBA"), dtype=np.float32) / 255.0
    else:
        array = np.asarray(garment)
        if array.ndim == 3 and array.shape[-1] in (2, 4):
            colour = to_rgb_array(array[..., :-1], name)
            alpha = to_rgb_array(array[..., -1:], name)[..., :1]
            rgba = np.concatenate([colour, alpha], axis=-1)
        else:
            rgb = to_rgb_array(array, name)
            rgba = np.concatenate([rgb, np.ones(rgb.shape[:2] + (1,), np.float32)], axis=-1)
    height, width = rgba.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise TryOnInputError(f"{name}: the garment picture is {width}x{height} pixels; it needs at least "
                              f"{MIN_SIDE} on each side")
    if max(width / height, height / width) > MAX_GARMENT_ASPECT:
        raise TryOnInputError(f"{name}: the garment picture is {width}x{height} pixels, more than "
                              f"{MAX_GARMENT_ASPECT:g} times longer one way than the other; crop it to the garment")
    alpha = rgba[..., 3:4]
    if float(alpha.max()) <= 0.0:
        raise TryOnInputError(f"{name}: the garment picture is fully transparent; give a picture of the garment")
    return rgba[..., :3] * alpha + (1.0 - alpha)


def fit_garment(garment: np.ndarray, work_height: int, work_width: int) -> np.ndarray:
    """The garment scaled to fit inside the working frame, centred on white (any aspect)."""
    height, width = garment.shape[:2]
    scale = min(work_width / width, work_height / height)
    new_width = max(1, min(work_width, round(width * scale)))
    new_height = max(1, min(work_height, round(height * scale)))
    canvas = np.ones((work_height, work_width, 3), np.float32)
    top, left = (work_height - new_height) // 2, (work_width - new_width) // 2
    canvas[top:top + new_height, left:left + new_width] = resize_image(garment, new_width, new_height)
    return canvas


def check_mask(mask, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """The try-on mask as float ``[H, W]``; a mask covering nothing or the whole photo is refused."""
    mask = to_mask_array(mask, shape, name)
    covered = float((mask >= 0.5).mean())
    if covered == 0.0:
        raise TryOnInputError(f"{name}: the mask covers nothing, so no clothes would change. Give a mask of the "
                              "clothes to replace (white = replace) or leave it out to find them by cloth_type")
    if covered == 1.0:
        raise TryOnInputError(f"{name}: the mask covers the whole photo; the model needs the person's face, skin "
                              "and surroundings outside it. Mask only the clothes to replace")
    return mask


def work_mask(mask: np.ndarray, crop: PersonCrop, work_height: int, work_width: int) -> np.ndarray:
    """The mask on the working frame: cropped, resized, blurred and binarised as the authors do."""
    rows, cols = crop.slices
    resized = resize_mask(mask[rows, cols], work_width, work_height)
    radius = MASK_BLUR * min(1.0, work_height / 1024)  # the demo's blur, at the demo's scale
    if radius > 0:
        from scipy import ndimage

        resized = ndimage.gaussian_filter(resized, sigma=radius, mode="nearest")  # PIL's blur radius is a sigma
    binary = (resized >= 0.5).astype(np.float32)
    if not binary.any():
        raise TryOnInputError("mask: the clothes lie outside the part of the photo the model sees (the centred "
                              f"{crop.width}x{crop.height} crop with the working aspect) or are too thin; crop the "
                              "photo around the person")
    return binary


def paste_back(original: np.ndarray, result: np.ndarray, crop: PersonCrop, mask: np.ndarray | None,
               feather: float) -> np.ndarray:
    """``result`` (the working frame) resized over ``crop`` of ``original``. With ``mask`` (repaint),
    only the masked clothes plus a ``feather``-pixel soft rim take new pixels; elsewhere the photo
    is untouched bit for bit."""
    out = np.array(original, dtype=np.float32, copy=True)
    rows, cols = crop.slices
    patch = resize_image(result, crop.width, crop.height)
    if mask is None:
        out[rows, cols] = patch
        return out
    weight = outward_feather((mask[rows, cols] >= 0.5).astype(np.float32), feather)[..., None]
    region = out[rows, cols]
    np.copyto(region, (region * (1.0 - weight) + patch * weight).astype(np.float32), where=weight > 0)
    return out


def working_size(height: int | None, width: int | None, default: tuple[int, int]) -> tuple[int, int]:
    """(height, width): both given (multiples of 8), or the weights' training size."""
    height = height or default[0]
    width = width or default[1]
    for value, name in ((height, "height"), (width, "width")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 16 <= value <= 4096 \
                or value % 8:
            raise TryOnInputError(f"{name}: the working {name} must be a multiple of 8 from 16 to 4096 (0 for the "
                                  f"weights' own {default[0]}x{default[1]}), got {value!r}")
    return int(height), int(width)


__all__ = ["MASK_BLUR", "MAX_GARMENT_ASPECT", "PersonCrop", "TryOnInputError", "check_mask", "fit_garment",
           "garment_array", "paste_back", "person_array", "work_mask", "working_size"]

"""Image and mask conversions shared by every engine (no ComfyUI, no torch).

Engines work on ``numpy`` arrays: an RGB image is ``float32 [H, W, 3]`` in 0..1, a mask is
``float32 [H, W]`` in 0..1. These helpers accept whatever users feed in (RGBA, grayscale,
16-bit, palette, uint8 or float) and give that one form back.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


class ImageInputError(ValueError):
    """Bad image or mask input; the message names the input and what to do."""


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode as float32 RGB ``[H, W, 3]`` in 0..1.

    Alpha is composited over black (what ComfyUI's LoadImage does with the colour channels);
    16-bit and 32-bit integer modes are scaled by their own range rather than clipped at 255.
    """
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        data = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        return np.repeat(data[..., None], 3, axis=-1)
    if mode == "I":
        data = np.asarray(image, dtype=np.int64).astype(np.float32)
        peak = 65535.0 if data.max(initial=0) > 255 else 255.0
        return np.repeat(np.clip(data / peak, 0, 1)[..., None], 3, axis=-1)
    if mode == "F":
        data = np.asarray(image, dtype=np.float32)
        peak = data.max(initial=1.0)
        scale = 255.0 if peak > 1.0 else 1.0
        return np.repeat(np.clip(data / scale, 0, 1)[..., None], 3, axis=-1)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        return rgba[..., :3] * rgba[..., 3:4]
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def pil_alpha_mask(image: Image.Image) -> np.ndarray | None:
    """The alpha channel as a float32 ``[H, W]`` mask, or None when the image has none."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        return np.asarray(image.convert("RGBA"), dtype=np.float32)[..., 3] / 255.0
    return None


def to_rgb_array(image, name: str = "image") -> np.ndarray:
    """Any of PIL image, ``[H,W]``, ``[H,W,1|3|4]`` uint8/uint16/float array -> float32 RGB 0..1.

    A float32 RGB array already in 0..1 (ComfyUI's IMAGE frames, the usual case) is not copied: the
    result is a read-only view of it, holding the very values a copy would."""
    if isinstance(image, Image.Image):
        return pil_to_rgb_array(image)
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ImageInputError(
            f"{name}: expected an image of shape [H, W] or [H, W, C] with C in 1..4, got {tuple(array.shape)}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageInputError(f"{name}: the image is empty ({array.shape[1]}x{array.shape[0]} pixels)")
    given = array
    array = _to_unit_float(array, name, copy=False)
    if array is given:
        array = _read_only(array)
    channels = array.shape[-1]
    if channels == 1:
        return np.repeat(array, 3, axis=-1)
    if channels == 2:  # grey + alpha
        return np.repeat(array[..., :1] * array[..., 1:2], 3, axis=-1)
    if channels == 4:
        return array[..., :3] * array[..., 3:4]
    return array


def to_mask_array(mask, shape: tuple[int, int] | None = None, name: str = "mask") -> np.ndarray:
    """A mask from PIL or array as float32 ``[H, W]`` in 0..1, checked against ``shape`` (H, W)."""
    if isinstance(mask, Image.Image):
        alpha = pil_alpha_mask(mask)
        array = alpha if alpha is not None else np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    else:
        array = np.asarray(mask)
        if array.ndim == 3 and array.shape[-1] in (1, 3, 4):
            array = array[..., 0] if array.shape[-1] != 4 else array[..., 3]
        if array.ndim != 2:
            raise ImageInputError(f"{name}: expected a mask of shape [H, W], got {tuple(array.shape)}")
        array = _to_unit_float(array, name)
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise ImageInputError(
            f"{name}: the mask is {array.shape[1]}x{array.shape[0]} but the image is {shape[1]}x{shape[0]}; "
            "resize the mask to the image (for example with core's 'Upscale Image' on the mask, "
            "or this pack's mask tools) before connecting it")
    return array.astype(np.float32, copy=False)


# The largest float32 bit pattern in 0..1 (that of 1.0): read as unsigned integers, the bits of every
# float in +0.0..1.0 are at most this, and those of negative numbers, -0.0, infinities and NaN are above.
_UNIT_FLOAT_BITS = np.float32(1.0).view(np.uint32)


def is_unit_float32(array: np.ndarray) -> bool:
    """True when ``array`` is float32 and every value is finite and in 0..1 (one pass over the bits,
    0.3-0.7 ms for a 1024x1024 RGB image, against 12-24 ms for a checked, clipped copy)."""
    return (array.dtype == np.float32 and array.size > 0
            and bool(array.view(np.uint32).max() <= _UNIT_FLOAT_BITS))


def _to_unit_float(array: np.ndarray, name: str, copy: bool = True) -> np.ndarray:
    """``array`` as float32 in 0..1. With ``copy=False`` a float32 array already in 0..1 comes back
    as it is (the values a checked, clipped copy would hold, bit for bit)."""
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.integer):
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        return np.clip(array.astype(np.float32) / peak, 0, 1)
    if np.issubdtype(array.dtype, np.floating):
        if not copy and is_unit_float32(array):
            return array
        out = array.astype(np.float32)
        if not np.isfinite(out).all():
            raise ImageInputError(f"{name}: contains NaN or infinite values")
        return np.clip(out, 0.0, 1.0, out=out)   # in place: ``out`` is already a copy
    raise ImageInputError(f"{name}: unsupported pixel type {array.dtype}")


def _read_only(array: np.ndarray) -> np.ndarray:
    """A view of the caller's pixels that an engine cannot write to by mistake."""
    view = array.view()
    view.flags.writeable = False
    return view


def rgb_to_pil(array: np.ndarray) -> Image.Image:
    """float RGB 0..1 ``[H, W, 3]`` -> 8-bit PIL image (rounded, not truncated)."""
    return Image.fromarray(np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8), "RGB")


def mask_to_pil(mask: np.ndarray) -> Image.Image:
    """float mask 0..1 ``[H, W]`` -> 8-bit ``L`` PIL image."""
    return Image.fromarray(np.clip(np.rint(mask * 255.0), 0, 255).astype(np.uint8), "L")


def load_image_file(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image file: (RGB float array, alpha mask or None). Raises a clear error for a
    missing or unreadable file."""
    try:
        with Image.open(path) as img:
            img.load()
            from PIL import ImageOps

            img = ImageOps.exif_transpose(img)
            return pil_to_rgb_array(img), pil_alpha_mask(img)
    except FileNotFoundError:
        raise ImageInputError(f"image file not found: {path}") from None
    except (OSError, SyntaxError) as exc:
        raise ImageInputError(f"{path} is not a readable image ({exc})") from None

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
    """Any of PIL image, ``[H,W]``, ``[H,W,1|3|4]`` uint8/uint16/float array -> float32 RGB 0..1."""
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
    array = _to_unit_float(array, name)
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


def _to_unit_float(array: np.ndarray, name: str) -> np.ndarray:
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
        out = array.astype(np.float32)
        if not np.isfinite(out).all():
            raise ImageInputError(f"{name}: contains NaN or infinite values")
        return np.clip(out, 0.0, 1.0)
    raise ImageInputError(f"{name}: unsupported pixel type {array.dtype}")


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

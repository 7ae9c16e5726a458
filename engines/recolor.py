"""Recolour the pixels under a mask, keeping their shading: hue and saturation come from the
target colour, brightness from the pixel. No weights, so it is exact and instant, and pixels outside
the mask are untouched (bit-identical)."""

from __future__ import annotations

import numpy as np

from .colors import color_to_unit
from .imaging import ImageInputError, to_mask_array


def _rgb_to_hsv(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    maxc, minc = rgb.max(axis=-1), rgb.min(axis=-1)
    value = maxc
    delta = maxc - minc
    saturation = np.where(maxc > 0, delta / np.maximum(maxc, 1e-12), 0.0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(delta, 1e-12)
    hue = np.select([maxc == r, maxc == g], [(g - b) / safe % 6.0, (b - r) / safe + 2.0], (r - g) / safe + 4.0)
    return np.where(delta > 0, hue / 6.0, 0.0), saturation, value


def _hsv_to_rgb(hue, saturation, value) -> np.ndarray:
    h6 = (hue % 1.0) * 6.0
    sector = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p, q, t = value * (1 - saturation), value * (1 - saturation * f), value * (1 - saturation * (1 - f))
    choices_r = [value, q, p, p, t, value]
    choices_g = [t, value, value, q, p, p]
    choices_b = [p, p, t, value, value, q]
    pick = lambda options: np.choose(sector, options)  # noqa: E731
    return np.stack([pick(choices_r), pick(choices_g), pick(choices_b)], axis=-1)


def recolor(image: np.ndarray, mask: np.ndarray, color="red", strength: float = 1.0) -> np.ndarray:
    """``image`` (float RGB ``[H, W, 3]``) with the masked pixels turned ``color``.

    Each pixel keeps its brightness (value in HSV), so folds and highlights survive; it takes the
    target's hue and saturation. Near-grey targets (white, black, grey) also move the brightness
    toward the target's. ``strength`` blends between the original (0) and the full recolour (1); a
    soft mask blends the same way at its edge.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ImageInputError(f"image: expected an RGB image [H, W, 3], got {tuple(image.shape)}")
    mask = to_mask_array(mask, image.shape[:2], "mask")
    if not 0.0 <= float(strength) <= 1.0:
        raise ImageInputError(f"strength: between 0 and 1, got {strength!r}")
    target = np.asarray(color_to_unit(color, "color"), dtype=np.float32)
    t_hue, t_sat, t_val = (float(c) for c in _rgb_to_hsv(target.astype(np.float64)))
    inside = mask > 0
    if not inside.any() or strength == 0:
        return image.copy()
    pixels = image[inside].astype(np.float64)
    _, sat, val = _rgb_to_hsv(pixels)
    if t_sat < 0.08:
        # Toward white/grey/black: drop the colour and pull brightness to the target's.
        new_val = 0.35 * val + 0.65 * t_val
        recoloured = np.repeat(new_val[:, None], 3, axis=-1)
    else:
        new_sat = np.clip(0.25 * sat + 0.75 * t_sat, 0, 1)
        recoloured = _hsv_to_rgb(np.full_like(val, t_hue), new_sat, val)
    weight = (mask[inside] * float(strength))[:, None]
    out = image.copy()
    out[inside] = (pixels * (1 - weight) + recoloured * weight).astype(np.float32)
    return out

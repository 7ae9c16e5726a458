"""Colour values as users write them, parsed once for every tool."""

from __future__ import annotations

import math

from PIL import ImageColor

from .imaging import ImageInputError

_HINT = "write '#ff0000', '#ff000080' (with opacity), 'red', 'rgb(255, 0, 0)' or '255, 0, 0'"


class ColorInputError(ImageInputError):
    """A value that is not a colour; the message names the input."""


def parse_color(value, name: str = "color") -> tuple[int, int, int, int]:
    """A colour as 8-bit RGBA.

    Accepts ``'#RGB'``, ``'#RRGGBB'``, ``'#RRGGBBAA'`` (the ``#`` may be left out), a CSS name,
    ``'rgb(...)'`` / ``'hsl(...)'``, ``'r, g, b'`` (0..255), a tuple of 0..255 integers, or a tuple
    of 0..1 floats.
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ColorInputError(f"{name}: expected a colour; {_HINT}")
        if "," in text and "(" not in text:
            text = f"rgb({text})"
        elif len(text) in (3, 6, 8) and all(c in "0123456789abcdefABCDEF" for c in text):
            text = "#" + text
        try:
            return tuple(int(c) for c in ImageColor.getcolor(text, "RGBA"))
        except ValueError:
            raise ColorInputError(f"{name}: {value!r} is not a colour; {_HINT}") from None
    if not isinstance(value, (tuple, list)) or len(value) not in (3, 4):
        raise ColorInputError(f"{name}: expected a colour, got {value!r}; {_HINT}")
    try:
        channels = [float(c) for c in value]
    except (TypeError, ValueError):
        raise ColorInputError(f"{name}: {value!r} is not a colour; {_HINT}") from None
    if any(not math.isfinite(c) or c < 0 for c in channels) or max(channels) > 255:
        raise ColorInputError(f"{name}: colour channels must be between 0 and 255, got {value!r}")
    # Floats that all fit in 0..1 are unit channels; integers are 0..255 channels.
    unit = all(isinstance(c, float) for c in value) and max(channels) <= 1.0
    rgba = [round(c * 255) if unit else round(c) for c in channels] + ([] if len(channels) == 4 else [255])
    return tuple(int(c) for c in rgba)


def color_to_unit(value, name: str = "color") -> tuple[float, float, float]:
    """A colour as RGB floats in 0..1 (any alpha is ignored)."""
    r, g, b, _ = parse_color(value, name)
    return (r / 255.0, g / 255.0, b / 255.0)

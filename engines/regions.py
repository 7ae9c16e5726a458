"""Named regions of an image ("at the top", "bottom left"), as boxes: where to write text or place
something when the instruction names a position rather than an object."""

from __future__ import annotations

from .geometry import Box


class RegionInputError(ValueError):
    """Bad region input; the message names the input."""


POSITIONS = ("top", "bottom", "left", "right", "center", "top left", "top right", "bottom left", "bottom right")


def place_region(width: int, height: int, position: str = "top", size: float = 0.2, margin: float = 0.03) -> Box:
    """The box for ``position`` in a ``width`` x ``height`` image.

    ``size`` is the fraction of the image the region spans across its short direction: a "top"
    band is ``size`` of the height and the full width (less margins); a corner is ``size`` of each
    side, at least a third of the width so text has room. ``margin`` is the gap to the image edge,
    as a fraction of the shorter side.
    """
    given = position
    position = " ".join(str(position).lower().replace("-", " ").split())
    if position not in POSITIONS:
        raise RegionInputError(f"position: {given!r} is not one of {', '.join(POSITIONS)}")
    if not 0.01 <= size <= 1.0:
        raise RegionInputError(f"size: a fraction between 0.01 and 1, got {size!r}")
    if not 0.0 <= margin < 0.5:
        raise RegionInputError(f"margin: a fraction between 0 and 0.5, got {margin!r}")
    if width < 1 or height < 1:
        raise RegionInputError(f"image: {width}x{height} has no pixels")
    gap = margin * min(width, height)
    words = position.split()
    vertical = next((w for w in words if w in ("top", "bottom")), "middle")
    horizontal = next((w for w in words if w in ("left", "right")), "middle")
    if position in ("top", "bottom"):          # a band across the image
        band_w, band_h = width - 2 * gap, size * height
    elif position in ("left", "right"):        # a band down the image
        band_w, band_h = size * width, height - 2 * gap
    elif position == "center":
        band_w, band_h = max(2 * size, 0.5) * width, size * height
    else:                                      # a corner: wide enough for a word or two
        band_w, band_h = max(size, 1 / 3) * width, size * height
    band_w, band_h = min(band_w, width - 2 * gap), min(band_h, height - 2 * gap)
    x1 = {"left": gap, "middle": (width - band_w) / 2, "right": width - gap - band_w}[horizontal]
    y1 = {"top": gap, "middle": (height - band_h) / 2, "bottom": height - gap - band_h}[vertical]
    return Box(round(x1), round(y1), round(x1 + band_w), round(y1 + band_h), label=position)

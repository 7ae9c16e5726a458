"""Draw labelled boxes and prompt points over an image, to see what grounding found.

Pure numpy + Pillow. Boxes are outlined inside their own edges in one colour per label (a fixed
palette, in order of first appearance, so one label keeps its colour across a batch when the
caller passes the same ``colors``); a box's label and score sit on a filled tab at its top-left
corner (above the box when there is room). Points are filled circles with a white rim: positive
green, negative red.

Everything is drawn on a transparent overlay and composited in float, so pixels away from the
marks keep their exact values.
"""

from __future__ import annotations

import logging
import os
from typing import Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .fonts import DEFAULT_FONT, load_font
from .geometry import Box, Point

log = logging.getLogger(__name__)

RGB = tuple[int, int, int]

# Twenty colours that stay distinct from one another (Sasha Trubetskoy's list, without white and
# black, which vanish on bright and dark photos); green and red come late so that boxes are not
# confused with positive and negative points.
PALETTE: tuple[RGB, ...] = (
    (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230), (255, 225, 25),
    (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128), (128, 128, 0), (220, 190, 255),
    (255, 215, 180), (170, 255, 195), (255, 250, 200), (250, 190, 212), (210, 245, 60),
    (128, 128, 128), (60, 180, 75), (230, 25, 75),
)
POSITIVE_POINT: RGB = (0, 200, 0)
NEGATIVE_POINT: RGB = (220, 0, 0)
POINT_RIM: RGB = (255, 255, 255)


def label_colors(labels: Iterable[str | None], start: Mapping[str | None, RGB] | None = None) -> dict[str | None, RGB]:
    """Label -> palette colour, in order of first appearance (``start`` entries are kept)."""
    colors = dict(start or {})
    for label in labels:
        if label not in colors:
            colors[label] = PALETTE[len(colors) % len(PALETTE)]
    return colors


def auto_line_width(width: int, height: int) -> int:
    """Outline width that reads at any image size: 2 px on small images, ~1/300 of the long side."""
    return max(2, round(max(width, height) / 300))


def _readable_on(color: RGB) -> RGB:
    luma = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luma > 140 else (255, 255, 255)


def _caption(box: Box, show_labels: bool, show_scores: bool) -> str:
    parts = []
    if show_labels and box.label:
        parts.append(box.label)
    if show_scores and box.score is not None:
        parts.append(f"{box.score:.2f}")
    return " ".join(parts)


def render_boxes(image: np.ndarray, boxes: Sequence[Box], points: Sequence[Point] = (), *,
                 line_width: int | None = None, show_labels: bool = True, show_scores: bool = True,
                 colors: Mapping[str | None, RGB] | None = None, label_size: int | None = None,
                 point_radius: int | None = None, font: str = DEFAULT_FONT,
                 font_dirs: Sequence[str | os.PathLike] = ()) -> np.ndarray:
    """``image`` (float32 RGB ``[H, W, 3]``) with ``boxes`` and ``points`` drawn over it.

    ``line_width``, ``label_size`` (font pixels) and ``point_radius`` default to sizes scaled to
    the image; ``colors`` maps labels to RGB (missing labels get palette colours).
    """
    canvas = np.array(image, dtype=np.float32, copy=True)
    if canvas.ndim != 3 or canvas.shape[-1] != 3:
        raise ValueError(f"image: expected an RGB array [H, W, 3], got {tuple(canvas.shape)}")
    height, width = canvas.shape[:2]
    line_width = int(line_width) if line_width else auto_line_width(width, height)
    label_size = int(label_size) if label_size else max(10, round(max(width, height) / 45))
    point_radius = int(point_radius) if point_radius else max(3, round(max(width, height) / 100))
    palette = label_colors((b.label for b in boxes), colors)

    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    # Least confident first, so the best detections end up on top where boxes overlap.
    ordered = sorted(boxes, key=lambda b: 1.0 if b.score is None else b.score)
    for box in ordered:
        color = tuple(palette[box.label])
        left, top, right, bottom = box.pixel_bounds(width, height)
        if right <= left or bottom <= top:
            log.info("box %s lies outside the %dx%d image; not drawn", box, width, height)
            continue
        # PIL's rectangle includes its end pixel and draws its width inwards: the line stays
        # inside the box.
        draw.rectangle((left, top, right - 1, bottom - 1), outline=color + (255,), width=line_width)
        caption = _caption(box, show_labels, show_scores)
        if caption:
            _draw_tab(draw, caption, color, left, top, width, label_size, font, font_dirs)

    rim = max(1, point_radius // 3)
    for point in points:
        fill = POSITIVE_POINT if point.positive else NEGATIVE_POINT
        r = point_radius
        draw.ellipse((point.x - r, point.y - r, point.x + r, point.y + r),
                     fill=fill + (255,), outline=POINT_RIM + (255,), width=rim)

    layer = np.asarray(overlay, dtype=np.float32) / 255.0
    alpha = layer[..., 3:4]
    return canvas * (1.0 - alpha) + layer[..., :3] * alpha


def _draw_tab(draw: ImageDraw.ImageDraw, caption: str, color: RGB, left: int, top: int,
              image_width: int, size: int, font_name: str, font_dirs) -> None:
    """A filled tab with the caption: above the box when it fits there, else inside its top."""
    font = load_font(font_name, size, font_dirs)
    margin = max(1, size // 5)
    text_left, text_top, text_right, text_bottom = font.getbbox(caption)
    tab_w = (text_right - text_left) + 2 * margin
    tab_h = (text_bottom - text_top) + 2 * margin
    x = max(0, min(left, image_width - tab_w))
    y = top - tab_h if top - tab_h >= 0 else top
    draw.rectangle((x, y, x + tab_w - 1, y + tab_h - 1), fill=color + (255,))
    draw.text((x + margin - text_left, y + margin - text_top), caption, font=font,
              fill=_readable_on(color) + (255,))

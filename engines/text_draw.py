"""Draw text fitted into regions of an image: the largest font size whose wrapped text fits each box.

Pure numpy + Pillow. The image is float32 RGB ``[H, W, 3]`` in 0..1 (``engines/imaging.py``),
regions are ``Box`` values (``engines/geometry.py``).

Fitting, per box: the text is word-wrapped to the box width (less padding) and a binary search
over integer font sizes in ``[min_size, max_size]`` finds the largest size whose wrapped block
fits. Sizes are measured on what is drawn (glyph heights, advance widths, the outline included),
so the text fills its box and nothing is cut off. Words are kept whole when any size fits that way; only when none
does (a long word in a narrow box, or text without spaces such as Japanese) are words broken
between characters. When even ``min_size`` does not fit, ``overflow`` decides: ``"error"``
(default) raises ``TextFitError``, ``"shrink"`` goes below ``min_size`` (down to 1 px), ``"clip"``
draws at ``min_size`` and cuts what sticks out.

Every changed pixel lies inside its box: each box is drawn on its own layer the size of the box
and composited into the image there. The returned mask is the coverage of what was drawn
(anti-aliased, 0..1), so it says exactly which pixels changed and by how much.

Characters the font has no glyph for (DejaVu has no CJK, for instance) are drawn as the font's
missing-glyph box and logged as a warning; put a font that covers them in the fonts folder.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import NamedTuple, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .fonts import DEFAULT_FONT, load_font, missing_characters
from .colors import parse_color
from .geometry import Box
from .mask_ops import connected_regions

log = logging.getLogger(__name__)

ALIGNS = ("left", "center", "right")
VALIGNS = ("top", "middle", "bottom")
OVERFLOWS = ("error", "shrink", "clip")
AUTO = "auto"


class TextInputError(ValueError):
    """Bad input to the text drawer (text, box, colour, option); the message says which and why."""


class TextFitError(ValueError):
    """The text does not fit its box even at the smallest allowed font size."""


class DrawnText(NamedTuple):
    image: np.ndarray  # float32 RGB [H, W, 3]
    mask: np.ndarray   # float32 [H, W]: coverage of what was drawn (0 where nothing changed)


@dataclass(frozen=True)
class TextLayout:
    """A text fitted to a width and height: the font size and the wrapped lines."""

    size: int
    lines: tuple[str, ...]
    stroke: int           # outline width in pixels at this size
    width: float          # ink extent of the block
    height: float
    broken_words: bool    # True when words had to be broken between characters


# ---- colours -------------------------------------------------------------------------------

def _contrasting(rgb01: np.ndarray) -> tuple[int, int, int, int]:
    """Black or white, whichever reads better on a colour (Rec. 601 luma)."""
    luma = float(0.299 * rgb01[0] + 0.587 * rgb01[1] + 0.114 * rgb01[2])
    return (0, 0, 0, 255) if luma > 0.5 else (255, 255, 255, 255)


# ---- regions from a mask -------------------------------------------------------------------

def regions_from_mask(mask: np.ndarray, separate: bool = True, min_fraction: float = 0.02,
                      name: str = "mask") -> list[Box]:
    """Boxes to write in from a mask: the bounding box of each connected region (``separate``), or
    of the whole mask. Regions smaller than ``min_fraction`` of the largest are specks and are
    dropped. Boxes come in reading order: rows top to bottom, left to right within a row."""
    array = np.asarray(mask, dtype=np.float32)
    if array.ndim != 2:
        raise TextInputError(f"{name}: expected a mask of shape [H, W], got {tuple(array.shape)}")
    regions = connected_regions(array)
    if not regions:
        raise TextInputError(f"{name}: the mask is empty, so there is no region to write in")
    if not separate:
        return [Box(min(r.x1 for r in regions), min(r.y1 for r in regions),
                    max(r.x2 for r in regions), max(r.y2 for r in regions))]
    largest = max(r.score for r in regions)
    return [replace(r, score=None) for r in regions if r.score >= min_fraction * largest]


# ---- wrapping and fitting ------------------------------------------------------------------

def _ink(font: ImageFont.FreeTypeFont, text: str, stroke: int) -> tuple[float, float, float, float]:
    """Ink box of one line, relative to its left end on the baseline."""
    if not text:
        return (0.0, 0.0, 0.0, 0.0)
    return font.getbbox(text, anchor="ls", stroke_width=stroke)


def _width(font, text: str, stroke: int) -> float:
    left, _, right, _ = _ink(font, text, stroke)
    return right - left


def _break_word(word: str, font, max_width: float, stroke: int, force: bool) -> list[str] | None:
    """A word cut into pieces that each fit ``max_width``; None when a single character does not
    (unless ``force``: then that character gets a line of its own)."""
    pieces, current = [], ""
    for char in word:
        if _width(font, current + char, stroke) <= max_width:
            current += char
            continue
        if not current and not force:
            return None
        if current:
            pieces.append(current)
        current = char
        if _width(font, char, stroke) > max_width and not force:
            return None
    pieces.append(current)
    return pieces


def wrap_text(text: str, font, max_width: float, stroke: int = 0, breaking: str = "never") -> list[str] | None:
    """Greedy word wrap of ``text`` (newlines kept) to ``max_width`` pixels of ink.

    ``breaking``: ``"never"`` returns None when a word alone is too wide; ``"chars"`` breaks such
    a word between characters (None if one character is too wide); ``"force"`` never fails.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if _width(font, candidate, stroke) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
                line = ""
            if _width(font, word, stroke) <= max_width:
                line = word
                continue
            if breaking == "never":
                return None
            pieces = _break_word(word, font, max_width, stroke, force=breaking == "force")
            if pieces is None:
                return None
            lines.extend(pieces[:-1])
            line = pieces[-1]
        lines.append(line)
    return lines


def _line_pitch(font, line_spacing: float) -> float:
    ascent, descent = font.getmetrics()
    return (ascent + descent) * line_spacing


def _block_extent(font, lines: Sequence[str], stroke: int, line_spacing: float) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) ink of the whole block, the first baseline at y=0, every line
    starting at x=0."""
    pitch = _line_pitch(font, line_spacing)
    left = top = float("inf")
    right = bottom = float("-inf")
    for i, line in enumerate(lines):
        if not line:
            continue
        l, t, r, b = _ink(font, line, stroke)
        left, right = min(left, l), max(right, r)
        top, bottom = min(top, i * pitch + t), max(bottom, i * pitch + b)
    if left == float("inf"):
        return (0.0, 0.0, 0.0, 0.0)
    return (left, top, right, bottom)


def _layout_at(text, size, width, height, font_name, font_dirs, line_spacing, outline, breaking):
    font = load_font(font_name, size, font_dirs)
    stroke = int(round(outline * size))
    lines = wrap_text(text, font, width, stroke, breaking)
    if lines is None:
        return None, False
    left, top, right, bottom = _block_extent(font, lines, stroke, line_spacing)
    layout = TextLayout(size, tuple(lines), stroke, right - left, bottom - top, breaking != "never")
    return layout, (layout.width <= width and layout.height <= height)


def _largest_fitting(lo: int, hi: int, attempt) -> TextLayout | None:
    """Binary search for the largest size in [lo, hi] that fits (fit shrinks as size grows)."""
    best = None
    while lo <= hi:
        mid = (lo + hi) // 2
        layout, fits = attempt(mid)
        if fits:
            best, lo = layout, mid + 1
        else:
            hi = mid - 1
    return best


def fit_text(text: str, width: float, height: float, font: str = DEFAULT_FONT, *,
             font_dirs: Sequence[str | os.PathLike] = (), min_size: int = 8, max_size: int = 512,
             line_spacing: float = 1.15, outline: float = 0.0, overflow: str = "error",
             where: str = "the box") -> TextLayout:
    """The largest font size (and wrapped lines) at which ``text`` fits ``width`` x ``height``."""
    text = _check_text(text, where)
    if overflow not in OVERFLOWS:
        raise TextInputError(f"overflow: expected one of {OVERFLOWS}, got {overflow!r}")
    min_size, max_size = int(min_size), int(max_size)
    if not 1 <= min_size <= max_size:
        raise TextInputError(f"min_size ({min_size}) must be at least 1 and at most max_size ({max_size})")
    if line_spacing <= 0:
        raise TextInputError(f"line_spacing must be above 0, got {line_spacing}")
    if outline < 0:
        raise TextInputError(f"outline must be 0 or more, got {outline}")

    def attempt(breaking):
        return lambda size: _layout_at(text, size, width, height, font, font_dirs, line_spacing, outline, breaking)

    # No glyph is taller than a few times its size, so sizes far above the box cannot fit.
    top = max(min_size, min(max_size, int(4 * max(width, height)) + 1))
    layout = (_largest_fitting(min_size, top, attempt("never"))
              or _largest_fitting(min_size, top, attempt("chars")))
    if layout is None and overflow == "shrink":
        layout = _largest_fitting(1, min_size - 1, attempt("chars"))
    if layout is None and overflow == "clip":
        layout = attempt("force")(min_size)[0]
    if layout is None:
        preview = text if len(text) <= 40 else text[:37] + "..."
        raise TextFitError(
            f"the text {preview!r} does not fit {where} ({width:.0f}x{height:.0f} px inside the padding) "
            f"even at min_size {min_size}: use a bigger box, shorter text, a smaller min_size or less "
            "padding, or set overflow to 'shrink' or 'clip'")
    return layout


def _check_text(text, where: str) -> str:
    if not isinstance(text, str):
        raise TextInputError(f"text for {where}: expected a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise TextInputError(
            f"the text for {where} is empty; give some text (to leave a box untouched, leave it out)")
    return stripped


# ---- drawing -------------------------------------------------------------------------------

def _render_masks(layout: TextLayout, font, box_size, inner, align, valign, line_spacing):
    """Coverage masks (fill, fill+outline) of the laid-out text on a layer of ``box_size``."""
    layer_w, layer_h = box_size
    x1, y1, x2, y2 = inner
    left, top, right, bottom = _block_extent(font, layout.lines, layout.stroke, line_spacing)
    baseline = {"top": y1 - top, "middle": (y1 + y2) / 2 - (top + bottom) / 2, "bottom": y2 - bottom}[valign]
    pitch = _line_pitch(font, line_spacing)
    fill = Image.new("L", (layer_w, layer_h), 0)
    stroked = Image.new("L", (layer_w, layer_h), 0) if layout.stroke else None
    for i, line in enumerate(layout.lines):
        if not line:
            continue
        l, _, r, _ = _ink(font, line, layout.stroke)
        x = {"left": x1 - l, "center": (x1 + x2) / 2 - (l + r) / 2, "right": x2 - r}[align]
        origin = (x, baseline + i * pitch)
        ImageDraw.Draw(fill).text(origin, line, font=font, fill=255, anchor="ls")
        if stroked is not None:
            ImageDraw.Draw(stroked).text(origin, line, font=font, fill=255, anchor="ls",
                                         stroke_width=layout.stroke, stroke_fill=255)
    to_array = lambda im: np.asarray(im, dtype=np.float32) / 255.0  # noqa: E731
    return to_array(fill), (to_array(stroked) if stroked is not None else None)


def _paint(region: np.ndarray, coverage: np.ndarray, rgba: tuple[int, int, int, int], changed: np.ndarray,
           opacity: float = 1.0):
    """Composite a colour with per-pixel coverage over ``region`` in place; grow ``changed``."""
    alpha = coverage * (rgba[3] / 255.0 * opacity)
    colour = np.asarray(rgba[:3], dtype=np.float32) / 255.0
    region *= 1.0 - alpha[..., None]
    region += colour * alpha[..., None]
    changed += alpha * (1.0 - changed)


def draw_text(image: np.ndarray, boxes: Sequence[Box], texts: str | Sequence[str], *,
              font: str = DEFAULT_FONT, font_dirs: Sequence[str | os.PathLike] = (),
              color: str = AUTO, align: str = "center", valign: str = "middle",
              padding: float = 0.05, line_spacing: float = 1.15, min_size: int = 8, max_size: int = 512,
              outline: float = 0.0, outline_color: str = AUTO, backing: str = "none",
              backing_opacity: float = 1.0, overflow: str = "error") -> DrawnText:
    """Draw ``texts`` fitted into ``boxes`` of ``image``; returns (image, changed-pixel mask).

    ``texts``: one string for every box, or one per box. ``color``/``outline_color``: a colour or
    ``"auto"`` (black or white, whichever reads better on the box / on the text colour).
    ``padding``: a fraction of the box's shorter side kept clear on every edge. ``outline``:
    outline thickness as a fraction of the font size (0 = none). ``backing``: ``"none"`` or a
    colour that fills the whole box first (covering what was there), at ``backing_opacity``.
    """
    canvas = np.array(image, dtype=np.float32, copy=True)
    if canvas.ndim != 3 or canvas.shape[-1] != 3:
        raise TextInputError(f"image: expected an RGB array [H, W, 3], got {tuple(canvas.shape)}")
    height, width = canvas.shape[:2]
    boxes = list(boxes)
    if not boxes:
        raise TextInputError("boxes: there is no box to draw text in; connect boxes or a mask")
    texts = [texts] * len(boxes) if isinstance(texts, str) else list(texts)
    if len(texts) == 1:
        texts = texts * len(boxes)
    if len(texts) != len(boxes):
        raise TextInputError(
            f"texts: {len(texts)} texts for {len(boxes)} boxes; give one text for every box, or a single text")
    if align not in ALIGNS:
        raise TextInputError(f"align: expected one of {ALIGNS}, got {align!r}")
    if valign not in VALIGNS:
        raise TextInputError(f"valign: expected one of {VALIGNS}, got {valign!r}")
    if not 0.0 <= padding < 0.5:
        raise TextInputError(f"padding: a fraction of the box's shorter side in [0, 0.5), got {padding}")
    if not 0.0 <= backing_opacity <= 1.0:
        raise TextInputError(f"backing_opacity: expected 0..1, got {backing_opacity}")
    fill_rgba = None if color == AUTO else parse_color(color, "color")
    outline_rgba = None if outline_color == AUTO else parse_color(outline_color, "outline_color")
    backing_rgba = None
    if backing and backing.strip().lower() not in ("none", "transparent"):
        backing_rgba = parse_color(backing, "backing")

    changed = np.zeros((height, width), dtype=np.float32)
    for index, (box, text) in enumerate(zip(boxes, texts)):
        where = f"box {index} (x={box.x1:g}, y={box.y1:g}, width={box.width:g}, height={box.height:g})"
        clipped = box.clamped(width, height)
        if clipped.width <= 0 or clipped.height <= 0:
            raise TextInputError(
                f"{where} has no area inside the {width}x{height} image; give a box that overlaps the image")
        left, top, right, bottom = clipped.pixel_bounds(width, height)
        pad = padding * min(clipped.width, clipped.height)
        inner = (clipped.x1 - left + pad, clipped.y1 - top + pad, clipped.x2 - left - pad, clipped.y2 - top - pad)
        layout = fit_text(text, inner[2] - inner[0], inner[3] - inner[1], font, font_dirs=font_dirs,
                          min_size=min_size, max_size=max_size, line_spacing=line_spacing,
                          outline=outline, overflow=overflow, where=where)
        face = load_font(font, layout.size, font_dirs)
        missing = missing_characters(face, text)
        if missing:
            log.warning("font %s has no glyph for %r (%s): drawn as the font's missing-glyph box; "
                        "add a font that covers them to the fonts folder", font, missing, where)
        log.info("%s: font size %d, %d line(s)", where, layout.size, len(layout.lines))

        region = canvas[top:bottom, left:right]
        region_changed = changed[top:bottom, left:right]
        if backing_rgba is not None:
            _paint(region, np.ones(region.shape[:2], np.float32), backing_rgba, region_changed, backing_opacity)
        fill_mask, stroke_mask = _render_masks(layout, face, (right - left, bottom - top), inner,
                                               align, valign, line_spacing)
        text_rgba = fill_rgba or _contrasting(region.reshape(-1, 3).mean(axis=0))
        if stroke_mask is not None:
            edge_rgba = outline_rgba or _contrasting(np.asarray(text_rgba[:3], np.float32) / 255.0)
            _paint(region, stroke_mask, edge_rgba, region_changed)
        _paint(region, fill_mask, text_rgba, region_changed)
    return DrawnText(canvas, changed)

"""Replace text in an image: remove the old text in each box, then draw the new text fitted into it.

``replace_text(image, boxes, texts, remove=...)`` -> ``ReplacedText``. Pure numpy + Pillow except
for the removal, which the caller passes in (``remove(image, mask) -> (image, changed mask)``):
the removal node's methods, ObjectClear or inpainting (see ``removal_function``), so this file
stays testable with any remover.

Per call:

1. ``texts``: one text for every box, or one per box (``split_texts`` reads "A | B" or lines).
2. With ``match_color``, each box's text colour is sampled from the ORIGINAL pixels before removal
   (``sample_text_color``): the box's background is the median of its border ring; the text is the
   dominant colour among the pixels that differ most from it. When no pixel stands out (a plain
   box), the colour falls back to ``color`` ("auto": black or white, whichever reads better).
3. The boxes (grown by ``grow`` pixels) make one mask; the remover clears it in one call.
4. Each box gets its own text, fitted at the largest size (``engines/text_draw.py``).

The returned mask is where pixels changed: the remover's mask joined with the drawn text's coverage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from . import mask_ops
from .geometry import Box
from .text_draw import AUTO, TextInputError, draw_text

log = logging.getLogger(__name__)

Remover = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
MIN_CONTRAST = 0.12   # RGB distance (0..sqrt 3) below which nothing in a box counts as text


@dataclass
class ReplacedText:
    image: np.ndarray                 # float32 RGB [H, W, 3]
    mask: np.ndarray                  # float32 [H, W]: which pixels changed
    text_mask: np.ndarray | None = None               # coverage of the new letters alone
    colors: list[str] = field(default_factory=list)   # the colour each box's text was drawn in
    notes: list[str] = field(default_factory=list)


def split_texts(text: str, count: int, delimiter: str = "|") -> list[str]:
    """The text for each of ``count`` boxes: "A | B" (``delimiter``) or one line per box, or one text
    for all. A number of parts other than 1 or ``count`` is an error naming both."""
    if not isinstance(text, str) or not text.strip():
        raise TextInputError("text: empty; write the new text (one per box separated by '|' or new lines, or one "
                             "text for every box)")
    stripped = text.strip("\r\n")
    if delimiter and delimiter in stripped:
        parts = [p.strip() for p in stripped.split(delimiter)]
    elif "\n" in stripped and count > 1:
        parts = [p.strip() for p in stripped.splitlines()]
    else:
        parts = [stripped.strip()]
    if any(not p for p in parts):
        raise TextInputError(f"text: one of the parts of {text!r} is empty; give each box some text")
    if len(parts) == 1:
        return parts * count
    if len(parts) != count:
        raise TextInputError(f"text: {len(parts)} texts for {count} boxes; give one text per box (separated by "
                             f"{delimiter!r} or new lines) or a single text for every box")
    return parts


def _hex(rgb: np.ndarray) -> str:
    values = np.clip(np.round(np.asarray(rgb, np.float32) * 255), 0, 255).astype(int)
    return "#{:02x}{:02x}{:02x}".format(*values)


def sample_text_color(image: np.ndarray, box: Box) -> str | None:
    """The dominant colour of the text in ``box`` of ``image`` (float RGB), as '#rrggbb'; None when
    nothing in the box contrasts with its background."""
    height, width = image.shape[:2]
    left, top, right, bottom = box.clamped(width, height).pixel_bounds(width, height)
    patch = np.asarray(image[top:bottom, left:right], np.float32)
    if patch.shape[0] < 3 or patch.shape[1] < 3:
        return None
    ring = max(1, min(patch.shape[:2]) // 10)
    border = np.concatenate([patch[:ring].reshape(-1, 3), patch[-ring:].reshape(-1, 3),
                             patch[:, :ring].reshape(-1, 3), patch[:, -ring:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    pixels = patch.reshape(-1, 3)
    distance = np.linalg.norm(pixels - background, axis=1)
    if distance.max() < MIN_CONTRAST:
        return None
    # Text strokes are the pixels far from the background; anti-aliased edges sit in between, so the
    # farthest quarter of the contrasting pixels gives the ink's own colour.
    contrasting = distance >= max(MIN_CONTRAST, 0.5 * distance.max())
    candidates, weights = pixels[contrasting], distance[contrasting]
    strongest = candidates[weights >= np.quantile(weights, 0.75)]
    # Dominant colour: the most common cell of a coarse 8-level grid, then the median inside it.
    cells = np.clip((strongest * 8).astype(int), 0, 7)
    keys = cells[:, 0] * 64 + cells[:, 1] * 8 + cells[:, 2]
    dominant = np.bincount(keys).argmax()
    return _hex(np.median(strongest[keys == dominant], axis=0))


def replace_text(image: np.ndarray, boxes: Sequence[Box], texts: str | Sequence[str], *, remove: Remover,
                 match_color: bool = True, color: str = AUTO, grow: float = 3.0, font: str | None = None,
                 font_dirs: Sequence = (), padding: float = 0.08, overflow: str = "shrink",
                 **draw_options) -> ReplacedText:
    """Remove the text in ``boxes`` with ``remove`` and draw ``texts`` in them (see the module doc)."""
    rgb = np.asarray(image, np.float32)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise TextInputError(f"image: expected an RGB array [H, W, 3], got {tuple(rgb.shape)}")
    boxes = list(boxes)
    if not boxes:
        raise TextInputError("boxes: no box to replace text in: the old text was found nowhere. Check the grounding "
                             "query (e.g. the words on the sign, or just 'text') or draw the boxes")
    per_box = [texts] * len(boxes) if isinstance(texts, str) else list(texts)
    if len(per_box) == 1:
        per_box = per_box * len(boxes)
    if len(per_box) != len(boxes):
        raise TextInputError(f"texts: {len(per_box)} texts for {len(boxes)} boxes; give one per box or one for all")
    height, width = rgb.shape[:2]
    colors, notes = [], []
    for index, box in enumerate(boxes):
        sampled = sample_text_color(rgb, box) if match_color else None
        if match_color and sampled is None:
            notes.append(f"box {index}: no text colour stood out from the background; used {color!r}")
        colors.append(sampled or color)

    region = mask_ops.boxes_to_mask(boxes, height, width)
    if grow:
        region = mask_ops.grow(region, grow)
    cleared, removed = remove(rgb, region)
    cleared = np.asarray(cleared, np.float32)
    changed = np.asarray(removed, np.float32).copy()

    options = dict(draw_options, padding=padding, overflow=overflow, font_dirs=font_dirs)
    if font:
        options["font"] = font
    canvas, letters = cleared, np.zeros((height, width), np.float32)
    for box, text, colour in zip(boxes, per_box, colors):
        drawn = draw_text(canvas, [box], text, color=colour, **options)
        canvas = drawn.image
        letters = np.maximum(letters, drawn.mask)
    notes.append(f"replaced text in {len(boxes)} box(es): " + ", ".join(
        f"{t!r} in {c}" for t, c in zip(per_box, colors)))
    return ReplacedText(canvas, np.maximum(changed, letters), letters, colors, notes)


# ---- removers ----------------------------------------------------------------------------------------

REMOVAL_METHODS = ("auto", "objectclear", "inpaint")


def removal_function(method: str, *, inpaint_model: str, objectclear_model: str = "ObjectClear", seed: int = 0,
                     steps: int | None = None, resolution: int | None = None, progress=None,
                     notes: list[str] | None = None) -> Remover:
    """A remover for ``replace_text``: ObjectClear ('objectclear', or 'auto' when its weights are on
    disk) or inpainting with an empty-background prompt ('inpaint'); ``resolution``: the model's working
    size (None: its default). ``notes`` collects what ran."""
    if method not in REMOVAL_METHODS:
        raise TextInputError(f"removal: {method!r} is not one of {', '.join(REMOVAL_METHODS)}")
    automatic = method == "auto"
    if automatic:
        from .objectclear import objectclear_available

        method = "objectclear" if objectclear_available(objectclear_model) else "inpaint"
    notes = notes if notes is not None else []

    def with_objectclear(rgb, mask):
        from .objectclear import ObjectClearEngine, ObjectClearMaskError

        try:
            result = ObjectClearEngine(objectclear_model).remove(rgb, mask, steps=steps, seed=seed, mode="crop",
                                                                 resolution=resolution, progress=progress)
        except ObjectClearMaskError as exc:
            if not automatic:
                raise
            notes.append(f"auto: ObjectClear cannot take this mask ({exc}); inpainting instead")
            return with_inpaint(rgb, mask)
        notes.extend(result.notes)
        return result.images[0], result.fused_mask

    def with_inpaint(rgb, mask):
        from .inpaint import InpaintEngine

        result = InpaintEngine(inpaint_model).inpaint(
            rgb, mask, "plain empty surface, the background continues seamlessly, no text",
            "text, letters, words, writing, watermark", steps=steps, strength=1.0, seed=seed, mask_grow=0.0,
            feather=4.0, resolution=resolution, progress=progress)
        notes.extend(result.notes)
        return result.images[0], result.mask_used

    return with_objectclear if method == "objectclear" else with_inpaint


__all__ = ["REMOVAL_METHODS", "ReplacedText", "removal_function", "replace_text", "sample_text_color", "split_texts"]

"""The clothes to replace, found by words: grounding finds them, SAM-2 outlines them.

CatVTON's own masker needs DensePose (detectron2) and SCHP, the builds users cannot install. Here
the try-on mask comes from the pack's "segment by text" pieces instead: ``cloth_type`` ("upper",
"lower", "overall") becomes a phrase the grounding model can find ("the upper-body clothes: shirt,
top, jacket or dress"), or a phrase of the user's own is used as is; each object found is segmented
with SAM-2 from its box and interior point, kept inside the boxes, and the union is grown a little
so the new garment may be cut differently from the old one.

Nothing found (no person, or no such clothes) and a mask covering the whole photo are errors
that say what to do (``ClothMaskError``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from . import mask_ops
from .imaging import ImageInputError, to_rgb_array

log = logging.getLogger(__name__)

CLOTH_TYPES = ("upper", "lower", "overall")
PHRASES = {
    "upper": "the clothes on the person's upper body (shirt, top, jacket, sweater)",
    "lower": "the clothes on the person's lower body (trousers, skirt, shorts)",
    "overall": "all the clothes the person wears (the whole outfit or dress)",
}
GROW_FRACTION = 0.02   # of the photo's shorter side: room for a garment cut wider than the old one


class ClothMaskError(ImageInputError):
    """The clothes could not be found, or the mask found is unusable; the message says what to do."""


@dataclass
class ClothMask:
    mask: np.ndarray        # float32 [H, W], 1 = replace
    phrase: str             # what was looked for
    objects: int            # how many objects grounding found


def phrase_for(cloth_type: str, phrase: str | None = None) -> str:
    """The words to look for: the user's own phrase, else the one for ``cloth_type``."""
    if phrase is not None and not isinstance(phrase, str):
        raise ClothMaskError(f"mask_phrase: expected text, got {type(phrase).__name__}")
    if phrase and phrase.strip():
        return phrase.strip()
    if cloth_type not in PHRASES:
        raise ClothMaskError(f"cloth_type: {cloth_type!r} is not one of {', '.join(CLOTH_TYPES)}; or describe the "
                             "clothes to replace in mask_phrase")
    return PHRASES[cloth_type]


def find_clothes(image, cloth_type: str = "upper", phrase: str | None = None, *, grounder=None, segmenter=None,
                 grounding_model: str | None = None, sam_model: str | None = None, max_pixels: int | None = None,
                 grow: float | None = None, progress=None) -> ClothMask:
    """The mask of the clothes to replace in ``image``. ``grounder``/``segmenter``: engines with
    ``ground(image, query, ...)`` and ``segment(image, objects=...)`` (default: the pack's grounding
    and SAM-2 engines on ``grounding_model`` / ``sam_model``)."""
    rgb = to_rgb_array(image, "image")
    query = phrase_for(cloth_type, phrase)
    if grounder is None:
        from .grounding import GroundingEngine

        grounder = GroundingEngine(grounding_model) if grounding_model else GroundingEngine()
    found = grounder.ground(rgb, query, max_pixels=max_pixels, with_points=True, progress=progress)
    objects = [o for o in found.objects if o.box is not None or o.points]
    if not objects:
        raise ClothMaskError(f"image: no person wearing {query!r} was found ({found.reason}). Use a photo with the "
                             "person clearly visible, describe the clothes in mask_phrase, or connect a mask")
    from .segment import SegmentObject

    if segmenter is None:
        from .segment import SegmentEngine

        segmenter = SegmentEngine(sam_model) if sam_model else SegmentEngine()
    prompts = [SegmentObject(box=o.box, points=o.points, label=o.label or query) for o in objects]
    union = np.asarray(segmenter.segment(rgb, objects=prompts).union, dtype=np.float32)
    if all(o.box is not None for o in objects):
        # Clothes lie inside the boxes grounding drew; SAM-2 can spill onto a background of the
        # same colour, which the try-on would then repaint.
        union = np.minimum(union, mask_ops.boxes_to_mask([o.box for o in objects], *rgb.shape[:2]))
    pixels = GROW_FRACTION * min(rgb.shape[:2]) if grow is None else float(grow)
    if pixels > 0 and (union >= 0.5).any():
        union = mask_ops.grow(union, pixels)
    check_coverage(union, query)
    log.info("cloth mask %r: %d object(s), %.1f%% of the photo", query, len(objects), 100 * (union >= 0.5).mean())
    return ClothMask(union, query, len(objects))


def check_coverage(mask: np.ndarray, query: str) -> None:
    covered = float((np.asarray(mask) >= 0.5).mean())
    if covered == 0.0:
        raise ClothMaskError(f"image: {query!r} was found but its mask is empty (no person or clothes outlined). "
                             "Connect a mask of the clothes, or describe them differently in mask_phrase")
    if covered == 1.0:
        raise ClothMaskError(f"image: the mask of {query!r} covers the whole photo, which leaves the model no "
                             "person to dress. Connect a mask of the clothes, or describe them in mask_phrase")


__all__ = ["CLOTH_TYPES", "ClothMask", "ClothMaskError", "PHRASES", "check_coverage", "find_clothes", "phrase_for"]

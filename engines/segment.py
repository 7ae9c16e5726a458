"""SAM-2 segmentation: boxes and points in, one mask per object (or their union) out.

Two loaders, one engine:

* transformers ``Sam2Model`` + ``Sam2Processor`` (default): the official
  ``facebook/sam2.1-hiera-{tiny,small,base-plus,large}`` repositories (safetensors, Apache-2.0),
  no compiled dependency. See ``engines/sam2_backends.py``.
* the original Meta / ComfyUI-style single files users already keep in ``models/sam2``
  (``sam2.1_hiera_large.pt``, Kijai's ``sam2.1_hiera_large.safetensors``), when the ``sam2`` pip
  package is installed; the config is picked from the file name.

Prompting rules (``segment`` and ``prepare_objects``):

* every box is one object; a list of objects (``SegmentObject`` or dicts such as VisionReasoner's
  ``{"bbox_2d": [...], "point_2d": [x, y]}``) gives boxes and their own points together;
* points given next to a single box belong to it; next to several boxes, a positive point goes to
  the smallest box that contains it and a negative point to every box that contains it (a negative
  point inside none goes to all of them); a positive point inside no box is an error, because it is
  ambiguous (pass objects instead);
* points without any box make one object from all of them.
* ``multimask="auto"`` follows the SAM-2 advice: three candidate masks for a lone point (ambiguous),
  one mask for a box or several points; the candidate with the highest predicted IoU is kept.

Bad input is refused with ``SegmentInputError`` naming the input: a box of zero area, or lying
outside the image; a point outside the image (it is not clamped: a point off the image almost always
means coordinates meant for another size, e.g. a resized copy or a 0..1000 grid, and a clamped point
would silently segment the wrong thing); no prompt at all. Boxes that only partly leave the image
are clipped to it, as detector boxes often do.

Each image is encoded once, and the last image's embedding is kept, so new prompts or refinement
settings on the same pixels skip the encoder; all objects of that image that share a prompt shape
go through the mask decoder in one call. Masks come back at the image's own size, binary (0.0/1.0) unless a
refinement (``Refinement``, applied through ``engines/mask_ops``) feathers them.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np

from . import mask_ops
from .geometry import Box, GeometryInputError, Point
from .imaging import to_rgb_array
from .sam2_backends import FAMILY, build_backend, register_sam2_specs

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sam2.1-hiera-large"
MULTIMASK_MODES = ("auto", "always", "never")

register_sam2_specs()


class SegmentInputError(ValueError):
    """Bad prompt or option for segmentation; the message names the input and what to do."""


# ---- prompts --------------------------------------------------------------------------------

@dataclass(frozen=True)
class SegmentObject:
    """One object to segment: a box, points (positive and negative), or both."""

    box: Box | None = None
    points: tuple[Point, ...] = ()
    label: str | None = None

    @property
    def positive_points(self) -> tuple[Point, ...]:
        return tuple(p for p in self.points if p.positive)

    @classmethod
    def from_value(cls, value, name: str = "object") -> "SegmentObject":
        """A ``SegmentObject``, or a dict: ``{"box": Box | {x, y, width, height} | [x1, y1, x2, y2],
        "points": [...], "negative_points": [...], "label": ...}``, VisionReasoner's
        ``{"bbox_2d": [...], "point_2d": [x, y]}`` or Seg-Zero's ``{"bbox": [...], "points_1": [...],
        "points_2": [...]}``."""
        if isinstance(value, SegmentObject):
            return value
        if not isinstance(value, dict):
            raise SegmentInputError(
                f"{name}: expected an object {{'box': ..., 'points': [...]}}, got {type(value).__name__}")
        try:
            box = _box_from_value(value, name)
            points: list[Point] = []
            for key in ("points", "point_2d", "points_1", "points_2", "point"):
                if key in value and value[key] is not None:
                    points += _points_from_value(value[key], f"{name}.{key}", positive=True)
            if value.get("negative_points") is not None:
                points += _points_from_value(value["negative_points"], f"{name}.negative_points", positive=False)
        except GeometryInputError as exc:
            raise SegmentInputError(str(exc)) from None
        label = value.get("label", box.label if box is not None else None)
        return cls(box=box, points=tuple(points), label=None if label is None else str(label))


def _box_from_value(value: dict, name: str) -> Box | None:
    raw = value.get("box")
    if raw is None:
        return Box.from_dict(value, f"{name}.box") if ("bbox_2d" in value or "bbox" in value) else None
    if isinstance(raw, Box):
        return raw.normalized()
    if isinstance(raw, (list, tuple)):
        return Box.from_dict({"bbox_2d": list(raw)}, f"{name}.box")
    return Box.from_dict(raw, f"{name}.box")


def _points_from_value(value, name: str, positive: bool) -> list[Point]:
    if isinstance(value, Point):
        return [value]
    # A bare [x, y] pair is one point; a list of pairs or dicts is several.
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, numbers.Real) for v in value):
        return [Point.from_value(value, name, positive)]
    if isinstance(value, dict):
        return [Point.from_value(value, name, positive)]
    if not isinstance(value, (list, tuple)):
        raise SegmentInputError(f"{name}: expected points as [x, y], {{'x', 'y'}} or a list of them, got {value!r}")
    return [v if isinstance(v, Point) else Point.from_value(v, f"{name}[{i}]", positive)
            for i, v in enumerate(value)]


def _checked_box(box, name: str, width: int, height: int) -> Box:
    if isinstance(box, dict):
        try:
            box = Box.from_dict(box, name)
        except GeometryInputError as exc:
            raise SegmentInputError(str(exc)) from None
    if not isinstance(box, Box):
        raise SegmentInputError(f"{name}: expected a box, got {type(box).__name__}")
    b = box.normalized()
    if not all(math.isfinite(v) for v in (b.x1, b.y1, b.x2, b.y2)):
        raise SegmentInputError(f"{name}: the box has a non-finite corner ({b.x1}, {b.y1}, {b.x2}, {b.y2})")
    if b.area <= 0:
        raise SegmentInputError(
            f"{name}: the box ({b.x1:g}, {b.y1:g}) to ({b.x2:g}, {b.y2:g}) has zero area "
            f"({b.width:g}x{b.height:g} pixels); give a box with a width and a height, or a point instead")
    clipped = b.clamped(width, height)
    if clipped.area <= 0:
        raise SegmentInputError(
            f"{name}: the box ({b.x1:g}, {b.y1:g}) to ({b.x2:g}, {b.y2:g}) lies outside the "
            f"{width}x{height} image; boxes are pixel coordinates of this image")
    return clipped


def _checked_point(point: Point, name: str, width: int, height: int) -> Point:
    if not (0.0 <= point.x <= width and 0.0 <= point.y <= height):
        raise SegmentInputError(
            f"{name}: the point ({point.x:g}, {point.y:g}) lies outside the {width}x{height} image; points are "
            "pixel coordinates of this image (scale them if they were found on a resized copy)")
    return point


def prepare_objects(width: int, height: int, boxes: Sequence = (), points: Sequence = (),
                    objects: Sequence | None = None) -> list[SegmentObject]:
    """Turn boxes, loose points and explicit objects into checked ``SegmentObject``s (rules in the
    module doc). ``objects`` come first, in order; ``boxes`` and loose ``points`` given beside them add
    objects by the same rules. Boxes are clipped to the image; anything unusable raises
    ``SegmentInputError``."""
    result: list[SegmentObject] = []
    for i, raw in enumerate(objects or ()):
        obj = SegmentObject.from_value(raw, f"objects[{i}]")
        box = None if obj.box is None else _checked_box(obj.box, f"objects[{i}].box", width, height)
        pts = tuple(_checked_point(p, f"objects[{i}].points[{j}]", width, height) for j, p in enumerate(obj.points))
        result.append(_checked_object(replace(obj, box=box, points=pts), f"objects[{i}]"))

    checked_boxes = [_checked_box(b, f"boxes[{i}]", width, height) for i, b in enumerate(boxes or ())]
    loose: list[Point] = []
    for i, p in enumerate(points or ()):
        if not isinstance(p, Point):
            try:
                p = Point.from_value(p, f"points[{i}]")
            except GeometryInputError as exc:
                raise SegmentInputError(str(exc)) from None
        loose.append(_checked_point(p, f"points[{i}]", width, height))

    if checked_boxes:
        result += _assign_points(checked_boxes, loose)
    elif loose:
        result.append(_checked_object(SegmentObject(points=tuple(loose)), "points"))
    if not result:
        raise SegmentInputError(
            "segment: no prompt; give at least one box or one point (or objects with a box and/or points)")
    return result


def _checked_object(obj: SegmentObject, name: str) -> SegmentObject:
    if obj.box is None and not obj.positive_points:
        raise SegmentInputError(
            f"{name}: needs a box or at least one positive point; negative points alone do not say what to segment")
    return obj


def _contains(box: Box, p: Point) -> bool:
    return box.x1 <= p.x <= box.x2 and box.y1 <= p.y <= box.y2


def _assign_points(boxes: list[Box], points: list[Point]) -> list[SegmentObject]:
    per_box: list[list[Point]] = [[] for _ in boxes]
    for i, p in enumerate(points):
        if len(boxes) == 1:
            per_box[0].append(p)
            continue
        inside = [k for k, b in enumerate(boxes) if _contains(b, p)]
        if p.positive:
            if not inside:
                raise SegmentInputError(
                    f"points[{i}]: the positive point ({p.x:g}, {p.y:g}) lies in none of the {len(boxes)} boxes, so "
                    "it belongs to no object; move it inside its object's box, or pass objects "
                    "[{'box': ..., 'points': [...]}] to say which point goes with which box")
            per_box[min(inside, key=lambda k: boxes[k].area)].append(p)
        else:
            for k in inside or range(len(boxes)):
                per_box[k].append(p)
    return [SegmentObject(box=b, points=tuple(pts), label=b.label) for b, pts in zip(boxes, per_box)]


def wants_multimask(obj: SegmentObject, mode: str) -> bool:
    """Whether ``obj`` is decoded into three candidates (the best is kept) or one mask."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    # SAM-2's advice: a single click is ambiguous (part, object or group), so ask for three masks;
    # a box or several points pin the object down and one mask is better.
    return obj.box is None and len(obj.points) == 1


def _multimask_mode(value) -> str:
    if value is True:
        return "always"
    if value is False:
        return "never"
    if value in MULTIMASK_MODES:
        return value
    raise SegmentInputError(f"multimask: use one of {list(MULTIMASK_MODES)} (or True/False), got {value!r}")


# ---- refinement and result -----------------------------------------------------------------------

@dataclass(frozen=True)
class Refinement:
    """Clean-up applied to every predicted mask, in ``mask_ops.refine``'s order: remove islands,
    close, fill holes, grow (negative: shrink), feather. Each step is off at its neutral value."""

    remove_islands_below: int = 0
    close_radius: float = 0.0
    fill_holes: bool = False
    grow_pixels: float = 0.0
    feather_radius: float = 0.0

    @property
    def is_noop(self) -> bool:
        return self == Refinement()

    def apply(self, mask: np.ndarray) -> np.ndarray:
        return mask_ops.refine(mask, grow_pixels=self.grow_pixels, fill=self.fill_holes,
                               remove_islands_below=self.remove_islands_below,
                               close_radius=self.close_radius, feather_radius=self.feather_radius)


@dataclass
class SegmentResult:
    """``masks``: float32 [H, W] in 0..1, one per object (``per_object=True``) or just the union;
    ``scores``: SAM-2's predicted IoU for each mask (the mean over objects for a union);
    ``union``: every object's mask OR-ed (pixel-wise max); ``objects``: the prompts, one per object."""

    masks: list[np.ndarray]
    scores: list[float]
    union: np.ndarray
    objects: list[SegmentObject] = field(default_factory=list)

    def stacked(self) -> np.ndarray:
        """The masks as one float32 array ``[N, H, W]``."""
        return np.stack(self.masks).astype(np.float32)


# ---- the engine --------------------------------------------------------------------------------

def _rgb_pixels(image) -> np.ndarray:
    """``image`` as float32 RGB 0..1: ``imaging.to_rgb_array``, which shares (read-only) a float32
    image already in 0..1 instead of copying it, so the engine never writes to the caller's pixels."""
    return to_rgb_array(image, "image")


def _pixels_and_check(image) -> tuple[np.ndarray, Callable[[], np.ndarray] | None]:
    """The pixels to look up in the backend's embedding cache, and how to check them.

    A float32 RGB array (ComfyUI's frames) goes in unchecked, as a read-only view, with
    ``_rgb_pixels`` as its check: the backend runs the check only when it has to encode the image.
    An image equal to the cached one, bit for bit, was checked when it was cached, so a repeated
    call skips the pass over the pixels (0.3-0.7 ms at 1024x1024, on the host before the decoder
    can start). Anything else is converted now and needs no further check."""
    if isinstance(image, np.ndarray) and image.dtype == np.float32 and image.ndim == 3 and image.shape[-1] == 3 \
            and image.shape[0] and image.shape[1]:
        view = image.view()
        view.flags.writeable = False
        return view, lambda: _rgb_pixels(image)
    return _rgb_pixels(image), None


def segment_with(backend, image, boxes: Sequence = (), points: Sequence = (), *, objects: Sequence | None = None,
                 multimask="auto", per_object: bool = True, refine: Refinement | None = None,
                 mask_threshold: float = 0.0) -> SegmentResult:
    """Segment ``image`` with an already loaded backend (see ``SegmentEngine.segment``)."""
    rgb, check = _pixels_and_check(image)
    height, width = rgb.shape[:2]
    mode = _multimask_mode(multimask)
    if refine is not None and not isinstance(refine, Refinement):
        raise SegmentInputError(f"refine: expected a Refinement, got {type(refine).__name__}")
    try:
        mask_threshold = float(mask_threshold)
    except (TypeError, ValueError):
        raise SegmentInputError(
            f"mask_threshold: expected a number (a logit, 0 by default), got {mask_threshold!r}") from None
    objs = prepare_objects(width, height, boxes, points, objects)
    log.debug("segmenting %d object(s) on a %dx%d image", len(objs), width, height)

    predicted = backend.predict(rgb, objs, [wants_multimask(o, mode) for o in objs], mask_threshold, check=check)
    masks = [np.asarray(m, dtype=np.float32) for m, _ in predicted]   # the transformers backend gives float32
    scores = [float(s) for _, s in predicted]
    if refine is not None and not refine.is_noop:
        masks = [refine.apply(m) for m in masks]
    # One object: its mask is the union, shared rather than copied (4 MB at 1024x1024); read-only, so
    # neither can change the other behind the caller's back.
    union = np.maximum.reduce(masks) if len(masks) > 1 else masks[0]
    if len(masks) == 1:
        union.flags.writeable = False
    if not per_object:
        return SegmentResult(masks=[union], scores=[float(np.mean(scores))], union=union, objects=objs)
    return SegmentResult(masks=masks, scores=scores, union=union, objects=objs)


class SegmentEngine:
    """SAM-2 through the model store.

    ``model`` is a model choice: a registered key (``"sam2.1-hiera-large"``), a name in the
    ``sam2`` model folder (a transformers folder or a Meta/ComfyUI ``.pt``/``.safetensors`` file), a
    local path, or a Hugging Face repo id.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device=None, dtype=None):
        from ..models import acquire

        self.model = model
        self._handle = acquire(model, FAMILY, build_backend, dtype=dtype, device=device)

    def segment(self, image, boxes: Sequence = (), points: Sequence = (), *, objects: Sequence | None = None,
                multimask="auto", per_object: bool = True, refine: Refinement | None = None,
                mask_threshold: float = 0.0) -> SegmentResult:
        """Masks for the prompted objects of one image.

        image: RGB float [H, W, 3] 0..1 (or anything ``imaging.to_rgb_array`` takes: grey, RGBA,
        uint8, PIL). boxes: ``Box`` or core BOUNDING_BOX dicts, one object each. points: ``Point``
        (``positive=False`` for "not this") or ``{"x", "y"}``. objects: per-object prompts (see
        ``SegmentObject.from_value``). multimask: "auto" | "always" | "never". per_object: one mask
        per object, or only their union. refine: clean-up applied to each mask. mask_threshold: the
        logit above which a pixel is in the mask.
        """
        with self._handle.use() as backend:
            return segment_with(backend, image, boxes, points, objects=objects, multimask=multimask,
                                per_object=per_object, refine=refine, mask_threshold=mask_threshold)


def segment(image, boxes: Sequence = (), points: Sequence = (), *, model: str = DEFAULT_MODEL,
            device=None, dtype=None, **options: Any) -> SegmentResult:
    """One-call form: ``SegmentEngine(model, device, dtype).segment(image, boxes, points, **options)``
    (the store loads the model once and keeps it)."""
    return SegmentEngine(model, device=device, dtype=dtype).segment(image, boxes, points, **options)


__all__ = [
    "DEFAULT_MODEL", "MULTIMASK_MODES", "Refinement", "SegmentEngine", "SegmentInputError", "SegmentObject",
    "SegmentResult", "prepare_objects", "segment", "segment_with", "wants_multimask",
]

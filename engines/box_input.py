"""Boxes and points typed by hand: numbers or JSON in, core's BOUNDING_BOX and SAM3 point values out.

Accepted box JSON (pixels), anything ``geometry.boxes_per_image`` reads plus bare corner lists:

- ``{"x": 10, "y": 20, "width": 100, "height": 50, "label": "sign"}``  (core's BOUNDING_BOX)
- ``{"x1": 10, "y1": 20, "x2": 110, "y2": 70}`` or ``{"bbox_2d": [10, 20, 110, 70]}`` (Qwen2.5-VL)
- ``[10, 20, 110, 70]``  (corners x1, y1, x2, y2)
- a list of any of these (boxes for every image), or a list of such lists (one list per image).

Points: ``[{"x": 5, "y": 9}, ...]`` or ``[[5, 9], ...]``.
"""

from __future__ import annotations

from dataclasses import replace
from numbers import Real

from .geometry import Box, GeometryInputError, Point, boxes_per_image, parse_json, points_from_value


def _is_corner_list(value) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == 4
            and all(isinstance(v, Real) and not isinstance(v, bool) for v in value))


def _corner_lists_to_dicts(value):
    """Bare ``[x1, y1, x2, y2]`` lists -> ``{"x1", ...}`` dicts, at any nesting depth."""
    if _is_corner_list(value):
        return dict(zip(("x1", "y1", "x2", "y2"), value))
    if isinstance(value, (list, tuple)):
        return [_corner_lists_to_dicts(v) for v in value]
    return value


def parse_boxes(text: str, name: str = "boxes_json") -> list[list[Box]]:
    """Box JSON (see the module doc) -> one list of boxes per image; a flat list is one list."""
    value = _corner_lists_to_dicts(parse_json(text, name))
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        frames = boxes_per_image(value, len(value), name)
    else:
        frames = boxes_per_image(value, 1, name)
    for f, frame in enumerate(frames):
        for i, box in enumerate(frame):
            if box.width <= 0 or box.height <= 0:
                raise GeometryInputError(
                    f"{name}: box {i}{f' of image {f}' if len(frames) > 1 else ''} has no area "
                    f"(width {box.width:g}, height {box.height:g}); give it a positive width and height")
    return frames


def make_boxes(boxes_json: str = "", x: float = 0, y: float = 0, width: float = 0, height: float = 0,
               label: str = "") -> list[list[Box]]:
    """Boxes from JSON when ``boxes_json`` is not blank, else the one box ``x, y, width, height``.

    ``label`` is given to every box that has none. The result has one list of boxes per image
    (a single list when the JSON did not say per image), which core's nodes and
    ``boxes_per_image`` repeat over a batch.
    """
    label = (label or "").strip() or None
    if boxes_json and boxes_json.strip():
        frames = parse_boxes(boxes_json)
    else:
        if width <= 0 or height <= 0:
            raise GeometryInputError(
                f"width and height must be above 0 (got {width:g} x {height:g}), or give boxes_json")
        frames = [[Box(float(x), float(y), float(x) + float(width), float(y) + float(height))]]
    return [[box if box.label is not None else replace(box, label=label) for box in frame] for frame in frames]


def make_points(points_json: str, name: str, positive: bool = True) -> list[Point]:
    """Point JSON -> ``Point`` list (empty for blank text)."""
    if not points_json or not points_json.strip():
        return []
    return points_from_value(points_json, name, positive)

"""Boxes and points, in the conventions ComfyUI core speaks.

A box on the wire is core's ``BOUNDING_BOX`` dict: ``{"x", "y", "width", "height"}`` in pixels,
optionally with ``"label"`` and ``"score"`` (RT-DETR and SAM3 add those). A node output holds one
list of boxes per image. Points follow core's SAM3 convention: pixel ``{"x", "y"}`` dicts.

Inside engines a box is a ``Box`` (corner form, floats, so that coordinate mapping does not round
twice); conversions to and from the wire form live here and nowhere else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Iterable


class GeometryInputError(ValueError):
    """Bad box or point input; the message names the input and what to do."""


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float
    label: str | None = None
    score: float | None = None

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def normalized(self) -> "Box":
        """Corners in order (x1 <= x2, y1 <= y2), whichever way they were given."""
        return replace(self, x1=min(self.x1, self.x2), x2=max(self.x1, self.x2),
                       y1=min(self.y1, self.y2), y2=max(self.y1, self.y2))

    def clamped(self, width: int, height: int) -> "Box":
        """Clipped to an image of ``width`` x ``height`` pixels."""
        b = self.normalized()
        return replace(b, x1=min(max(b.x1, 0.0), width), x2=min(max(b.x2, 0.0), width),
                       y1=min(max(b.y1, 0.0), height), y2=min(max(b.y2, 0.0), height))

    def pixel_bounds(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer ``(left, top, right, bottom)`` (right/bottom exclusive) inside the image; the
        box covers every pixel it touches."""
        import math

        b = self.clamped(width, height)
        return (int(math.floor(b.x1)), int(math.floor(b.y1)),
                int(math.ceil(b.x2)), int(math.ceil(b.y2)))

    def to_dict(self) -> dict[str, Any]:
        """Core's BOUNDING_BOX dict (pixels; integers when the box is on whole pixels)."""
        b = self.normalized()
        d: dict[str, Any] = {"x": _num(b.x1), "y": _num(b.y1), "width": _num(b.width), "height": _num(b.height)}
        if b.label is not None:
            d["label"] = b.label
        if b.score is not None:
            d["score"] = float(b.score)
        return d

    @classmethod
    def from_dict(cls, d: dict, name: str = "box") -> "Box":
        if not isinstance(d, dict):
            raise GeometryInputError(f"{name}: expected a dict with x, y, width, height; got {type(d).__name__}")
        if all(k in d for k in ("x", "y", "width", "height")):
            x, y, w, h = (_float(d[k], f"{name}.{k}") for k in ("x", "y", "width", "height"))
            box = cls(x, y, x + w, y + h)
        elif all(k in d for k in ("x1", "y1", "x2", "y2")):
            box = cls(*(_float(d[k], f"{name}.{k}") for k in ("x1", "y1", "x2", "y2")))
        elif "bbox_2d" in d or "bbox" in d:
            coords = d.get("bbox_2d", d.get("bbox"))
            if not isinstance(coords, (list, tuple)) or len(coords) != 4:
                raise GeometryInputError(f"{name}: 'bbox_2d' must be [x1, y1, x2, y2], got {coords!r}")
            box = cls(*(_float(v, f"{name}.bbox_2d") for v in coords))
        else:
            raise GeometryInputError(
                f"{name}: a box needs x, y, width, height (or x1, y1, x2, y2); got keys {sorted(d)}")
        label = d.get("label", d.get("metadata", {}).get("label") if isinstance(d.get("metadata"), dict) else None)
        score = d.get("score")
        return replace(box.normalized(), label=None if label is None else str(label),
                       score=None if score is None else _float(score, f"{name}.score"))


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    positive: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"x": _num(self.x), "y": _num(self.y)}

    @classmethod
    def from_value(cls, value, name: str = "point", positive: bool = True) -> "Point":
        if isinstance(value, dict) and "x" in value and "y" in value:
            return cls(_float(value["x"], f"{name}.x"), _float(value["y"], f"{name}.y"), positive)
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return cls(_float(value[0], f"{name}[0]"), _float(value[1], f"{name}[1]"), positive)
        raise GeometryInputError(f"{name}: a point is {{\"x\": .., \"y\": ..}} or [x, y]; got {value!r}")


def _float(value, name: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise GeometryInputError(f"{name}: expected a number, got {value!r}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise GeometryInputError(f"{name}: expected a finite number, got {value!r}")
    return out


def _num(v: float):
    return int(v) if float(v).is_integer() else round(float(v), 3)


# ---- batches on the wire -------------------------------------------------------------------

def boxes_per_image(value, count: int, name: str = "boxes") -> list[list[Box]]:
    """Core BOUNDING_BOX value(s) -> one list of ``Box`` per image, for ``count`` images.

    Accepts what core's nodes accept: a single dict (every image), a list of dicts (every image),
    or a list of lists (one per image; a shorter list repeats its last entry, as SAM3 does).
    """
    if value is None:
        return [[] for _ in range(count)]
    if isinstance(value, str):
        value = parse_json(value, name)
    if isinstance(value, dict):
        return [[Box.from_dict(value, name)] for _ in range(count)]
    if not isinstance(value, (list, tuple)):
        raise GeometryInputError(f"{name}: expected a box, a list of boxes or a list per image; got {type(value).__name__}")
    if not value:
        return [[] for _ in range(count)]
    if all(isinstance(v, (list, tuple)) and (not v or isinstance(v[0], dict)) for v in value):
        frames = [[Box.from_dict(d, f"{name}[{i}][{j}]") for j, d in enumerate(frame)]
                  for i, frame in enumerate(value)]
        while len(frames) < count:
            frames.append(frames[-1])
        return frames[:count] if count else frames
    shared = [Box.from_dict(d, f"{name}[{j}]") for j, d in enumerate(value)]
    return [list(shared) for _ in range(count)]


def boxes_to_wire(per_image: Iterable[Iterable[Box]]) -> list[list[dict]]:
    return [[b.to_dict() for b in frame] for frame in per_image]


def points_from_value(value, name: str = "points", positive: bool = True) -> list[Point]:
    """Core's SAM3 point convention (JSON string or list of ``{x, y}``) -> ``Point`` list."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        value = parse_json(value, name)
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise GeometryInputError(f"{name}: expected a list of {{\"x\": .., \"y\": ..}} points; got {type(value).__name__}")
    return [Point.from_value(v, f"{name}[{i}]", positive) for i, v in enumerate(value)]


def points_to_wire(points: Iterable[Point]) -> str:
    return json.dumps([p.to_dict() for p in points])


def parse_json(text: str, name: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GeometryInputError(f"{name}: not valid JSON ({exc.msg} at character {exc.pos})") from None

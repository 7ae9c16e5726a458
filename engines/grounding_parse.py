"""Grounding model output -> boxes and points on the original image. Pure: no model, no torch.

Two output conventions are read:

* **Qwen2.5-VL**: a JSON list (usually in a ```json fence) of ``{"bbox_2d": [x1, y1, x2, y2],
  "label": ..}`` and/or ``{"point_2d": [x, y], "label": ..}``, in absolute pixels of the model's
  *resized* input (``smart_resize``: sides multiples of 28). The cookbook's XML point form
  ``<points x1=".." y1=".." alt="..">phrase</points>`` and ``<ref>..</ref><box>(x1,y1),(x2,y2)</box>``
  are read too, in the same frame.
* **VisionReasoner / Seg-Zero**: ``<think>..</think><answer>[..]</answer>`` with ``bbox_2d`` +
  ``point_2d`` per object (VisionReasoner) or one ``{"bbox", "points_1", "points_2"}`` (Seg-Zero),
  on an 840x840 squash of the image (aspect not kept).

Both come back to the original image as ``x * W / W_in``, ``y * H / H_in``; only the model frame
``(W_in, H_in)`` differs, and the engine knows it (``image_grid_thw`` for Qwen, 840x840 for
VisionReasoner). Models write imperfect JSON, so the reader repairs what it safely can (fences,
prose around the list, truncation, single quotes, trailing commas, reversed corners, coordinates
outside the image, duplicates) and otherwise returns an empty result that says why: it never raises
on model text.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .geometry import Box, Point

QWEN_FACTOR = 28                 # patch 14 x spatial merge 2: the resized input's sides are multiples of it
QWEN_MIN_PIXELS = 4 * 28 * 28    # qwen-vl-utils' defaults
QWEN_MAX_PIXELS = 16384 * 28 * 28
VISION_REASONER_SIZE = 840       # VisionReasoner and Seg-Zero squash every image to 840x840
DUPLICATE_IOU = 0.95

_BOX_KEYS = ("bbox_2d", "bbox", "box_2d", "box")
_LABEL_KEYS = ("label", "name", "category", "phrase", "object")
_LIST_KEYS = ("objects", "results", "answer", "detections")
_NO_MATCH = re.compile(r"\b(none|no|not|nothing|cannot|can't|unable|absent|n/a|doesn't|does not)\b", re.I)


def smart_resize(height: int, width: int, factor: int = QWEN_FACTOR, min_pixels: int = QWEN_MIN_PIXELS,
                 max_pixels: int = QWEN_MAX_PIXELS) -> tuple[int, int]:
    """The (height, width) Qwen2.5-VL's processor resizes an image to (same rule as qwen-vl-utils
    and transformers' ``Qwen2VLImageProcessor``): each side rounded to the nearest multiple of
    ``factor`` (Python's round: halves go to even), then, if the area is above ``max_pixels``, both
    sides scaled down by the square root of the excess and floored to the factor, or, if below
    ``min_pixels``, scaled up and ceiled."""
    if min(height, width) <= 0:
        raise ValueError(f"smart_resize: the image must have positive sides, got {width}x{height}")
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"smart_resize: aspect ratio {max(height, width) / min(height, width):.0f} is above 200, "
                         "which Qwen2.5-VL does not accept; crop the image first")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def input_size_from_grid(image_grid_thw, patch_size: int = 14) -> tuple[int, int]:
    """``(W_in, H_in)`` of the model input from the processor's ``image_grid_thw`` (``[[t, h, w]]``
    in patches; a tensor, array or list), i.e. the frame Qwen2.5-VL's coordinates are in."""
    grid = image_grid_thw.tolist() if hasattr(image_grid_thw, "tolist") else list(image_grid_thw)
    row = grid[0] if grid and isinstance(grid[0], (list, tuple)) else grid
    if len(row) != 3:
        raise ValueError(f"image_grid_thw: expected [t, h, w] per image, got {grid!r}")
    return int(row[2]) * patch_size, int(row[1]) * patch_size


@dataclass(frozen=True)
class GroundedObject:
    """One object the model pointed at: its box (None for a point-only answer), the interior
    points it gave (VisionReasoner: one, Seg-Zero: two) and its label. Original-image pixels."""

    box: Box | None
    points: tuple[Point, ...] = ()
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "box": None if self.box is None else self.box.to_dict(),
                "points": [p.to_dict() for p in self.points]}


@dataclass(frozen=True)
class GroundingResult:
    """What a grounding call found, in original-image pixels.

    ``found`` is False for an honest "no such object" as well as for unreadable output; ``reason``
    says which (and, when found, what had to be repaired). ``thinking`` is the ``<think>`` text.
    """

    objects: tuple[GroundedObject, ...]
    raw_text: str
    thinking: str
    found: bool
    reason: str
    image_size: tuple[int, int] = (0, 0)   # (W, H) of the original image
    input_size: tuple[int, int] = (0, 0)   # (W_in, H_in): the frame the model's numbers were in
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def boxes(self) -> list[Box]:
        return [o.box for o in self.objects if o.box is not None]

    @property
    def points(self) -> list[Point]:
        return [p for o in self.objects for p in o.points]

    @property
    def labels(self) -> list[str | None]:
        return [o.label for o in self.objects]

    def to_dict(self) -> dict[str, Any]:
        return {"found": self.found, "reason": self.reason, "thinking": self.thinking,
                "objects": [o.to_dict() for o in self.objects], "image_size": list(self.image_size),
                "input_size": list(self.input_size), "raw_text": self.raw_text}


def parse_grounding(text: str | None, image_size: tuple[int, int], input_size: tuple[int, int],
                    duplicate_iou: float = DUPLICATE_IOU) -> GroundingResult:
    """Read a grounding answer in model-frame pixels ``input_size = (W_in, H_in)`` and map it onto
    an image of ``image_size = (W, H)``. Never raises on the text itself."""
    width, height = (int(v) for v in image_size)
    in_w, in_h = (int(v) for v in input_size)
    if min(width, height, in_w, in_h) <= 0:
        raise ValueError(f"parse_grounding: sizes must be positive, got image {image_size} and model input {input_size}")
    raw = text or ""
    thinking, body = split_thinking(raw)

    def empty(reason: str, notes=()) -> GroundingResult:
        return GroundingResult((), raw, thinking, False, reason, (width, height), (in_w, in_h), tuple(notes))

    if not raw.strip():
        return empty("the model returned no text")
    if not body:
        return empty("the model wrote no answer after its reasoning (the output may have been cut off; "
                     "raise max_new_tokens)")
    items, notes, error = extract_items(body)
    if error:
        return empty(error, notes)
    if items is None:
        if _NO_MATCH.search(body):
            return empty(f"the model found no matching object: {_snippet(body)}")
        return empty(f"the model output holds no boxes or points: {_snippet(body)}")
    if not items:
        return empty("the model found no matching object (it returned an empty list)", notes)

    sx, sy = width / in_w, height / in_h
    objects: list[GroundedObject] = []
    for index, item in enumerate(items):
        obj, problem = _item_to_object(item, sx, sy, width, height)
        if problem:
            notes.append(f"item {index + 1}: {problem}")
        if obj is None:
            continue
        if any(_same_object(obj, kept, duplicate_iou) for kept in objects):
            notes.append(f"item {index + 1}: duplicate of an earlier object, dropped")
            continue
        objects.append(obj)
    if not objects:
        return empty(f"the model output held {len(items)} item(s) but none with usable coordinates ("
                     + "; ".join(notes) + ")", notes)
    reason = f"found {len(objects)} object(s)" + (f" ({'; '.join(notes)})" if notes else "")
    return GroundingResult(tuple(objects), raw, thinking, True, reason, (width, height), (in_w, in_h), tuple(notes))


# ---- text -> items -----------------------------------------------------------------------------

def split_thinking(text: str) -> tuple[str, str]:
    """``(thinking, answer body)``: the ``<think>`` text, and the ``<answer>`` text when tagged
    (an unclosed tag runs to the end), else everything outside the ``<think>`` block."""
    think = re.search(r"<think>(.*?)(?:</think>|(?=<answer>)|$)", text, re.S)
    thinking = think.group(1).strip() if think else ""
    answer = re.search(r"<answer>(.*?)(?:</answer>|$)", text, re.S)
    if answer:
        return thinking, answer.group(1).strip()
    if think:
        text = text[:think.start()] + text[think.end():]
    return thinking, text.strip()


def extract_items(body: str) -> tuple[list | None, list[str], str | None]:
    """The answer's list of items: ``(items or None when the text holds no structure, repair
    notes, error when a structure was there but could not be read)``."""
    notes: list[str] = []
    fenced = re.findall(r"```[A-Za-z]*[ \t]*\n?(.*?)(?:```|$)", body, re.S)
    candidates = [f for f in fenced if re.search(r"[\[{<]", f)]
    if fenced and not candidates:
        candidates = fenced
    text = candidates[0] if candidates else body

    xml_items = _xml_points(text) + _ref_boxes(text)
    if xml_items:
        return xml_items, notes, None
    start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=-1)
    if start < 0:
        return None, notes, None
    value, repair = _load_prefix(text[start:])
    if repair == "cut off":
        return None, notes, ("the output was cut off before its first complete object (raise max_new_tokens): "
                             + _snippet(text[start:]))
    if repair == "failed":
        return None, notes, f"could not read the model output as JSON: {_snippet(text[start:])}"
    if repair:
        notes.append(repair)
    return _as_items(value), notes, None


def _as_items(value) -> list:
    if isinstance(value, dict):
        for key in _LIST_KEYS:
            if isinstance(value.get(key), list):
                return value[key]
        return [value]
    if isinstance(value, list):
        # A bare box or point ([x1, y1, x2, y2]) rather than a list of them.
        return [value] if value and all(_is_number(v) for v in value) else value
    return []


def _load_prefix(text: str) -> tuple[Any, str | None]:
    """The JSON value at the start of ``text`` (prose after it ignored), repairing single quotes,
    trailing commas and truncation: ``(value, repair note or None)`` or ``(None, "cut off"|"failed")``."""
    try:
        return json.JSONDecoder().raw_decode(text)[0], None
    except json.JSONDecodeError:
        pass
    end, cut = _scan(text)
    if end == -1:
        return None, "failed"
    if end is not None:
        value = _loose_literal(text[:end])
        return (value, "read as a Python literal") if value is not None else (None, "failed")
    if cut is None:
        return None, "cut off"
    position, closers = cut
    repaired = text[:position] + closers
    for loader in (json.loads, _loose_literal):
        try:
            value = loader(repaired)
        except (json.JSONDecodeError, ValueError):
            continue
        if value is not None:
            return value, "the output was cut off; kept the complete objects"
    return None, "failed"


def _scan(text: str) -> tuple[int | None, tuple[int, str] | None]:
    """Bracket scan honouring both quote styles: ``(end of the balanced value, -1 if brackets
    mismatch, or None; (cut position, closing brackets) after the last complete object)``."""
    pairs = {"[": "]", "{": "}"}
    stack: list[str] = []
    quote = None
    escaped = False
    last_object = last_list = None
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in pairs:
            stack.append(pairs[ch])
        elif ch in "]}":
            if not stack or stack[-1] != ch:
                return -1, None  # mismatched brackets: not JSON at all
            stack.pop()
            if not stack:
                return i + 1, None
            closers = "".join(reversed(stack))
            if ch == "}":
                last_object = (i + 1, closers)
            else:
                last_list = (i + 1, closers)
    # Keep whole objects only; inside a single top-level object (Seg-Zero's answer) keep its
    # finished fields, since there is no list of objects to cut back to.
    return None, last_object or (last_list if text.lstrip().startswith("{") else None)


def _loose_literal(text: str):
    """Python-literal reading for single quotes and trailing commas (``ast.literal_eval`` only
    builds constants, so this runs no code)."""
    try:
        return ast.literal_eval(re.sub(r"\btrue\b|\bfalse\b|\bnull\b",
                                       lambda m: {"true": "True", "false": "False", "null": "None"}[m.group()], text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _xml_points(text: str) -> list[dict]:
    """``<points x1="..." y1="..." x2=.. y2=.. alt="...">phrase</points>`` (also ``x``/``y``)."""
    items = []
    for match in re.finditer(r"<points?\b([^>]*)>(.*?)(?:</points?>|$)", text, re.S):
        attrs = {key: a or b or c for key, a, b, c in
                 re.findall(r"""(\w+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""", match.group(1))}
        points = []
        if "x" in attrs and "y" in attrs:
            points.append([attrs["x"], attrs["y"]])
        index = 1
        while f"x{index}" in attrs and f"y{index}" in attrs:
            points.append([attrs[f"x{index}"], attrs[f"y{index}"]])
            index += 1
        phrase = match.group(2).strip() or None
        items.append({"points": points, "label": phrase or attrs.get("alt")})
    return items


def _ref_boxes(text: str) -> list[dict]:
    """``<ref>label</ref><box>(x1,y1),(x2,y2)</box>`` and the ``<|object_ref_start|>`` token form."""
    number = r"\s*(-?\d+(?:\.\d+)?)\s*"
    pattern = (r"(?:(?:<ref>|<\|object_ref_start\|>)(.*?)(?:</ref>|<\|object_ref_end\|>)\s*)?"
               r"(?:<box>|<\|box_start\|>)\s*\(?" + number + "," + number + r"\)?\s*,\s*\(?" + number + ","
               + number + r"\)?\s*(?:</box>|<\|box_end\|>)")
    return [{"bbox_2d": [m.group(2), m.group(3), m.group(4), m.group(5)], "label": (m.group(1) or "").strip() or None}
            for m in re.finditer(pattern, text, re.S)]


# ---- items -> objects --------------------------------------------------------------------------

def _item_to_object(item, sx: float, sy: float, width: int, height: int) -> tuple[GroundedObject | None, str | None]:
    if isinstance(item, (list, tuple)):
        if len(item) == 4 and all(_is_number(v) for v in item):
            item = {"bbox_2d": list(item)}
        elif len(item) == 2 and all(_is_number(v) for v in item):
            item = {"point_2d": list(item)}
        else:
            return None, f"not an object: {_snippet(str(item))}"
    if not isinstance(item, dict):
        return None, f"not an object: {_snippet(str(item))}"
    label = next((str(item[k]).strip() for k in _LABEL_KEYS if isinstance(item.get(k), (str, int, float))
                  and str(item[k]).strip()), None)
    problems = []
    box = None
    box_key = next((k for k in _BOX_KEYS if k in item), None)
    if box_key is not None:
        coords = _numbers(item[box_key], 4)
        if coords is None:
            problems.append(f"'{box_key}' is not four numbers")
        else:
            mapped = Box(coords[0] * sx, coords[1] * sy, coords[2] * sx, coords[3] * sy, label=label)
            box = mapped.clamped(width, height)
            if box.width <= 0 or box.height <= 0:
                problems.append("box empty or outside the image, dropped")
                box = None
            elif box != mapped.normalized():
                problems.append("box clipped to the image")
    points = []
    for key in (k for k in item if str(k).lower().startswith("point")):
        pairs = _point_list(item[key])
        if pairs is None:
            problems.append(f"'{key}' is not [x, y] or a list of them")
            continue
        for x, y in pairs:
            points.append(Point(min(max(x * sx, 0.0), width - 1.0), min(max(y * sy, 0.0), height - 1.0)))
    problem = "; ".join(problems) or None
    if box is None and not points:
        return None, problem or "no box or point"
    return GroundedObject(box, tuple(points), label), problem


def _point_list(value) -> list[tuple[float, float]] | None:
    pair = _numbers(value, 2)
    if pair is not None:
        return [tuple(pair)]
    if isinstance(value, (list, tuple)) and value:
        pairs = [_numbers(v, 2) for v in value]
        if all(p is not None for p in pairs):
            return [tuple(p) for p in pairs]
    return None


def _numbers(value, count: int) -> list[float] | None:
    # Tolerate one level of extra nesting ([[x1, y1, x2, y2]]) and numbers written as strings.
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple)):
        value = value[0]
    if not isinstance(value, (list, tuple)) or len(value) != count or not all(_is_number(v) for v in value):
        return None
    return [float(v) for v in value]


def _is_number(value) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _same_object(a: GroundedObject, b: GroundedObject, iou_threshold: float) -> bool:
    if a.label != b.label:
        return False
    if a.box is not None and b.box is not None:
        return _iou(a.box, b.box) > iou_threshold
    if a.box is None and b.box is None and len(a.points) == len(b.points):
        return all(abs(p.x - q.x) <= 1 and abs(p.y - q.y) <= 1 for p, q in zip(a.points, b.points))
    return False


def _iou(a: Box, b: Box) -> float:
    inter = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1)) * max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def _snippet(text: str, limit: int = 160) -> str:
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")

"""SAM-2 nodes: Segment (boxes/points -> masks) and Segment by Text (grounding -> SAM-2)."""

from __future__ import annotations

import numpy as np
from comfy_api.latest import io

from ..catalogue.segment import SEGMENT, SEGMENT_BY_TEXT
from ..engines.geometry import Box, boxes_per_image, boxes_to_wire, points_from_value
from ..engines.grounding import GroundingEngine
from ..engines.segment import Refinement, SegmentEngine, SegmentObject
from .convert import arrays_to_mask_batch, image_batch_to_arrays
from .grounding import NothingFoundError
from .progress import BatchProgress
from .schema import tool_schema


def _refinement(grow, fill_holes, remove_islands_below, close, feather) -> Refinement:
    return Refinement(remove_islands_below=remove_islands_below, close_radius=close, fill_holes=fill_holes,
                      grow_pixels=grow, feather_radius=feather)


def _mask_bounds(mask: np.ndarray, fallback: Box | None, label: str | None) -> Box | None:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return fallback
    return Box(float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1), label=label)


def _points_per_image(value, count: int, positive: bool, name: str):
    """SAM3-style points: one flat list for every image, or one list per image."""
    if value is None or value == "":
        return [[] for _ in range(count)]
    import json

    data = json.loads(value) if isinstance(value, str) else value
    if isinstance(data, list) and data and all(isinstance(v, list) and (not v or isinstance(v[0], dict)) for v in data):
        return [points_from_value(data[min(i, len(data) - 1)], f"{name}[{i}]", positive) for i in range(count)]
    shared = points_from_value(data, name, positive)
    return [list(shared) for _ in range(count)]


class Segment(io.ComfyNode):
    TOOL = SEGMENT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, sam_model, multimask, grow, fill_holes, remove_islands_below, close, feather,
                boxes=None, positive_points=None, negative_points=None) -> io.NodeOutput:
        images = image_batch_to_arrays(image)
        per_boxes = boxes_per_image(boxes, len(images))
        positives = _points_per_image(positive_points, len(images), True, "positive_points")
        negatives = _points_per_image(negative_points, len(images), False, "negative_points")
        engine = SegmentEngine(sam_model)
        refine = _refinement(grow, fill_holes, remove_islands_below, close, feather)
        progress = BatchProgress(len(images))
        unions, object_masks, out_boxes = [], [], []
        for i, rgb in enumerate(images):
            result = engine.segment(rgb, per_boxes[i], positives[i] + negatives[i], multimask=multimask, refine=refine)
            progress.item_done(i)
            unions.append(result.union)
            object_masks.extend(result.masks)
            out_boxes.append([_mask_bounds(m, o.box, o.label) for m, o in zip(result.masks, result.objects)])
        return io.NodeOutput(arrays_to_mask_batch(unions), arrays_to_mask_batch(object_masks),
                             boxes_to_wire([[b for b in frame if b is not None] for frame in out_boxes]))


class SegmentByText(io.ComfyNode):
    TOOL = SEGMENT_BY_TEXT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, query, grounding_model, sam_model, max_pixels, max_objects, if_nothing_found,
                grow, fill_holes, remove_islands_below, close, feather) -> io.NodeOutput:
        images = image_batch_to_arrays(image)
        grounder = GroundingEngine(grounding_model)
        refine = _refinement(grow, fill_holes, remove_islands_below, close, feather)
        progress = BatchProgress(len(images), 100)
        unions, out_boxes, found_all = [], [], True
        segmenter = None
        for i, rgb in enumerate(images):
            found = grounder.ground(rgb, query, max_pixels=max_pixels, with_points=True, progress=progress.for_item(i))
            objects = [o for o in found.objects if o.box is not None or o.points][:max_objects or None]
            if not objects:
                found_all = False
                if if_nothing_found == "error":
                    where = f" in image {i} of the batch" if len(images) > 1 else ""
                    raise NothingFoundError(
                        f"segment_by_text: nothing matching {query!r} was found{where} ({found.reason}). "
                        "Rephrase the query, or set if_nothing_found to 'empty' to let the workflow go on.")
                unions.append(np.zeros(rgb.shape[:2], np.float32))
                out_boxes.append([])
                progress.item_done(i)
                continue
            label = query.strip()
            prompts = [SegmentObject(box=o.box, points=o.points, label=o.label or label) for o in objects]
            segmenter = segmenter or SegmentEngine(sam_model)
            result = segmenter.segment(rgb, objects=prompts, refine=refine)
            progress.item_done(i)
            unions.append(result.union)
            out_boxes.append([b for b in (_mask_bounds(m, o.box, o.label) for m, o in zip(result.masks, prompts))
                              if b is not None])
        return io.NodeOutput(arrays_to_mask_batch(unions), boxes_to_wire(out_boxes), found_all)


NODES = [Segment, SegmentByText]

"""Grounding node: instruction -> boxes and points per image (engines/grounding.py)."""

from __future__ import annotations

import json
from dataclasses import replace

from comfy_api.latest import io

from ..catalogue.grounding import GROUND
from ..engines.geometry import boxes_to_wire
from ..engines.grounding import GroundingEngine
from .convert import image_batch_to_arrays
from .progress import BatchProgress
from .schema import tool_schema


class NothingFoundError(ValueError):
    """Grounding found no match (raised only when the node is set to stop on it)."""


class Ground(io.ComfyNode):
    TOOL = GROUND

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, query, grounding_model, mode, max_pixels, max_objects, if_nothing_found,
                max_new_tokens) -> io.NodeOutput:
        engine = GroundingEngine(grounding_model)
        images = image_batch_to_arrays(image)
        progress = BatchProgress(len(images), max_new_tokens)
        boxes, points, answers, found_all = [], [], [], True
        for index, rgb in enumerate(images):
            result = engine.ground(rgb, query, mode=mode, max_pixels=max_pixels, max_new_tokens=max_new_tokens,
                                   progress=progress.for_item(index))
            progress.item_done(index)
            objects = list(result.objects)[:max_objects or None]
            if not objects:
                found_all = False
                if if_nothing_found == "error":
                    where = f" in image {index} of the batch" if len(images) > 1 else ""
                    raise NothingFoundError(
                        f"ground: nothing matching {query!r} was found{where} ({result.reason}). "
                        "Rephrase the query, try VisionReasoner for relational phrases, or set "
                        "if_nothing_found to 'empty' to let the workflow go on.")
            # Core's box nodes show the label; the model's own label, else the query.
            boxes.append([replace(o.box, label=o.label or o.box.label or query.strip())
                          for o in objects if o.box is not None])
            points.append([p.to_dict() for o in objects for p in o.points])
            answers.append(result.raw_text)
        points_out = points[0] if len(points) == 1 else points
        return io.NodeOutput(boxes_to_wire(boxes), json.dumps(points_out), found_all, "\n\n".join(answers))


NODES = [Ground]

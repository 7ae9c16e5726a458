"""Box nodes: thin V3 wrappers around ``engines/box_render.py`` and ``engines/box_input.py``;
schemas come from ``catalogue/boxes.py``."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..catalogue import boxes as catalogue
from ..catalogue.text import font_dirs
from ..engines.box_input import make_boxes, make_points
from ..engines.box_render import label_colors, render_boxes
from ..engines.geometry import boxes_per_image, boxes_to_wire, points_from_value, points_to_wire
from .convert import arrays_to_image_batch, image_batch_to_arrays
from .schema import tool_schema


class RenderBoxes(io.ComfyNode):
    TOOL = catalogue.RENDER_BOXES

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image: torch.Tensor, boxes=None, positive_points: str | None = None,
                negative_points: str | None = None, line_width: int = 0, show_labels: bool = True,
                show_scores: bool = True) -> io.NodeOutput:
        images = image_batch_to_arrays(image, "image")
        per_image = boxes_per_image(boxes, len(images), "boxes")
        points = (points_from_value(positive_points, "positive_points", positive=True)
                  + points_from_value(negative_points, "negative_points", positive=False))
        # One colour per label across the whole batch, so a label looks the same in every image.
        colors = label_colors(box.label for frame in per_image for box in frame)
        dirs = font_dirs()
        drawn = [render_boxes(array, frame, points, line_width=line_width or None, show_labels=show_labels,
                              show_scores=show_scores, colors=colors, font_dirs=dirs)
                 for array, frame in zip(images, per_image)]
        return io.NodeOutput(arrays_to_image_batch(drawn))


class MakeBoxes(io.ComfyNode):
    TOOL = catalogue.MAKE_BOXES

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, boxes_json: str = "", x: int = 0, y: int = 0, width: int = 512, height: int = 512,
                label: str = "", positive_points: str = "", negative_points: str = "") -> io.NodeOutput:
        frames = make_boxes(boxes_json, x, y, width, height, label)
        positive = make_points(positive_points, "positive_points", positive=True)
        negative = make_points(negative_points, "negative_points", positive=False)
        return io.NodeOutput(boxes_to_wire(frames), points_to_wire(positive), points_to_wire(negative))


NODES = [RenderBoxes, MakeBoxes]

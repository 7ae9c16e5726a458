"""Weight-free edit nodes: Place Region and Recolor."""

from __future__ import annotations

from comfy_api.latest import io

from ..catalogue.edit import PLACE_REGION, RECOLOR
from ..engines.geometry import boxes_to_wire
from ..engines.recolor import recolor
from ..engines.regions import place_region
from .convert import arrays_to_image_batch, image_batch_to_arrays, mask_batch_to_arrays
from .schema import tool_schema


class PlaceRegion(io.ComfyNode):
    TOOL = PLACE_REGION

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, position, size, margin) -> io.NodeOutput:
        count, height, width = image.shape[0], image.shape[1], image.shape[2]
        box = place_region(width, height, position, size, margin)
        return io.NodeOutput(boxes_to_wire([[box]] * count))


class Recolor(io.ComfyNode):
    TOOL = RECOLOR

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, mask, color, strength) -> io.NodeOutput:
        images = image_batch_to_arrays(image)
        masks = mask_batch_to_arrays(mask, len(images), images[0].shape[:2])
        return io.NodeOutput(arrays_to_image_batch([recolor(i, m, color, strength) for i, m in zip(images, masks)]))


NODES = [PlaceRegion, Recolor]

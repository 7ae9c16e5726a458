"""Mask nodes: thin V3 wrappers around ``engines/mask_ops.py``; schemas come from ``catalogue/masks.py``.

Batches are kept. Where a node takes two batches (image and mask, or two masks), their sizes must
be equal or one of them 1; a batch of one is used for every item of the other.
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..catalogue import masks as catalogue
from ..engines import mask_ops
from ..engines.geometry import boxes_per_image
from ..engines.mask_ops import MaskInputError
from .convert import arrays_to_image_batch, arrays_to_mask_batch, image_batch_to_arrays, mask_batch_to_arrays
from .schema import tool_schema


def _mask_batch(mask: torch.Tensor, name: str) -> torch.Tensor:
    """A MASK as ``[B, H, W]`` (a single ``[H, W]`` mask becomes a batch of one), checked not empty."""
    if not isinstance(mask, torch.Tensor):
        raise MaskInputError(f"{name}: expected a MASK tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise MaskInputError(f"{name}: expected a MASK of shape [B, H, W], got {tuple(mask.shape)}")
    if mask.shape[0] == 0:
        raise MaskInputError(f"{name}: the mask batch is empty")
    return mask


def _masks(mask: torch.Tensor, name: str, count: int | None = None) -> list:
    """MASK -> list of ``[H, W]`` arrays (broadcast to ``count`` items when it is a batch of one)."""
    mask = _mask_batch(mask, name)
    return mask_batch_to_arrays(mask, count or mask.shape[0], tuple(mask.shape[1:]), name=name)


def _batch_count(name_a: str, count_a: int, name_b: str, count_b: int) -> int:
    """The batch size of an operation on two batches: equal sizes, or one of them 1."""
    if count_a == count_b or count_b == 1:
        return count_a
    if count_a == 1:
        return count_b
    raise MaskInputError(
        f"{name_a} has a batch of {count_a} and {name_b} a batch of {count_b}; give batches of the "
        "same size, or a batch of one to use with every item of the other")


class AgenticEditBoxesToMask(io.ComfyNode):
    TOOL = catalogue.BOXES_TO_MASK

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image: torch.Tensor, boxes) -> io.NodeOutput:
        images = image_batch_to_arrays(image, "image")
        height, width = images[0].shape[:2]
        per_image = boxes_per_image(boxes, len(images), "boxes")
        masks = [mask_ops.boxes_to_mask(frame, height, width) for frame in per_image]
        return io.NodeOutput(arrays_to_mask_batch(masks))


class AgenticEditRefineMask(io.ComfyNode):
    TOOL = catalogue.REFINE_MASK

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, mask: torch.Tensor, grow: int = 0, fill_holes: bool = False,
                remove_islands_below: int = 0, close: int = 0, feather: float = 0.0) -> io.NodeOutput:
        refined = [mask_ops.refine(m, grow_pixels=grow, fill=fill_holes, remove_islands_below=remove_islands_below,
                                   close_radius=close, feather_radius=feather)
                   for m in _masks(mask, "mask")]
        return io.NodeOutput(arrays_to_mask_batch(refined))


class AgenticEditCombineMasks(io.ComfyNode):
    TOOL = catalogue.COMBINE_MASKS

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, mask_a: torch.Tensor, mask_b: torch.Tensor, operation: str = "union") -> io.NodeOutput:
        mask_a, mask_b = _mask_batch(mask_a, "mask_a"), _mask_batch(mask_b, "mask_b")
        # Name both spatial sizes before any batch bookkeeping can complain in other words.
        mask_ops.check_same_size(mask_a[0], mask_b[0], "mask_a", "mask_b")
        count = _batch_count("mask_a", mask_a.shape[0], "mask_b", mask_b.shape[0])
        combined = [mask_ops.combine(a, b, operation)
                    for a, b in zip(_masks(mask_a, "mask_a", count), _masks(mask_b, "mask_b", count))]
        return io.NodeOutput(arrays_to_mask_batch(combined))


class AgenticEditInvertMask(io.ComfyNode):
    TOOL = catalogue.INVERT_MASK

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, mask: torch.Tensor) -> io.NodeOutput:
        return io.NodeOutput(arrays_to_mask_batch([mask_ops.invert(m) for m in _masks(mask, "mask")]))


class AgenticEditMaskOverlay(io.ComfyNode):
    TOOL = catalogue.MASK_OVERLAY

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image: torch.Tensor, mask: torch.Tensor, color: str = "#ff0000",
                opacity: float = 0.5, outline: int = 2) -> io.NodeOutput:
        images = image_batch_to_arrays(image, "image")
        mask = _mask_batch(mask, "mask")
        mask_ops.check_same_size(images[0], mask[0], "image", "mask")
        count = _batch_count("image", len(images), "mask", mask.shape[0])
        if len(images) == 1:
            images = images * count
        previews = [mask_ops.overlay(img, m, color=color, opacity=opacity, outline=outline)
                    for img, m in zip(images, _masks(mask, "mask", count))]
        return io.NodeOutput(arrays_to_image_batch(previews))


NODES = [AgenticEditBoxesToMask, AgenticEditRefineMask, AgenticEditCombineMasks, AgenticEditInvertMask,
         AgenticEditMaskOverlay]

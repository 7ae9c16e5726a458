"""Text nodes: thin V3 wrappers around ``engines/text_draw.py`` and ``engines/text_replace.py``; their
schemas are in ``catalogue/text.py``."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..catalogue import text as catalogue
from ..engines.geometry import boxes_per_image
from ..engines.text_draw import TextInputError, draw_text, regions_from_mask
from ..engines.text_replace import removal_function, replace_text, split_texts
from .convert import arrays_to_image_batch, arrays_to_mask_batch, image_batch_to_arrays, mask_batch_to_arrays
from .progress import BatchProgress
from .schema import tool_schema


def _texts(text: str, one_line_per_box: bool):
    """The text for every box, or one line per box (trailing blank lines dropped: a widget's final
    newline is not a box)."""
    if not one_line_per_box:
        return text
    lines = text.rstrip("\r\n").splitlines()
    if not lines:
        raise TextInputError("text: empty; with 'one_line_per_box' on, write one line for each box")
    return lines


class DrawText(io.ComfyNode):
    TOOL = catalogue.DRAW_TEXT

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image: torch.Tensor, text: str, boxes=None, mask: torch.Tensor | None = None,
                one_line_per_box: bool = False, mask_regions: str = "each region",
                font: str = catalogue.DEFAULT_FONT, color: str = "auto", align: str = "center",
                valign: str = "middle", padding: float = 0.05, min_size: int = 8, max_size: int = 512,
                line_spacing: float = 1.15, outline: float = 0.0, outline_color: str = "auto",
                backing: str = "none", backing_opacity: float = 1.0, overflow: str = "error") -> io.NodeOutput:
        images = image_batch_to_arrays(image, "image")
        count = len(images)
        height, width = images[0].shape[:2]
        if boxes is not None:
            regions = boxes_per_image(boxes, count, "boxes")
        elif mask is not None:
            masks = mask_batch_to_arrays(mask, count, (height, width), "mask")
            separate = mask_regions == "each region"
            regions = [regions_from_mask(m, separate=separate, name=f"mask[{i}]") for i, m in enumerate(masks)]
        else:
            raise TextInputError("connect 'boxes' or 'mask' to say where the text goes")
        texts = _texts(text, one_line_per_box)
        font_dirs = catalogue.font_dirs()

        drawn, changed = [], []
        for index, (array, frame) in enumerate(zip(images, regions)):
            if not frame:
                raise TextInputError(
                    f"boxes: image {index} of the batch has no box to write in (did the detector find "
                    "nothing?); give at least one box per image")
            result = draw_text(array, frame, texts, font=font, font_dirs=font_dirs, color=color,
                               align=align, valign=valign, padding=padding, line_spacing=line_spacing,
                               min_size=min_size, max_size=max_size, outline=outline,
                               outline_color=outline_color, backing=backing,
                               backing_opacity=backing_opacity, overflow=overflow)
            drawn.append(result.image)
            changed.append(result.mask)
        return io.NodeOutput(arrays_to_image_batch(drawn), arrays_to_mask_batch(changed))


class ReplaceText(io.ComfyNode):
    TOOL = catalogue.REPLACE_TEXT

    @classmethod
    def define_schema(cls) -> io.Schema:
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image: torch.Tensor, boxes, text: str, match_color: bool = True, color: str = "auto",
                removal: str = "auto", font: str = catalogue.DEFAULT_FONT, padding: float = 0.08,
                grow: float = 3.0, inpaint_model: str = "stable-diffusion-xl-1.0-inpainting-0.1",
                objectclear_model: str = "ObjectClear", steps: int = 0, seed: int = 0) -> io.NodeOutput:
        images = image_batch_to_arrays(image, "image")
        regions = boxes_per_image(boxes, len(images), "boxes")
        progress = BatchProgress(len(images), steps or 20)
        font_dirs = catalogue.font_dirs()
        drawn, changed, notes = [], [], []
        for index, (array, frame) in enumerate(zip(images, regions)):
            if not frame:
                raise TextInputError(
                    f"boxes: image {index} of the batch has no box: the old text was found nowhere. Check the "
                    "grounding query (the words on the sign, or just 'text') or draw the boxes with Make Boxes")
            texts = split_texts(text, len(frame))
            remover = removal_function(removal, inpaint_model=inpaint_model, objectclear_model=objectclear_model,
                                       seed=seed, steps=steps or None, progress=progress.for_item(index),
                                       notes=notes)
            result = replace_text(array, frame, texts, remove=remover, match_color=match_color, color=color,
                                  grow=grow, font=font, font_dirs=font_dirs, padding=padding)
            progress.item_done(index)
            drawn.append(result.image)
            changed.append(result.mask)
            notes.extend(result.notes)
        return io.NodeOutput(arrays_to_image_batch(drawn), arrays_to_mask_batch(changed),
                             "; ".join(dict.fromkeys(notes)))


NODES = [DrawText, ReplaceText]

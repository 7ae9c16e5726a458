"""Insert Object node (Add-it on FLUX.1-dev, engines/addit.py)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..catalogue.insert import INSERT_OBJECT
from ..engines.addit import AdditEngine
from .convert import arrays_to_image_batch, arrays_to_mask_batch, image_batch_to_arrays
from .progress import BatchProgress
from .schema import tool_schema

log = logging.getLogger(__name__)


def _paper_default(value: int, name: str) -> int | None:
    """None (the engine scales the paper's step to the step count) while the widget keeps the paper's value."""
    return None if value == INSERT_OBJECT.arg(name).default else value


def run_insert(image, prompt: str, subject: str, source_prompt: str, model: str, *, seed, steps, guidance,
               extended_scale, structure_transfer_step, blend_step, invert, refine, width, height):
    """Insert into every image of a batch; returns (images, masks, note)."""
    engine = AdditEngine(model)
    images = image_batch_to_arrays(image)
    progress = BatchProgress(len(images), steps)
    out_images, out_masks, notes = [], [], []
    for i, rgb in enumerate(images):
        result = engine.insert(
            rgb, prompt, subject, source_prompt, seed=seed, steps=steps, guidance=guidance,
            extended_scale=extended_scale or None,
            structure_transfer_step=_paper_default(structure_transfer_step, "structure_transfer_step"),
            blend_step=_paper_default(blend_step, "blend_step"), invert=invert, refine=refine,
            width=width or None, height=height or None, progress=progress.for_item(i))
        progress.item_done(i)
        out_images.append(result.image)
        out_masks.append(result.mask)
        notes.extend(result.notes)
    note = "; ".join(dict.fromkeys(notes))
    log.info("insert_object: %s", note)
    return arrays_to_image_batch(out_images), arrays_to_mask_batch(out_masks), note


class InsertObject(io.ComfyNode):
    TOOL = INSERT_OBJECT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, prompt, subject, source_prompt, model, seed, steps, guidance, extended_scale,
                structure_transfer_step, blend_step, invert, refine, width, height) -> io.NodeOutput:
        return io.NodeOutput(*run_insert(image, prompt, subject, source_prompt, model, seed=seed, steps=steps,
                                         guidance=guidance, extended_scale=extended_scale,
                                         structure_transfer_step=structure_transfer_step, blend_step=blend_step,
                                         invert=invert, refine=refine, width=width, height=height))


NODES = [InsertObject]

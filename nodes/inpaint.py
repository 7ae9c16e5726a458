"""Inpainting nodes: Inpaint, Reference Inpaint (IP-Adapter) and Remove Object (engines/inpaint.py)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..catalogue.inpaint import INPAINT, REFERENCE_INPAINT, REMOVE_OBJECT
from ..engines.inpaint import InpaintEngine
from .convert import arrays_to_image_batch, arrays_to_mask_batch, image_batch_to_arrays, mask_batch_to_arrays
from .progress import BatchProgress
from .schema import tool_schema

log = logging.getLogger(__name__)


def run_inpaint(image, mask, model: str, prompt: str, negative_prompt: str, *, steps, guidance, strength,
                scheduler, seed, batch, mode, context_margin, mask_grow, feather, reference=None, ip_adapter=None,
                scale=0.0):
    """Inpaint every image of a batch (``batch`` variations each); returns (images, masks, notes)."""
    engine = InpaintEngine(model)
    images = image_batch_to_arrays(image)
    masks = mask_batch_to_arrays(mask, len(images), images[0].shape[:2])
    references = image_batch_to_arrays(reference, "reference") if reference is not None else None
    step_estimate = steps or engine.defaults()["steps"]
    progress = BatchProgress(len(images), step_estimate)
    out_images, out_masks, notes = [], [], []
    for i, (rgb, region) in enumerate(zip(images, masks)):
        adapter = {}
        if references is not None:
            adapter = {"ip_adapter_image": references[min(i, len(references) - 1)], "ip_adapter_scale": scale,
                       "ip_adapter": ip_adapter}
        result = engine.inpaint(rgb, region, prompt, negative_prompt, steps=steps or None,
                                guidance=guidance or None, strength=strength, scheduler=scheduler, seed=seed,
                                batch=batch, mode=mode, context_margin=context_margin, feather=feather,
                                mask_grow=mask_grow, progress=progress.for_item(i), **adapter)
        progress.item_done(i)
        out_images.extend(result.images)
        out_masks.extend([result.mask_used] * len(result.images))
        notes.extend(result.notes)
    note = "; ".join(dict.fromkeys(notes))
    log.info("inpaint: %s", note)
    return arrays_to_image_batch(out_images), arrays_to_mask_batch(out_masks), note


class Inpaint(io.ComfyNode):
    TOOL = INPAINT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, mask, prompt, negative_prompt, model, strength, steps, guidance, scheduler, seed,
                batch, mode, context_margin, mask_grow, feather) -> io.NodeOutput:
        return io.NodeOutput(*run_inpaint(image, mask, model, prompt, negative_prompt, steps=steps, guidance=guidance,
                                          strength=strength, scheduler=scheduler, seed=seed, batch=batch, mode=mode,
                                          context_margin=context_margin, mask_grow=mask_grow, feather=feather))


class ReferenceInpaint(io.ComfyNode):
    TOOL = REFERENCE_INPAINT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, mask, reference, prompt, negative_prompt, model, ip_adapter, scale, strength, steps,
                guidance, scheduler, seed, batch, mode, context_margin, mask_grow, feather) -> io.NodeOutput:
        return io.NodeOutput(*run_inpaint(image, mask, model, prompt, negative_prompt, steps=steps, guidance=guidance,
                                          strength=strength, scheduler=scheduler, seed=seed, batch=batch, mode=mode,
                                          context_margin=context_margin, mask_grow=mask_grow, feather=feather,
                                          reference=reference, ip_adapter=ip_adapter, scale=scale))


class RemoveObject(io.ComfyNode):
    TOOL = REMOVE_OBJECT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, mask, model, grow, background_prompt, negative_prompt, steps, guidance, scheduler, seed,
                batch, mode, context_margin, feather) -> io.NodeOutput:
        images, masks, note = run_inpaint(image, mask, model, background_prompt, negative_prompt, steps=steps,
                                          guidance=guidance, strength=1.0, scheduler=scheduler, seed=seed,
                                          batch=batch, mode=mode, context_margin=context_margin, mask_grow=grow,
                                          feather=feather)
        return io.NodeOutput(images, masks, f"inpaint removal ({note})")


NODES = [Inpaint, ReferenceInpaint, RemoveObject]

"""Inpainting nodes: Inpaint, Reference Inpaint (IP-Adapter) and Remove Object (engines/inpaint.py;
Remove Object also runs ObjectClear, engines/objectclear.py)."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..catalogue.inpaint import INPAINT, REFERENCE_INPAINT, REMOVE_METHODS, REMOVE_OBJECT
from ..engines import mask_ops
from ..engines.inpaint import InpaintEngine
from ..engines.objectclear import DEFAULTS as OBJECTCLEAR_DEFAULTS
from ..engines.objectclear import ObjectClearEngine, ObjectClearMaskError, objectclear_available
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


def run_objectclear(image, mask, model: str, *, grow, steps, guidance, seed, batch, mode, context_margin, feather,
                    resolution, effect_threshold):
    """ObjectClear on every image of a batch; returns (images, fused masks, effect masks, notes)."""
    engine = ObjectClearEngine(model)
    images = image_batch_to_arrays(image)
    masks = mask_batch_to_arrays(mask, len(images), images[0].shape[:2])
    progress = BatchProgress(len(images), steps or OBJECTCLEAR_DEFAULTS["steps"])
    out_images, fused, effects, notes = [], [], [], []
    for i, (rgb, region) in enumerate(zip(images, masks)):
        # Shadows and reflections reach beyond the object: a crop keeps at least 0.75 of the object's size
        # around it (a margin of 1 or more is in pixels, as for inpainting).
        margin = context_margin if context_margin >= 1 else max(context_margin, 0.75)
        result = engine.remove(rgb, region, steps=steps or None, guidance=guidance or None, seed=seed, batch=batch,
                               resolution=resolution or None, mode=mode, context_margin=margin,
                               mask_grow=grow, fusion_threshold=effect_threshold, feather=feather or None,
                               progress=progress.for_item(i))
        progress.item_done(i)
        out_images.extend(result.images)
        fused.extend(result.fused_masks)
        effects.extend(result.effect_masks)
        notes.extend(result.notes)
    return (arrays_to_image_batch(out_images), arrays_to_mask_batch(fused), arrays_to_mask_batch(effects),
            "; ".join(dict.fromkeys(notes)))


def removal_method(method: str, objectclear_model: str) -> str:
    """The method that will run: 'auto' is ObjectClear when its weights are on disk, else inpaint."""
    if method not in REMOVE_METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(REMOVE_METHODS)}")
    if method == "auto":
        return "objectclear" if objectclear_available(objectclear_model) else "inpaint"
    return method


class RemoveObject(io.ComfyNode):
    TOOL = REMOVE_OBJECT

    @classmethod
    def define_schema(cls):
        return tool_schema(cls.TOOL)

    @classmethod
    def execute(cls, image, mask, model, grow, background_prompt, negative_prompt, steps, guidance, scheduler, seed,
                batch, mode, context_margin, feather, method="auto", objectclear_model="ObjectClear",
                resolution=0, effect_threshold=0.5) -> io.NodeOutput:
        chosen = removal_method(method, objectclear_model)
        why = " (auto: ObjectClear weights found)" if method == "auto" and chosen == "objectclear" else \
            " (auto: no ObjectClear weights in models/objectclear)" if method == "auto" else ""
        if chosen == "objectclear":
            try:
                images, fused, effects, note = run_objectclear(
                    image, mask, objectclear_model, grow=grow, steps=steps, guidance=guidance, seed=seed,
                    batch=batch, mode=mode, context_margin=context_margin, feather=feather, resolution=resolution,
                    effect_threshold=effect_threshold)
                log.info("remove object: %s", note)
                return io.NodeOutput(images, fused, f"objectclear removal{why} ({note})", effects)
            except ObjectClearMaskError as exc:
                if method != "auto":
                    raise
                # auto picks the method that can take this mask: inpainting fills any mask.
                why = f" (auto: ObjectClear cannot take this mask: {exc})"
                log.info("remove object: %s", why)
        images, masks, note = run_inpaint(image, mask, model, background_prompt, negative_prompt, steps=steps,
                                          guidance=guidance, strength=1.0, scheduler=scheduler, seed=seed,
                                          batch=batch, mode=mode, context_margin=context_margin, mask_grow=grow,
                                          feather=feather)
        # The inpaint method's effect mask is just the grown object mask (one per output image).
        sources = mask_batch_to_arrays(mask, image.shape[0], tuple(image.shape[1:3]))
        grown = arrays_to_mask_batch([mask_ops.grow(m, grow) if grow else m for m in sources for _ in range(batch)])
        return io.NodeOutput(images, masks, f"inpaint removal{why} ({note})", grown)


NODES = [Inpaint, ReferenceInpaint, RemoveObject]

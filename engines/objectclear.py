"""ObjectClear: remove an object together with its shadow and reflection.

``ObjectClearEngine(model).remove(image, mask, ...)`` -> ``ObjectClearResult``. Our own
implementation of ObjectClear (arXiv 2505.22636) on diffusers' SDXL-inpainting building blocks:
the weights' layout and loading are in ``engines/objectclear_loader.py``, the denoising run in
``engines/objectclear_sampler.py``; this file plans the working size, checks the input and
composites the result.

What a call does:

1. The object mask (optionally grown by ``mask_grow``) is checked: an empty mask, one covering
   (nearly) the whole image, or an object too small for the object encoder to see are errors.
2. ``mode="full"`` (default, as the paper) works on the whole image; ``mode="crop"`` on a crop
   around the object with ``context_margin`` of context on every side (pixels when >= 1, else a
   fraction of the object box's longer side; shadows reach out, so the default is 0.75). The working
   size has its short side at ``resolution`` (default: half the UNet's native size, i.e. 512 for
   ObjectClear, its training size; 768 or 1024 for more detail) and sides in multiples of 64.
3. The model runs (20 steps, guidance 2.5, strength 0.9999 by default) and returns the removed
   image and the object-plus-effect map (attention of the object token at the last step).
4. Fusion: the map thresholded at ``fusion_threshold``, joined with the object mask, grown by
   ``fusion_grow`` and given a soft rim ``feather`` pixels wide is the *fused mask*; the model's
   output is blended into a float32 copy of the input through it. Pixels where the fused mask is 0
   are bit-identical to the input. ``fusion=False`` pastes the model's whole working area instead.

Outputs: the images, the fused mask (what was replaced) and the effect mask (the normalised map at
the image size, 0 outside the crop): object + shadow + reflection as the model saw them.
Seeds: batch item ``i`` uses a CPU generator seeded ``seed + i``. ``progress(step, total)`` runs
after every step and may raise to interrupt.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..models import acquire
from . import crop_stitch, mask_ops
from .geometry import Box
from .imaging import to_mask_array, to_rgb_array
from .objectclear_loader import DEFAULT_MODEL, FAMILY, build_objectclear, installed_path

log = logging.getLogger(__name__)

DEFAULTS = {"steps": 20, "guidance": 2.5, "strength": 0.9999, "resolution": 512}
# ObjectClear was trained at 512 on SDXL (native 1024): a model's default working size is half its native size.
MODES = ("full", "crop")
MULTIPLE = 64
WHOLE_IMAGE_FRACTION = 0.98   # a mask covering more leaves nothing to fill the hole from
MAX_SEED = 2**64


class ObjectClearInputError(ValueError):
    """Bad input to ObjectClear; the message names the input and what to do."""


class ObjectClearMaskError(ObjectClearInputError):
    """A mask ObjectClear cannot work from (empty, the whole image, an object too small to embed).
    Raised before any denoising, so a caller may fall back to another removal method."""


@dataclass
class ObjectClearResult:
    images: list[np.ndarray]        # float32 RGB [H, W, 3], one per batch item
    fused_mask: np.ndarray          # float32 [H, W]: where pixels were replaced (first batch item)
    effect_mask: np.ndarray         # float32 [H, W]: object + effect map, 0..1 (first batch item)
    crop_box: Box
    work_size: tuple[int, int]      # (width, height)
    notes: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    fused_masks: list[np.ndarray] = field(default_factory=list)   # one per batch item
    effect_masks: list[np.ndarray] = field(default_factory=list)


def objectclear_available(model: str = DEFAULT_MODEL) -> bool:
    """True when a complete copy of ``model`` is on disk (nothing is downloaded to find out)."""
    return installed_path(model) is not None


def short_side_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(width, height) with the short side at ``resolution`` and both sides multiples of 64."""
    scale = resolution / min(width, height)
    return (max(MULTIPLE, int(round(width * scale / MULTIPLE)) * MULTIPLE),
            max(MULTIPLE, int(round(height * scale / MULTIPLE)) * MULTIPLE))


def default_resolution(parts) -> int:
    """Half the UNet's native size (512 for SDXL's 1024: ObjectClear's training size), at least 128."""
    native = int(parts.pipe.unet.config.sample_size) * int(parts.pipe.vae_scale_factor)
    return max(128, native // 2 // MULTIPLE * MULTIPLE)


class ObjectClearEngine:
    """ObjectClear with one model choice (loaded lazily, shared through the model store)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device=None, dtype=None):
        if not isinstance(model, str) or not model.strip():
            raise ObjectClearInputError(f"model: name the ObjectClear folder (for example '{DEFAULT_MODEL}') or a path")
        self.model_choice = model.strip()
        self.device = device
        self.dtype = dtype

    def load(self):
        return acquire(self.model_choice, FAMILY, build_objectclear, dtype=self.dtype, device=self.device)

    def remove(self, image, mask, *, steps: int | None = None, guidance: float | None = None,
               strength: float | None = None, seed: int = 0, batch: int = 1, resolution: int | None = None,
               mode: str = "full", context_margin: float = 0.75, mask_grow: float = 0.0, fusion: bool = True,
               fusion_threshold: float = 0.5, fusion_grow: float | None = None, feather: float | None = None,
               progress: Callable[[int, int], None] | None = None) -> ObjectClearResult:
        """Remove the object ``mask`` covers from ``image`` (see the module doc). ``fusion_grow`` and
        ``feather`` are image pixels; left out they are 10 and 6 pixels at the working size, scaled
        to the image."""
        rgb = to_rgb_array(image, "image")
        mask = to_mask_array(mask, rgb.shape[:2], "mask")
        s = _settings(steps, guidance, strength, seed, batch, resolution, mode, context_margin, mask_grow,
                      fusion_threshold, fusion_grow, feather)
        s["fusion"] = bool(fusion)
        height, width = rgb.shape[:2]
        obj = mask_ops.grow(mask, s["mask_grow"]) if s["mask_grow"] else mask
        solid = obj >= 0.5
        if not solid.any():
            raise ObjectClearMaskError("mask: empty (nothing at or above 0.5): there is no object to remove; "
                                        "check the segmentation or draw the object")
        if solid.mean() > WHOLE_IMAGE_FRACTION:
            raise ObjectClearMaskError(
                f"mask: covers {solid.mean():.0%} of the image, so nothing is left to fill the hole from; mask only "
                "the object to remove")
        seeds = [(s["seed"] + i) % MAX_SEED for i in range(s["batch"])]

        handle = self.load()
        with handle.use() as parts:
            if s["resolution"] is None:
                s["resolution"] = default_resolution(parts)
            plan = self._plan(solid.astype(np.float32), s)
            work_image, work_mask = crop_stitch.crop_for_model(rgb, solid.astype(np.float32), plan)
            self._check_object_size(parts, work_mask)
            samples = self._run(parts, work_image, work_mask, s, seeds, progress)
        scale = min(plan.box.width, plan.box.height) / min(plan.work_width, plan.work_height)
        grow_px = s["fusion_grow"] if s["fusion_grow"] is not None else 10.0 * scale
        feather_px = s["feather"] if s["feather"] is not None else 6.0 * scale
        images, fused, effects = [], [], []
        for sampled in samples:
            effect = np.zeros((height, width), np.float32)
            rows, cols = plan.box.slices
            effect[rows, cols] = crop_stitch.resize_mask(sampled.effect_map, plan.box.width, plan.box.height)
            paste = self._fused_mask(effect, solid, plan, s, grow_px, feather_px)
            images.append(crop_stitch.paste_back(rgb, sampled.image, paste, plan))
            fused.append(paste)
            effects.append(effect)
        notes = [f"ObjectClear ({self.model_choice}), {'whole image' if plan.is_full_image else 'crop'} "
                 f"{plan.box.width}x{plan.box.height} at ({plan.box.x}, {plan.box.y}) worked at "
                 f"{plan.work_width}x{plan.work_height}, {s['steps']} steps, guidance {s['guidance']:g}, "
                 f"fusion {'on' if s['fusion'] else 'off'}; replaced {float((fused[0] > 0).mean()):.1%} of the image"]
        return ObjectClearResult(images, fused[0], effects[0], plan.box.to_box(), (plan.work_width, plan.work_height),
                                 notes, seeds, fused, effects)

    # ---- internals -------------------------------------------------------------------------------------

    @staticmethod
    def _plan(solid: np.ndarray, s: dict) -> crop_stitch.CropPlan:
        height, width = solid.shape
        if s["mode"] == "full":
            box = crop_stitch.CropBox(0, 0, width, height)
        else:
            rough = crop_stitch.plan_crop(solid, s["resolution"], s["context_margin"], "crop",
                                          min_context=min(s["resolution"], width, height))
            box = rough.box
        work_width, work_height = short_side_size(box.width, box.height, s["resolution"])
        return crop_stitch.CropPlan(box, work_width, work_height, width, height)

    @staticmethod
    def _check_object_size(parts, work_mask: np.ndarray) -> None:
        """The object encoder sees the working image squeezed to its input size (224 for CLIP
        ViT-L/14); an object that would cover less than a quarter of one of its patches there is too
        small to embed."""
        vision = parts.object_encoder.config.vision_config
        side, patch = int(vision.image_size), int(vision.patch_size)
        seen = float(work_mask.sum()) * side * side / work_mask.size
        needed = (patch / 2) ** 2
        if seen < needed:
            raise ObjectClearMaskError(
                f"mask: the object is too small to embed ({seen:.1f} of the object encoder's {side}x{side} input "
                f"pixels, at least {needed:g} needed); use mode='crop', a higher resolution, grow the mask, or use "
                "the inpaint removal method for tiny objects")

    @staticmethod
    def _run(parts, work_image, work_mask, s, seeds, progress):
        import torch

        from .objectclear_sampler import sample

        outputs = []
        for index, seed in enumerate(seeds):
            def on_step(step, total, done=index):
                if progress is not None:
                    progress(done * total + step, len(seeds) * total)

            generator = torch.Generator(device="cpu").manual_seed(seed)
            outputs.append(sample(parts, work_image, work_mask, steps=s["steps"], guidance=s["guidance"],
                                  strength=s["strength"], generator=generator, fusion=s["fusion"], on_step=on_step))
        return outputs

    @staticmethod
    def _fused_mask(effect: np.ndarray, solid: np.ndarray, plan, s: dict, grow_px: float, feather_px: float):
        rows, cols = plan.box.slices
        inside = np.zeros(effect.shape, bool)
        inside[rows, cols] = True
        if not s["fusion"]:
            return inside.astype(np.float32)
        hard = ((effect >= s["fusion_threshold"]) | solid).astype(np.float32)
        grown = mask_ops.grow(hard, grow_px) if grow_px > 0 else hard
        paste = crop_stitch.outward_feather(grown, feather_px) if feather_px > 0 else grown
        return np.where(inside, paste, 0.0).astype(np.float32)   # never past the crop the model saw


def _settings(steps, guidance, strength, seed, batch, resolution, mode, context_margin, mask_grow,
              fusion_threshold, fusion_grow, feather) -> dict:
    s = {"steps": _whole(DEFAULTS["steps"] if steps is None else steps, "steps", 1, 1000),
         "guidance": _number(DEFAULTS["guidance"] if guidance is None else guidance, "guidance", 0.0, 30.0),
         "strength": _number(DEFAULTS["strength"] if strength is None else strength, "strength", 0.01, 1.0),
         "seed": _whole(seed, "seed", 0, MAX_SEED - 1), "batch": _whole(batch, "batch", 1, 64),
         "resolution": None if not resolution else _whole(resolution, "resolution", 128, 2048),
         "context_margin": _number(context_margin, "context_margin", 0.0, 4096.0),
         "mask_grow": _number(mask_grow, "mask_grow", 0.0, mask_ops.MAX_RADIUS),
         "fusion_threshold": _number(fusion_threshold, "fusion_threshold", 0.0, 1.0),
         "fusion_grow": None if fusion_grow is None else _number(fusion_grow, "fusion_grow", 0.0, 4096.0),
         "feather": None if feather is None else _number(feather, "feather", 0.0, 4096.0),
         "fusion": True}
    if s["resolution"] and s["resolution"] % MULTIPLE:
        raise ObjectClearInputError(f"resolution: must be a multiple of {MULTIPLE} (512, 768, 1024), got {resolution!r}")
    if mode not in MODES:
        raise ObjectClearInputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    s["mode"] = mode
    if int(s["steps"] * s["strength"]) < 1:
        raise ObjectClearInputError(f"strength {s['strength']:g} x steps {s['steps']} leaves no denoising step; raise "
                                    f"steps to at least {math.ceil(1 / s['strength'])}")
    return s


def _whole(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise ObjectClearInputError(f"{name}: expected a whole number from {low} to {high}, got {value!r}")
    return int(value)


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or not low <= float(value) <= high:
        raise ObjectClearInputError(f"{name}: expected a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


__all__ = ["DEFAULTS", "DEFAULT_MODEL", "MODES", "ObjectClearEngine", "ObjectClearInputError", "ObjectClearMaskError",
           "ObjectClearResult",
           "objectclear_available", "short_side_size"]

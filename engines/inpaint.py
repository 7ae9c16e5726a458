"""Inpainting engine: repaint the masked part of an image with SD-1.5, PrefPaint or SDXL inpainting.

``InpaintEngine(model).inpaint(image, mask, prompt, ...)`` -> ``InpaintResult``. One engine serves
both families (``engines/inpaint_loader.py`` says which a model is and loads it through the model
store); an SDXL model also takes a reference image through IP-Adapter (``engines/ip_adapter.py``).

What a call does:

1. The mask is grown by ``mask_grow`` pixels (negative shrinks) and given a soft rim ``feather``
   pixels wide outside it: the *paste mask* (``InpaintResult.mask_used``). Everything the grown mask
   covers is replaced; the rim blends; pixels beyond it are never touched.
2. ``mode="crop"`` (default) crops around the paste mask with ``context_margin`` of context and
   works at about ``resolution``² pixels (the model's native size unless given), so a small mask
   gets the model's full detail; ``mode="full"`` sends the whole image at that size
   (``engines/crop_stitch.py``). Odd image sizes are resized inside the crop, never assumed.
3. The model repaints every pixel the paste mask touches; its output is resized back and blended
   into a float32 copy of the input through the paste mask. Pixels where the paste mask is 0 are
   bit-identical to the input in both modes (the VAE round trip never reaches them).

Special cases, each reported in ``notes`` and ``unchanged``: an empty mask (or one that
``mask_grow`` shrank away) and ``strength=0`` return the image unchanged without running the model.
A mask of another size than the image is an error naming both sizes. An all-white mask inpaints
the whole image (the crop is the full image).

Seeds: image ``i`` of a batch uses its own CPU ``torch.Generator`` seeded ``seed + i``, and images
run one after another, so batch item ``i`` equals a single run with ``seed + i`` on any device.
``progress(step, total)`` is called after every denoising step (diffusers' ``callback_on_step_end``)
and may raise to interrupt the run.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..models import acquire, get_spec, load_device, resolve
from . import crop_stitch, mask_ops
from .geometry import Box
from .imaging import to_mask_array, to_rgb_array
from .inpaint_loader import (FAMILIES, SCHEDULER_NAMES, SD15, SDXL, SchedulerConfig, defaults_for, load_folder,
                             load_single_file, looks_like_inpaint_model, make_scheduler, model_family,
                             scheduler_base_for)
from .ip_adapter import DEFAULT_ADAPTER, IPAdapterSlot, locate, reference_to_pil

log = logging.getLogger(__name__)

DEFAULT_MODEL = "stable-diffusion-xl-1.0-inpainting-0.1"
MODES = crop_stitch.MODES
MAX_SEED = 2**64


class InpaintInputError(ValueError):
    """Bad input to the inpainting engine; the message names the input and what to do."""


@dataclass
class InpaintResult:
    images: list[np.ndarray]            # float32 RGB [H, W, 3], one per batch item
    mask_used: np.ndarray               # the paste mask (grown + feathered), float32 [H, W]
    crop_box: Box | None                # the part of the image the model saw; None when it did not run
    notes: list[str] = field(default_factory=list)
    unchanged: bool = False             # True when the image came back untouched (see notes)
    seeds: list[int] = field(default_factory=list)
    work_size: tuple[int, int] | None = None  # (width, height) the model worked at


@dataclass
class InpaintModel:
    """What the model store caches: the pipeline, its IP-Adapter slot and what the engine needs."""

    pipe: Any
    family: str
    scheduler_base: SchedulerConfig
    adapters: Any                    # torch.nn.ModuleDict holding loaded IP-Adapter modules
    ip_slot: IPAdapterSlot | None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def torch_modules(self) -> list:
        import torch

        modules = [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]
        return modules + [self.adapters]

    def release_device_caches(self) -> None:
        """Drop the UNet's recorded CUDA graphs (their activation pools: ~0.5 GiB for SDXL at 1024²);
        the model store calls this when it offloads the model."""
        from .unet_graph import release_graphs

        release_graphs(self.pipe.unet)

    @property
    def native_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size) * int(self.pipe.vae_scale_factor)


def build_inpaint_model(resolved, device, dtype) -> InpaintModel:
    """The store's build function: any inpainting folder (straight onto the device when it fits there, else
    on the CPU) or single file (on the CPU); ``use()`` moves what is not where it runs."""
    import torch

    path = resolved.path
    family = model_family(path)
    # A folder loads straight onto the compute device when it fits there (no CPU copy then a move).
    pipe = (load_folder(path, family, dtype, device=load_device(resolved, device, dtype)) if path.is_dir()
            else load_single_file(path, dtype))
    pipe.set_progress_bar_config(disable=True)
    if dtype != torch.float16:
        # The VAE only overflows in fp16; in bf16/fp32 the SDXL pipeline's upcast round trip (a cast of
        # the whole VAE to fp32 and back on every call) buys nothing.
        pipe.vae.register_to_config(force_upcast=False)
    adapters = torch.nn.ModuleDict()
    slot = IPAdapterSlot(pipe, adapters) if family == SDXL else None
    return InpaintModel(pipe, family, scheduler_base_for(path, pipe), adapters, slot)


def model_family_of(choice: str) -> str:
    """``sd15_inpaint`` or ``sdxl_inpaint`` for a model choice (a known key, a name in the
    ``diffusers``/``checkpoints`` folders, a path or a hub id)."""
    spec = get_spec(choice)
    if spec is not None and spec.family in FAMILIES:
        return spec.family
    return model_family(resolve(choice, SD15).path)  # both families search the same folders


class InpaintEngine:
    """Inpainting with one model choice (loaded lazily, shared through the model store)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device=None, dtype=None):
        if not isinstance(model, str) or not model.strip():
            raise InpaintInputError("model: name an inpainting model (for example "
                                    f"'{DEFAULT_MODEL}' or 'prefpaint-v1.0'), a folder or file path, or a hub id")
        self.model_choice = model.strip()
        self.device = device
        self.dtype = dtype
        self._family: str | None = None
        self._adapter_files: dict[tuple, Any] = {}

    @property
    def family(self) -> str:
        if self._family is None:
            self._family = model_family_of(self.model_choice)
        return self._family

    def load(self):
        """The store's handle for this engine's model (loads it on first call)."""
        return acquire(self.model_choice, self.family, build_inpaint_model, dtype=self.dtype, device=self.device)

    def defaults(self) -> dict[str, Any]:
        """Steps, guidance, strength, scheduler and eta this model runs with when a call leaves them out
        (a known model found by key, folder name, path or repo id gets its own)."""
        spec = resolve(self.model_choice, self.family).spec
        return defaults_for(spec.key if spec is not None else None, self.family)

    def inpaint(self, image, mask, prompt: str = "", negative_prompt: str = "", *, steps: int | None = None,
                guidance: float | None = None, strength: float | None = None, scheduler: str | None = None,
                seed: int = 0, batch: int = 1, mode: str = "crop", context_margin: float = 0.25,
                feather: float = 8.0, mask_grow: float = 4.0, resolution: int | None = None,
                eta: float | None = None, progress: Callable[[int, int], None] | None = None,
                ip_adapter_image=None, ip_adapter_scale: float = 0.6, ip_adapter: str = DEFAULT_ADAPTER,
                ip_adapter_encoder: str | None = None) -> InpaintResult:
        """Repaint ``image`` (float RGB ``[H, W, 3]``; RGBA/grey/PIL accepted) where ``mask``
        (``[H, W]``, 0..1) is set, following ``prompt``. See the module doc for the rules.

        ``steps``, ``guidance``, ``strength``, ``scheduler`` ("default", "ddim", "euler", "euler_a",
        "dpmpp_2m", "dpmpp_2m_karras", "unipc", "pndm") and ``eta`` default to the model's own
        (``defaults()``). ``strength`` 0 returns the image unchanged; below 1 the masked part keeps
        some of the original. ``context_margin``: pixels (>= 1) or a fraction of the mask box (< 1).
        ``resolution``: the working size's side (default: the model's native 512 / 1024).
        ``ip_adapter_image`` (SDXL models only; RGBA accepted): a reference image the result should
        follow, at ``ip_adapter_scale`` (0 = ignore it, ~0.5 with a text prompt, 1 = image only).
        """
        rgb = to_rgb_array(image, "image")
        mask = to_mask_array(mask, rgb.shape[:2], "mask")
        settings = self._settings(steps, guidance, strength, scheduler, eta, seed, batch, mode, context_margin,
                                  feather, mask_grow, resolution, ip_adapter_image, ip_adapter_scale)
        prompt = _text(prompt, "prompt")
        negative_prompt = _text(negative_prompt, "negative_prompt")
        reference = None if ip_adapter_image is None else reference_to_pil(ip_adapter_image)
        seeds = [(settings["seed"] + i) % MAX_SEED for i in range(settings["batch"])]

        def unchanged(note: str, used: np.ndarray) -> InpaintResult:
            log.info("inpaint: %s", note)
            return InpaintResult([rgb.copy() for _ in seeds], used, None, [note], True, seeds)

        if not (mask > 0).any():
            return unchanged("the mask is empty: nothing to inpaint, the image is returned unchanged",
                             np.zeros_like(mask))
        grown = mask_ops.grow(mask, settings["mask_grow"]) if settings["mask_grow"] else mask
        if not (grown > 0).any():
            return unchanged(f"mask_grow={settings['mask_grow']:g} shrank the mask away: nothing to inpaint, the "
                             "image is returned unchanged", np.zeros_like(mask))
        paste = crop_stitch.outward_feather(grown, settings["feather"])
        if settings["strength"] == 0:
            return unchanged("strength is 0: the model would keep every pixel, the image is returned unchanged",
                             paste)

        handle = self.load()
        with handle.use() as model, model.lock:
            resolution = settings["resolution"] or max(64, model.native_resolution)
            plan = crop_stitch.plan_crop(paste, resolution, context_margin, settings["mode"])
            work_image, work_mask = crop_stitch.crop_for_model(rgb, paste, plan)
            pipe = model.pipe
            pipe.scheduler = make_scheduler(settings["scheduler"], model.scheduler_base)
            notes = [f"{self.model_choice} ({model.family}), {type(pipe.scheduler).__name__}, "
                     f"{'crop' if not plan.is_full_image else 'full image'} {plan.box.width}x{plan.box.height} at "
                     f"({plan.box.x}, {plan.box.y}) worked at {plan.work_width}x{plan.work_height}"]
            call = self._call_arguments(model, settings, prompt, negative_prompt, work_image, work_mask, plan,
                                        ip_adapter, ip_adapter_encoder, reference, notes)
            images = [crop_stitch.paste_back(rgb, patch, paste, plan)
                      for patch in self._run(pipe, call, seeds, progress)]
        return InpaintResult(images, paste, plan.box.to_box(), notes, False, seeds,
                             (plan.work_width, plan.work_height))

    # ---- internals ---------------------------------------------------------------------------------

    def _settings(self, steps, guidance, strength, scheduler, eta, seed, batch, mode, context_margin, feather,
                  mask_grow, resolution, reference, ip_scale) -> dict[str, Any]:
        d = self.defaults()
        s = {"steps": _whole(d["steps"] if steps is None else steps, "steps", 1, 1000),
             "guidance": _number(d["guidance"] if guidance is None else guidance, "guidance", 0.0, 100.0),
             "strength": _number(d["strength"] if strength is None else strength, "strength", 0.0, 1.0),
             "eta": _number(d["eta"] if eta is None else eta, "eta", 0.0, 1.0),
             "seed": _whole(seed, "seed", 0, MAX_SEED - 1), "batch": _whole(batch, "batch", 1, 64),
             "feather": _number(feather, "feather", 0.0, mask_ops.MAX_RADIUS),
             "mask_grow": _number(mask_grow, "mask_grow", -mask_ops.MAX_RADIUS, mask_ops.MAX_RADIUS),
             "resolution": None if resolution is None else _whole(resolution, "resolution", 64, 4096),
             "ip_scale": _number(ip_scale, "ip_adapter_scale", 0.0, 2.0)}
        s["scheduler"] = d["scheduler"] if scheduler is None else scheduler
        if s["scheduler"] not in SCHEDULER_NAMES:
            raise InpaintInputError(f"scheduler: {scheduler!r} is not one of {', '.join(SCHEDULER_NAMES)}")
        if mode not in MODES:
            raise InpaintInputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        s["mode"] = mode
        crop_stitch.margin_pixels(context_margin, crop_stitch.CropBox(0, 0, 1, 1))  # checked before loading
        if s["resolution"] is not None and s["resolution"] % 8:
            raise InpaintInputError(f"resolution: must be a multiple of 8, got {resolution!r}")
        if 0 < s["strength"] and int(s["steps"] * s["strength"]) < 1:
            raise InpaintInputError(
                f"strength {s['strength']:g} x steps {s['steps']} leaves no denoising step to run; raise steps to "
                f"at least {math.ceil(1 / s['strength'])} or raise strength (strength 0 returns the image unchanged)")
        if reference is not None and self.family != SDXL:
            raise InpaintInputError(f"ip_adapter_image: IP-Adapter reference images need an SDXL inpainting model; "
                                    f"{self.model_choice} is an SD-1.5-type model. Use "
                                    f"'{DEFAULT_MODEL}' or leave the reference image out")
        return s

    def _call_arguments(self, model, settings, prompt, negative_prompt, work_image, work_mask, plan, ip_adapter,
                        ip_encoder, reference, notes) -> dict[str, Any]:
        import torch

        call = {"prompt": prompt, "negative_prompt": negative_prompt or None,
                "image": torch.from_numpy(work_image).permute(2, 0, 1)[None].contiguous(),
                "mask_image": torch.from_numpy(work_mask)[None, None].contiguous(),
                "height": plan.work_height, "width": plan.work_width, "num_inference_steps": settings["steps"],
                "guidance_scale": settings["guidance"], "strength": settings["strength"], "eta": settings["eta"],
                "output_type": "np"}
        if model.ip_slot is None:
            return call
        if reference is None:
            model.ip_slot.deactivate()
            return call
        key = (ip_adapter, ip_encoder)
        if key not in self._adapter_files:
            self._adapter_files[key] = locate(ip_adapter, ip_encoder)
        files = self._adapter_files[key]
        model.ip_slot.activate(files, settings["ip_scale"])
        call["ip_adapter_image"] = reference
        notes.append(f"IP-Adapter {files.weights.name} at scale {settings['ip_scale']:g}")
        return call

    @staticmethod
    def _run(pipe, call: dict, seeds: list[int], progress) -> list[np.ndarray]:
        import torch

        from .compiled_vae import compiled_vae
        from .unet_graph import graphed_unet

        outputs = []
        for index, seed in enumerate(seeds):
            def on_step(pipeline, step, timestep, tensors, done=index):
                if progress is not None:
                    per_image = int(pipeline.num_timesteps)
                    progress(done * per_image + step + 1, len(seeds) * per_image)
                return tensors

            generator = torch.Generator(device="cpu").manual_seed(seed)
            # On CUDA the UNet step replays as a recorded CUDA graph: same outputs, a fraction of the
            # host time (engines/unet_graph.py; AGENTIC_EDIT_CUDA_GRAPHS=0 turns it off). With
            # AGENTIC_EDIT_COMPILE=1 the step is compiled first, and so are the VAE's encoder and decoder.
            with graphed_unet(pipe.unet), compiled_vae(pipe.vae):
                result = pipe(**call, generator=generator, callback_on_step_end=on_step)
            outputs.append(np.asarray(result.images[0], dtype=np.float32))
        return outputs


# ---- argument checks -----------------------------------------------------------------------------------

def _text(value, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InpaintInputError(f"{name}: expected text, got {type(value).__name__}")
    return value.strip()


def _whole(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise InpaintInputError(f"{name}: expected a whole number from {low} to {high}, got {value!r}")
    return int(value)


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or not low <= float(value) <= high:
        raise InpaintInputError(f"{name}: expected a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def inpaint_model_choices() -> list[str]:
    """Inpainting models for a combo: the known ones, then inpainting folders and checkpoints found
    in the ``diffusers`` and ``checkpoints`` folders (others are left out)."""
    from ..models import available_choices

    choices: list[str] = []
    for family in FAMILIES:
        for name in available_choices(family):
            if name in choices:
                continue
            if get_spec(name) is None:
                try:
                    path = resolve(name, family).path
                except ValueError:  # a name the store cannot place: not listed
                    continue
                if not looks_like_inpaint_model(path):
                    continue
            choices.append(name)
    return choices


__all__ = ["DEFAULT_MODEL", "MODES", "InpaintEngine", "InpaintInputError", "InpaintModel", "InpaintResult",
           "build_inpaint_model", "inpaint_model_choices", "model_family_of"]

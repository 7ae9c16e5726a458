"""Garment try-on with CatVTON (arXiv 2407.15886), written on diffusers' UNet, VAE and DDIM.

``CatVTONEngine().try_on(person, garment, mask)`` -> ``TryOnResult``: the person photo wearing the
garment where ``mask`` marks the clothes to replace. How (the paper's inference, our code):

1. The person photo is cut to the working aspect around its centre and resized (default: the
   weights' training size, 1024x768 for mix-48k-1024); the garment is fitted inside the same frame
   on white; the mask is taken to the frame, blurred and binarised (``engines/tryon_images.py``).
2. The VAE encodes the person with the masked part blacked out, and the garment. The two latents
   are stacked along the height: the UNet denoises a frame twice as tall whose lower half is the
   garment, and its self-attention carries the garment's look into the upper half. The mask
   channel is the mask over the person half and zeros over the garment half; the inpainting
   UNet's 9 input channels are noisy latents, that mask, and the stacked masked latents.
3. No text: every cross-attention layer is replaced by a pass-through and the UNet gets no
   encoder states. Classifier-free guidance runs the frame twice per step, once with the
   garment half zeroed (the unconditional branch), at ``guidance`` 2.5 by default.
4. DDIM (eta 1, the authors' setting) for ``steps`` (50) steps; the upper half is decoded. With
   ``repaint`` (default) only the masked clothes, with a soft rim ``feather`` pixels wide, take
   new pixels; the result is pasted back over the crop of the original photo, which keeps its size.

Seeds: one CPU ``torch.Generator`` seeded ``seed`` draws every random number (VAE sampling, the
starting noise, DDIM's noise), so a seed gives the same result on any device up to kernel numerics.
On CUDA each UNet step is replayed as a recorded CUDA graph (``engines/unet_graph.py``), and on
Hopper GPUs SDPA runs cuDNN's attention kernel first (``engines/sdpa_choice.py``: the frame's
first-level self-attention, 8 heads of 40 channels over 24 576 tokens at 1024x768, is ~27 of the
~70 ms of an H100 step with cuDNN and ~47 with FlashAttention-2; PyTorch 2.11 already prefers
cuDNN there, older releases do not). ``AGENTIC_EDIT_COMPILE=1`` also compiles the UNet (H100,
fp16: 70 -> 55 ms a step, ~65 s of compile once per shape).
``progress(step, total)`` is called after every step and may raise to interrupt the run.
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..models import acquire, resolve
from . import tryon_images as images
from .catvton_loader import (ATTENTION_FAMILY, DEFAULT_ATTENTION, DEFAULT_UNET, DEFAULT_VAE, DEFAULT_VERSION,
                             UNET_FAMILY, VAE_FAMILY, VERSIONS, attention_file, ddim_scheduler,
                             disable_cross_attention, load_attention_weights, load_unet, load_vae, unet_folder,
                             version_of)
from .tryon_images import TryOnInputError

log = logging.getLogger(__name__)

DEFAULTS = {"steps": 50, "guidance": 2.5, "eta": 1.0, "feather": 8.0}
MAX_SEED = 2**64
# The size the weights were trained at is for SD-1.5's 512-pixel UNet; a UNet of another native
# size (the tests' tiny one) works at the same fraction of it.
SD15_NATIVE = 512


@dataclass
class TryOnResult:
    image: np.ndarray                    # float32 RGB [H, W, 3], the person photo's size
    mask_used: np.ndarray                # float32 [H, W]: where new pixels went (1 = fully new)
    garment: np.ndarray                  # float32 RGB [h, w, 3]: the garment as the model saw it
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    work_size: tuple[int, int] = (0, 0)  # (height, width) of the working frame
    crop: images.PersonCrop | None = None


@dataclass
class CatVTONUNet:
    """What the store caches for a base UNet: the UNet with cross-attention off, its DDIM settings,
    and which attention file is in it now."""

    unet: Any
    scheduler_config: dict
    attention: Path | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def torch_modules(self) -> list:
        return [self.unet]

    def release_device_caches(self) -> None:
        """Drop the UNet's recorded CUDA graphs (their activation pools); the store calls this when
        it offloads the model."""
        from .unet_graph import release_graphs

        release_graphs(self.unet)


def build_unet(resolved, device, dtype) -> CatVTONUNet:
    unet = load_unet(resolved.path, dtype)
    disable_cross_attention(unet)
    return CatVTONUNet(unet, dict(ddim_scheduler(resolved.path).config))


def build_vae(resolved, device, dtype):
    return load_vae(resolved.path, dtype)


class CatVTONEngine:
    """CatVTON with one choice of attention weights, base UNet and VAE (loaded lazily, shared
    through the model store: the UNet and the VAE are separate models, so a low-memory profile
    keeps only the one at work on the GPU)."""

    def __init__(self, attention: str = DEFAULT_ATTENTION, base_unet: str = DEFAULT_UNET, vae: str = DEFAULT_VAE,
                 *, device=None, dtype=None):
        for value, name in ((attention, "attention"), (base_unet, "base_unet"), (vae, "vae")):
            if not isinstance(value, str) or not value.strip():
                raise TryOnInputError(f"{name}: name a model (defaults: {DEFAULT_ATTENTION}, {DEFAULT_UNET}, "
                                      f"{DEFAULT_VAE}), a folder path or a Hugging Face repo id")
        self.choices = {"attention": attention.strip(), "base_unet": base_unet.strip(), "vae": vae.strip()}
        self.device, self.dtype = device, dtype
        self._attention_file: Path | None = None

    # ---- models ----------------------------------------------------------------------------------

    def attention_path(self) -> Path:
        if self._attention_file is None:
            resolved = resolve(self.choices["attention"], ATTENTION_FAMILY)
            version = resolved.spec.required_files[0].split("/")[0] if resolved.spec is not None else None
            self._attention_file = attention_file(resolved.path, version)
        return self._attention_file

    def version(self) -> str:
        return version_of(self.attention_path()) or DEFAULT_VERSION

    def load_unet(self):
        folder = unet_folder(resolve(self.choices["base_unet"], UNET_FAMILY).path)
        # Keyed by the UNet folder itself: the same SD-1.5 folder loaded as an inpainting pipeline
        # (engines/inpaint.py) is another model in the store.
        return acquire(str(folder), UNET_FAMILY, build_unet, dtype=self.dtype, device=self.device)

    def load_vae(self):
        return acquire(self.choices["vae"], VAE_FAMILY, build_vae, dtype=self.dtype, device=self.device)

    # ---- try-on ----------------------------------------------------------------------------------

    def try_on(self, person, garment, mask, *, steps: int | None = None, guidance: float | None = None,
               seed: int = 0, height: int | None = None, width: int | None = None, repaint: bool = True,
               feather: float | None = None, eta: float | None = None,
               progress: Callable[[int, int], None] | None = None) -> TryOnResult:
        """Dress ``person`` (RGB ``[H, W, 3]``, any size) in ``garment`` (RGB or RGBA, any aspect up
        to 1:8; transparency is white) where ``mask`` (``[H, W]``, white = clothes to replace) is
        set. See the module doc. ``height``/``width``: the working frame (multiples of 8; 0 or None
        for the weights' training size)."""
        rgb = images.person_array(person, "image")
        cloth = images.garment_array(garment, "garment")
        mask = images.check_mask(mask, rgb.shape[:2], "mask")
        s = _settings(steps, guidance, seed, feather, eta, repaint)
        unet_handle, vae_handle = self.load_unet(), self.load_vae()
        attention = self.attention_path()
        native = int(unet_handle.obj.unet.config.sample_size) * _vae_scale(vae_handle.obj)
        trained = VERSIONS.get(self.version(), VERSIONS[DEFAULT_VERSION])
        scale = native / SD15_NATIVE
        default = tuple(max(16, int(round(side * scale / 8)) * 8) for side in trained)
        work_h, work_w = images.working_size(height, width, default)
        crop = images.PersonCrop.centred(*rgb.shape[:2], work_h, work_w)
        rows, cols = crop.slices
        person_work = images.resize_image(rgb[rows, cols], work_w, work_h)
        mask_work = images.work_mask(mask, crop, work_h, work_w)
        garment_work = images.fit_garment(cloth, work_h, work_w)

        import torch

        generator = torch.Generator(device="cpu").manual_seed(s["seed"])
        with vae_handle.use() as vae:
            masked_latent = _encode(vae, person_work * (mask_work < 0.5)[..., None], generator)
            garment_latent = _encode(vae, garment_work, generator)
        with unet_handle.use() as model, model.lock:
            if model.attention != attention:
                model.attention = None   # a load that fails half-way must not pass for the old file
                count = load_attention_weights(model.unet, attention)
                model.attention = attention
                log.info("catvton: loaded %d self-attention tensors from %s", count, attention)
            latent = self._denoise(model, masked_latent, garment_latent, mask_work, s, generator, progress)
        with vae_handle.use() as vae:
            result = _decode(vae, latent)
        paste_mask = mask if s["repaint"] else None
        image = images.paste_back(rgb, result, crop, paste_mask, s["feather"])
        used = np.zeros(rgb.shape[:2], np.float32)
        used[rows, cols] = 1.0
        if s["repaint"]:
            used = images.outward_feather((mask >= 0.5).astype(np.float32), s["feather"]) * used
        notes = [f"CatVTON {self.version()} ({attention.name}), DDIM {s['steps']} steps, guidance {s['guidance']:g}, "
                 f"worked at {work_w}x{work_h} on the {crop.width}x{crop.height} crop at ({crop.x}, {crop.y})"
                 + ("" if s["repaint"] else ", no repaint")]
        return TryOnResult(image, used, garment_work, notes, s["seed"], (work_h, work_w), crop)

    @staticmethod
    def _denoise(model, masked_latent, garment_latent, mask_work, s, generator, progress):
        import torch
        import torch.nn.functional as F
        from diffusers import DDIMScheduler
        from diffusers.utils.torch_utils import randn_tensor

        from .sdpa_choice import preferred_attention
        from .unet_graph import graphed_unet

        unet = model.unet
        device, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
        scheduler = DDIMScheduler.from_config(model.scheduler_config)
        scheduler.set_timesteps(s["steps"], device=device)
        masked_latent, garment_latent = masked_latent.to(device), garment_latent.to(device)
        mask = torch.from_numpy(mask_work)[None, None].to(device)
        mask_latent = F.interpolate(mask, size=masked_latent.shape[-2:], mode="nearest")
        # Person above, garment below: one frame twice as tall (dim -2 is the height).
        masked_pair = torch.cat([masked_latent, garment_latent], dim=-2)
        mask_pair = torch.cat([mask_latent, torch.zeros_like(mask_latent)], dim=-2)
        guided = s["guidance"] > 1.0
        if guided:  # unconditional branch first: the same frame with the garment half zeroed
            unconditional = torch.cat([masked_latent, torch.zeros_like(garment_latent)], dim=-2)
            masked_pair = torch.cat([unconditional, masked_pair])
            mask_pair = torch.cat([mask_pair, mask_pair])
        conditions = torch.cat([mask_pair, masked_pair], dim=1).to(dtype)
        latents = randn_tensor(masked_latent.shape[:2] + masked_pair.shape[-2:], generator=generator,
                               device=device, dtype=torch.float32) * scheduler.init_noise_sigma
        total = len(scheduler.timesteps)
        # cuDNN's attention first on Hopper (engines/sdpa_choice.py): the 24 576-token, 40-channel
        # self-attention of the first level is ~40% of a 1024x768 step even in cuDNN (FA2: ~65%).
        with torch.no_grad(), preferred_attention(device), graphed_unet(unet):
            for index, t in enumerate(scheduler.timesteps):
                noisy = torch.cat([latents, latents]) if guided else latents
                noisy = scheduler.scale_model_input(noisy, t).to(dtype)
                prediction = unet(torch.cat([noisy, conditions], dim=1), t, encoder_hidden_states=None,
                                  return_dict=False)[0].float()
                if guided:
                    unconditional_noise, conditional_noise = prediction.chunk(2)
                    prediction = unconditional_noise + s["guidance"] * (conditional_noise - unconditional_noise)
                latents = scheduler.step(prediction, t, latents, eta=s["eta"], generator=generator).prev_sample
                if progress is not None:
                    progress(index + 1, total)
        return latents[..., : latents.shape[-2] // 2, :]


# ---- VAE --------------------------------------------------------------------------------------------

def _vae_scale(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _encode(vae, rgb: np.ndarray, generator):
    import torch

    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(device, dtype) * 2.0 - 1.0
    with torch.inference_mode():
        latent = vae.encode(pixels).latent_dist.sample(generator)
    return latent.float() * vae.config.scaling_factor


def _decode(vae, latent) -> np.ndarray:
    import torch

    device, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    with torch.inference_mode():
        pixels = vae.decode((latent / vae.config.scaling_factor).to(device, dtype)).sample
    pixels = (pixels.float() / 2 + 0.5).clamp(0, 1)
    return pixels[0].permute(1, 2, 0).cpu().numpy().astype(np.float32)


# ---- settings ----------------------------------------------------------------------------------------

def _settings(steps, guidance, seed, feather, eta, repaint) -> dict[str, Any]:
    return {"steps": _whole(DEFAULTS["steps"] if steps is None else steps, "steps", 1, 1000),
            "guidance": _number(DEFAULTS["guidance"] if guidance is None else guidance, "guidance", 0.0, 30.0),
            "seed": _whole(seed, "seed", 0, MAX_SEED - 1),
            "feather": _number(DEFAULTS["feather"] if feather is None else feather, "feather", 0.0, 256.0),
            "eta": _number(DEFAULTS["eta"] if eta is None else eta, "eta", 0.0, 1.0),
            "repaint": bool(repaint)}


def _whole(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not low <= value <= high:
        raise TryOnInputError(f"{name}: expected a whole number from {low} to {high}, got {value!r}")
    return int(value)


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)) \
            or not low <= float(value) <= high:
        raise TryOnInputError(f"{name}: expected a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


__all__ = ["CatVTONEngine", "CatVTONUNet", "DEFAULTS", "TryOnInputError", "TryOnResult", "build_unet", "build_vae"]

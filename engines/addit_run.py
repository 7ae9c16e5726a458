"""One Add-it run on a loaded FLUX core: inversion, structure transfer, the two-stream denoising with
extended attention, the subject-guided blend and the decode (the steps of ``engines/addit.py``)."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import addit_attention as attention
from . import addit_blend as blend

log = logging.getLogger(__name__)

GAMMA_RANGE = (1.0, 1.2)
TARGET_MASS_RATIO = 1.05


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] latents -> [B, (h/2)(w/2), 4C] tokens (2x2 patches, row-major), FLUX's layout."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, _, d = tokens.shape
    return tokens.view(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def image_ids(grid_h: int, grid_w: int, device, dtype) -> torch.Tensor:
    ids = torch.zeros(grid_h, grid_w, 3)
    ids[..., 1] = torch.arange(grid_h)[:, None]
    ids[..., 2] = torch.arange(grid_w)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def flux_sigmas(scheduler_config: dict, steps: int, tokens: int, device) -> torch.Tensor:
    """FLUX.1-dev's sigma schedule for ``steps`` steps at ``tokens`` image tokens (steps + 1 values, last 0),
    through diffusers' scheduler with the model's resolution-dependent shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config or {})
    c = scheduler.config
    mu = calculate_shift(tokens, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    kwargs = {"mu": mu} if c.get("use_dynamic_shifting", False) else {}
    scheduler.set_timesteps(sigmas=sigmas, device="cpu", **kwargs)
    return scheduler.sigmas.to(device=device, dtype=torch.float32)


class AdditRun:
    def __init__(self, core, settings: dict, embeds, pooled, subject_tokens, invert: bool, progress, device, dtype):
        self.core, self.s = core, settings
        self.embeds, self.pooled = embeds, pooled
        self.invert, self.progress = invert, progress
        self.device, self.dtype = device, dtype
        self.state = attention.AdditState(text_len=embeds.shape[1], subject_tokens=list(subject_tokens))
        self.gamma = settings["gamma"] if settings["gamma"] is not None else 1.0
        self.done, self.total = 0, 0

    # ---- model calls ---------------------------------------------------------------------------------
    def velocity(self, latents: torch.Tensor, sigma: torch.Tensor, streams: slice) -> torch.Tensor:
        t = self.core.transformer
        batch = latents.shape[0]
        guidance = None
        if t.config.guidance_embeds:
            guidance = torch.tensor([self.s["source_guidance"], self.s["guidance"]], device=self.device)[streams]
        return t(hidden_states=latents.to(self.dtype), timestep=sigma.expand(batch).to(self.dtype),
                 guidance=guidance, pooled_projections=self.pooled[streams],
                 encoder_hidden_states=self.embeds[streams], txt_ids=self.txt_ids, img_ids=self.img_ids,
                 return_dict=False)[0].float()

    def _tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)

    def encode(self, rgb: np.ndarray) -> torch.Tensor:
        vae = self.core.vae
        pixels = torch.tensor(rgb).permute(2, 0, 1)[None].to(self.device, self.dtype) * 2 - 1
        latents = vae.encode(pixels).latent_dist.mode()
        return (latents.float() - (vae.config.shift_factor or 0.0)) * vae.config.scaling_factor

    def decode(self, tokens: torch.Tensor) -> np.ndarray:
        vae = self.core.vae
        latents = unpack(tokens, self.lat_h, self.lat_w)
        latents = latents / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        pixels = vae.decode(latents.to(self.dtype), return_dict=False)[0]
        return ((pixels[0].float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).cpu().numpy()

    # ---- the run -------------------------------------------------------------------------------------
    @torch.no_grad()
    def execute(self, rgb: np.ndarray, refiner):
        s, state, core = self.s, self.state, self.core
        height, width = rgb.shape[:2]
        work_w, work_h = s["size"]
        work = rgb if (work_w, work_h) == (width, height) else _resize(rgb, work_w, work_h)
        factor = core.vae_scale_factor
        self.lat_h, self.lat_w = work_h // factor, work_w // factor
        grid_h, grid_w = self.lat_h // 2, self.lat_w // 2
        self.img_ids = image_ids(grid_h, grid_w, self.device, self.dtype)
        self.txt_ids = torch.zeros(self.embeds.shape[1], 3, device=self.device, dtype=self.dtype)
        attention.install(core.transformer, state)
        try:
            return self._denoise(work, grid_h, grid_w, refiner, (width, height))
        finally:
            attention.uninstall(core.transformer)

    def _denoise(self, work, grid_h, grid_w, refiner, out_size):
        s, state = self.s, self.state
        steps, start = s["steps"], s["st_step"]
        sigmas = flux_sigmas(self.core.scheduler_config, steps, grid_h * grid_w, self.device)
        x0 = pack(self.encode(work))
        generator = torch.Generator("cpu").manual_seed(s["seed"])
        target_noise = torch.randn(x0.shape, generator=generator).to(self.device)
        source_noise = torch.randn(x0.shape, generator=generator).to(self.device)
        self.total = (steps - start) * (s["iterations"] if self.invert else 0) + (steps - start)
        source = self._source_latents(x0, sigmas, start, source_noise)
        target = (1 - sigmas[start]) * x0 + sigmas[start] * target_noise
        capture = s["blend_step"] if s["blend_step"] >= 0 else steps - 1
        notes, mask, solved = [], None, False
        for k in range(start, steps):
            state.extend = ({attention.DOUBLE} if k <= s["double_until"] else set()) | \
                           ({attention.SINGLE} if k <= s["single_until"] else set())
            latents = torch.cat([source[k], target])
            if k >= s["auto_step"] and s["gamma"] is None and state.extend and not solved:
                self.gamma, solved = self._solve_gamma(latents, sigmas[k], notes), True
            state.gamma = self.gamma
            state.reset_records()
            state.record_subject = k == capture
            velocity = self.velocity(latents, sigmas[k], slice(0, 2))[1:]
            state.record_subject = False
            if k == capture:
                predicted = self.decode(target - sigmas[k] * velocity)
                mask, note = self._locate(predicted, grid_h, grid_w, refiner)
                notes.append(note)
            target = target + (sigmas[k + 1] - sigmas[k]) * velocity
            if k == s["blend_step"]:
                keep = blend.latent_blend_mask(mask, grid_h, grid_w).to(self.device)[None, :, None]
                target = keep * target + (1 - keep) * source[k + 1]
            self._tick()
        if s["gamma"] is None and not solved:
            notes.append(f"gamma {self.gamma:g}: extended attention is off from step {s['auto_step']} on, so there "
                         "was nothing to solve it for")
        image = self.decode(target)
        notes.append(self._summary(start))
        if (image.shape[1], image.shape[0]) != out_size:
            image = _resize(image, *out_size)
            mask = np.asarray(Image.fromarray((mask * 255).astype(np.uint8)).resize(out_size, Image.NEAREST),
                              dtype=np.float32) / 255.0
        return np.clip(image, 0, 1).astype(np.float32), mask.astype(np.float32), notes

    def _source_latents(self, x0, sigmas, start, noise) -> dict[int, torch.Tensor]:
        """The source latent at every step from ``start`` to the end (index steps = the clean latent)."""
        steps = len(sigmas) - 1
        latents = {steps: x0}
        if not self.invert:
            for k in range(start, steps):
                latents[k] = (1 - sigmas[k]) * x0 + sigmas[k] * noise
            return latents
        self.state.extend = set()
        current = x0
        for k in range(steps - 1, start - 1, -1):
            # Invert the Euler step k -> k+1: x_k = x_{k+1} + (sigma_k - sigma_{k+1}) v(x_k, sigma_k),
            # solved by fixed-point iteration starting from x_{k+1}.
            guess = current
            for _ in range(self.s["iterations"]):
                velocity = self.velocity(guess, sigmas[k], slice(0, 1))
                guess = current + (sigmas[k] - sigmas[k + 1]) * velocity
                self._tick()
            latents[k] = current = guess
        return latents

    def _solve_gamma(self, latents, sigma, notes) -> float:
        state = self.state

        def measure(gamma: float) -> float:
            state.gamma = gamma
            state.reset_records()
            state.record_mass = True
            try:
                self.velocity(latents, sigma, slice(0, 2))
            finally:
                state.record_mass = False
            return state.mass_ratio

        gamma, tried = attention.solve_gamma(measure, *GAMMA_RANGE, target_ratio=TARGET_MASS_RATIO)
        notes.append(f"automatic gamma {gamma:.3f} (target/source attention mass ratio "
                     f"{TARGET_MASS_RATIO:g}; {len(tried) } evaluations: " +
                     ", ".join(f"{g:.3f}->{r:.3f}" for g, r in tried) + ")")
        return gamma

    def _locate(self, predicted: np.ndarray, grid_h: int, grid_w: int, refiner):
        height, width = predicted.shape[:2]
        state = self.state
        if state.subject_map is None:
            return np.zeros((height, width), np.float32), "no attention recorded: empty mask"
        heat = blend.attention_to_image(state.subject_map / max(1, state.subject_layers), grid_h, grid_w,
                                        height, width)
        mask = blend.otsu_mask(heat)
        prompts = blend.sam_prompts(heat, mask)
        if refiner is None or prompts is None:
            return mask, "subject mask: attention map, Otsu threshold"
        refined = np.asarray(refiner(predicted, *prompts), dtype=np.float32)
        if not (refined > 0.5).any():
            return mask, "subject mask: attention map, Otsu threshold (SAM-2 found nothing there)"
        return (refined > 0.5).astype(np.float32), "subject mask: attention map refined by SAM-2 (box + points)"

    def _summary(self, start: int) -> str:
        s = self.s
        inversion = f"fixed-point inversion ({s['iterations']} evaluations per step)" if self.invert else \
            "re-noised source (no inversion)"
        blend_text = f"blend at step {s['blend_step']}" if s["blend_step"] >= 0 else "no blending"
        return (f"Add-it on FLUX at {s['size'][0]}x{s['size'][1]}: {s['steps']} steps, structure transfer at step "
                f"{start} (earlier steps skipped: the transfer resets them), {inversion}, gamma {self.gamma:.3f}, "
                f"extended attention through step {s['double_until']} (double blocks) / {s['single_until']} (single), "
                f"{blend_text}")


def _resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    pixels = torch.tensor(rgb, dtype=torch.float32).permute(2, 0, 1)[None]
    out = F.interpolate(pixels, size=(height, width), mode="bicubic", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).clamp(0, 1).numpy().astype(np.float32)

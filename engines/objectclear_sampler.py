"""ObjectClear's denoising run on diffusers' public SDXL-inpainting pieces (the torch side of
``engines/objectclear.py``).

One ``sample(parts, image, mask, ...)`` call, for one working-size image:

1. The fixed prompt is encoded by both text encoders (``pipe.encode_prompt``); the negative branch
   is SDXL's zero embedding (``force_zeros_for_empty_prompt``).
2. The object's pixels (image in -1..1 times the binary mask, as the model was trained) are resized
   to the CLIP input, normalised with CLIP's statistics and encoded by the vision tower and its
   projection; the post-fuse MLP maps that to the prompt width and it overwrites the embedding of
   the word "object" (its index comes from the tokenizer) of the positive prompt only.
3. Latents, noise and the image latents come from ``pipe.prepare_latents``; the condition latents
   from ``pipe.prepare_mask_latents`` given the FULL image, not the image with the object blanked:
   the model must see the object to find its shadow and reflection.
4. The loop is the SDXL-inpainting one (9-channel UNet input, classifier-free guidance, SDXL time
   ids), plus ObjectClear's attention-guided fusion: right after step 0 the latents outside the mask
   are replaced once by the original's latents noised to the next timestep, and at the last step
   the cross-attention probabilities of ``PROBE_LAYER`` for the object token are captured.
5. The probabilities are head-averaged (conditional branch), laid out on their latent grid,
   upsampled bilinearly to the latent size and min-max normalised: the object-plus-effect map.

CUDA graphs (``engines/unet_graph.py``) replay every step but the last: the capture needs the
probabilities, which a recorded graph does not expose, so the last step runs eagerly with a probe
processor on one layer (the layer's output is still computed by its own processor, so it is the same
as without the probe). The original processor object is put back afterwards, so the recorded
graphs stay valid for the next call.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .objectclear_loader import CLIP_MEAN, CLIP_STD, PROMPT, ObjectClearParts

PROBE_LAYER = "down_blocks.1.attentions.0.transformer_blocks.0.attn2"


@dataclass
class Sampled:
    image: np.ndarray        # float32 RGB [h, w, 3] at the working size
    effect_map: np.ndarray   # float32 [h, w] 0..1: the normalised attention map at the working size


class _Probe:
    """Wraps one attention module's processor: records the head-averaged attention probabilities
    of one text token, then lets the wrapped processor compute the layer's output as usual."""

    def __init__(self, inner, token_index: int):
        self.inner = inner
        self.token_index = token_index
        self.probabilities: torch.Tensor | None = None   # [batch, query tokens]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if attn.norm_cross and encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.to_q(hidden_states)
        key = attn.to_k(context)
        batch, queries, _ = query.shape
        heads = attn.heads
        query = query.view(batch, queries, heads, -1).transpose(1, 2).float()
        key = key.view(batch, key.shape[1], heads, -1).transpose(1, 2).float()
        scores = torch.softmax(query @ key.transpose(-1, -2) * attn.scale, dim=-1)
        self.probabilities = scores[..., self.token_index].mean(dim=1)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)


@contextlib.contextmanager
def probe_attention(unet, layer: str, token_index: int):
    """Install a ``_Probe`` on ``unet``'s module ``layer`` for the block; the original processor
    object is restored on exit (also when the step raises)."""
    modules = dict(unet.named_modules())
    if layer not in modules or not hasattr(modules[layer], "processor"):
        raise ValueError(f"the UNet has no attention layer {layer!r}; is this an SDXL UNet?")
    module = modules[layer]
    original = module.processor
    probe = _Probe(original, token_index)
    module.processor = probe
    try:
        yield probe
    finally:
        module.processor = original


def _latent_grid(latent_height: int, latent_width: int, queries: int) -> tuple[int, int]:
    for stride in (1, 2, 4, 8, 16):
        grid = (-(-latent_height // stride), -(-latent_width // stride))
        if grid[0] * grid[1] == queries:
            return grid
    raise ValueError(f"cannot lay {queries} attention queries on a {latent_width}x{latent_height} latent grid")


def effect_map_from(probabilities: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """[batch, queries] -> [batch, 1, h, w] min-max normalised map at the latent size."""
    height, width = latent_size
    grid = _latent_grid(height, width, probabilities.shape[-1])
    attention = probabilities.float().reshape(probabilities.shape[0], 1, *grid)
    attention = F.interpolate(attention, size=(height, width), mode="bilinear", align_corners=False)
    low = attention.amin(dim=(2, 3), keepdim=True)
    high = attention.amax(dim=(2, 3), keepdim=True)
    return (attention - low) / (high - low + 1e-8)


def object_embedding(parts: ObjectClearParts, object_pixels: torch.Tensor) -> torch.Tensor:
    """[1, 3, H, W] object pixels (-1..1, zero off the object) -> [1, text width] token embedding."""
    encoder = parts.object_encoder
    size = int(encoder.config.vision_config.image_size)
    pixels = F.interpolate(object_pixels.float(), (size, size), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=pixels.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=pixels.device).view(1, 3, 1, 1)
    pixels = ((pixels - mean) / std).to(encoder.dtype)
    pooled = encoder.vision_model(pixel_values=pixels).pooler_output
    projected = encoder.visual_projection(pooled)
    return parts.post_fuse(projected.to(next(parts.post_fuse.parameters()).dtype))


@torch.no_grad()
def sample(parts: ObjectClearParts, image: np.ndarray, mask: np.ndarray, *, steps: int, guidance: float,
           strength: float, generator: torch.Generator, fusion: bool = True,
           on_step: Callable[[int, int], None] | None = None, use_graphs: bool = True) -> Sampled:
    """One ObjectClear run on ``image`` (float RGB [h, w, 3], sides multiples of 8) and binary
    ``mask`` ([h, w]); see the module doc. ``on_step(step, total)`` runs after every step and may raise."""
    from .unet_graph import graphed_unet

    pipe, unet = parts.pipe, parts.pipe.unet
    device, dtype = unet.device, unet.dtype
    height, width = image.shape[:2]
    cfg = guidance > 1.0

    init_image = pipe.image_processor.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(),
                                                 height=height, width=width).to(torch.float32)
    mask_tensor = pipe.mask_processor.preprocess(torch.from_numpy(mask)[None, None].contiguous(),
                                                 height=height, width=width)

    positive, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=PROMPT, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg)
    object_pixels = (init_image * (mask_tensor > 0.5)).to(device)
    positive = positive.clone()
    positive[:, parts.token_index] = object_embedding(parts, object_pixels).to(positive.dtype).reshape(1, -1)

    pipe.scheduler.set_timesteps(steps, device=device)
    timesteps, _ = pipe.get_timesteps(steps, strength, device)
    if len(timesteps) < 1:
        raise ValueError(f"strength {strength:g} x steps {steps} leaves no denoising step")
    latents, noise, image_latents = pipe.prepare_latents(
        1, pipe.vae.config.latent_channels, height, width, dtype, device, generator, None, image=init_image,
        timestep=timesteps[:1], is_strength_max=strength == 1.0, add_noise=True, return_noise=True,
        return_image_latents=True)
    mask_latents, condition_latents = pipe.prepare_mask_latents(
        mask_tensor, init_image, 1, height, width, dtype, device, generator, cfg)

    time_ids, negative_time_ids = pipe._get_add_time_ids(
        (height, width), (0, 0), (height, width), 6.0, 2.5, (height, width), (0, 0), (height, width),
        dtype=dtype, text_encoder_projection_dim=int(pipe.text_encoder_2.config.projection_dim))
    if cfg:
        embeddings = torch.cat([negative, positive]).to(device)
        text_embeds = torch.cat([negative_pooled, pooled]).to(device)
        time_ids = torch.cat([negative_time_ids, time_ids]).to(device)
    else:
        embeddings, text_embeds, time_ids = positive.to(device), pooled.to(device), time_ids.to(device)
    extra = pipe.prepare_extra_step_kwargs(generator, 0.0)

    total = len(timesteps)
    state = {"latents": latents, "probabilities": None}

    def step(i: int, t) -> None:
        latents = state["latents"]
        model_input = torch.cat([latents] * 2) if cfg else latents
        model_input = pipe.scheduler.scale_model_input(model_input, t)
        model_input = torch.cat([model_input, mask_latents, condition_latents], dim=1)
        conditions = {"text_embeds": text_embeds, "time_ids": time_ids}
        if i == total - 1:   # eager, with the probe: a graph would not expose the probabilities
            with probe_attention(unet, PROBE_LAYER, parts.token_index) as probe:
                prediction = unet(model_input, t, encoder_hidden_states=embeddings, added_cond_kwargs=conditions,
                                  return_dict=False)[0]
            state["probabilities"] = probe.probabilities
        else:
            prediction = unet(model_input, t, encoder_hidden_states=embeddings, added_cond_kwargs=conditions,
                              return_dict=False)[0]
        if cfg:
            unconditional, conditional = prediction.chunk(2)
            prediction = unconditional + guidance * (conditional - unconditional)
        latents = pipe.scheduler.step(prediction, t, latents, **extra, return_dict=False)[0]
        if fusion and i == 0 and total > 1:   # ObjectClear's one latent replacement outside the mask
            keep = mask_latents[:1]
            noised = pipe.scheduler.add_noise(image_latents, noise, timesteps[1:2])
            latents = (1 - keep) * noised.to(latents.dtype) + keep * latents
        state["latents"] = latents
        if on_step is not None:
            on_step(i + 1, total)

    with graphed_unet(unet, enabled=None if use_graphs else False):
        for i, t in enumerate(timesteps[:-1]):
            step(i, t)
    step(total - 1, timesteps[-1])
    latents, probabilities = state["latents"], state["probabilities"]

    effect = effect_map_from(probabilities[-1:], latents.shape[-2:])   # the conditional branch
    effect = F.interpolate(effect, size=(height, width), mode="bilinear", align_corners=False)
    decoded = _decode(pipe, latents)
    return Sampled(decoded, effect[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32))


def _decode(pipe, latents: torch.Tensor) -> np.ndarray:
    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:  # the SDXL VAE overflows in fp16
        vae.to(dtype=torch.float32)
    latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    decoded = vae.decode(latents, return_dict=False)[0]
    if upcast:
        vae.to(dtype=torch.float16)
    image = pipe.image_processor.postprocess(decoded, output_type="np")
    return np.asarray(image[0], dtype=np.float32)


__all__ = ["PROBE_LAYER", "Sampled", "effect_map_from", "object_embedding", "probe_attention", "sample"]

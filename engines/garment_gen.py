"""A garment picture from words, with SDXL text-to-image, for a try-on without a garment photo.

``GarmentGenerator(model).generate("a red linen shirt with short sleeves")`` -> float RGB
``[H, W, 3]``: the garment alone, on white, as a shop photo shows it (the kind of picture
CatVTON was trained with). The model is any ``StableDiffusionXLPipeline`` diffusers folder
(``stabilityai/stable-diffusion-xl-base-1.0`` by default, or a fine-tune in ``models/diffusers``)
or an SDXL checkpoint file in ``models/checkpoints``; it works at its native size in the garment
photo's 3:4 portrait shape. ``progress(step, total)`` is called per step and may raise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from ..models import ModelSpec, acquire, register_family_folders, register_spec
from .imaging import ImageInputError

log = logging.getLogger(__name__)

FAMILY = "sdxl_text_to_image"
DEFAULT_MODEL = "stable-diffusion-xl-base-1.0"
PROMPT = ("a product photo of {description}, the garment alone, front view, laid flat and fully visible, centred "
          "on a plain white background, soft even studio light, sharp fabric detail")
NEGATIVE = "person, model, mannequin, body, face, hands, hanger, text, logo, watermark, cluttered background, cropped"
DEFAULTS = {"steps": 30, "guidance": 6.0}

register_spec(ModelSpec(
    key=DEFAULT_MODEL, family=FAMILY, folder="diffusers", repo_id="stabilityai/stable-diffusion-xl-base-1.0",
    required_files=("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model*", "vae/config.json",
                    "vae/diffusion_pytorch_model*", "text_encoder/config.json", "text_encoder/model*",
                    "text_encoder_2/config.json", "text_encoder_2/model*", "tokenizer/*", "tokenizer_2/*",
                    "scheduler/scheduler_config.json"),
    allow_patterns=("model_index.json", "*/config.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*",
                    "unet/diffusion_pytorch_model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
                    "text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors"),
    licence="CreativeML OpenRAIL++-M", size_gb=6.9))
register_family_folders(FAMILY, "diffusers", "checkpoints")


class GarmentGenerationError(ImageInputError):
    """A garment description or model that cannot make a garment picture; the message says what to do."""


def _variant(folder: Path, plain: tuple[str, ...]) -> str | None:
    if not any((folder / name).is_file() for name in plain) and any(folder.glob("*.fp16.*")):
        return "fp16"
    return None


class GarmentPipeline:
    """What the store caches: the SDXL pipeline (its modules move together)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def torch_modules(self) -> list:
        import torch

        return [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]

    def release_device_caches(self) -> None:
        from .unet_graph import release_graphs

        release_graphs(self.pipe.unet)


def build_pipeline(resolved, device, dtype):
    """An SDXL text-to-image pipeline from a diffusers folder or a single checkpoint file (CPU)."""
    from diffusers import StableDiffusionXLPipeline

    path = resolved.path
    if path.is_dir():
        config = path / "unet" / "config.json"
        if not config.is_file():
            raise GarmentGenerationError(f"garment_model: {path} is not a diffusers pipeline folder "
                                         "(no unet/config.json)")
        values = json.loads(config.read_text())
        if values.get("in_channels") != 4 or values.get("addition_embed_type") != "text_time":
            raise GarmentGenerationError(f"garment_model: {path.name} is not an SDXL text-to-image model (its UNet "
                                         f"takes {values.get('in_channels')} channels); use "
                                         "stable-diffusion-xl-base-1.0 or an SDXL fine-tune")
        variant = _variant(path / "unet", ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))
        pipe = StableDiffusionXLPipeline.from_pretrained(str(path), dtype=dtype, variant=variant,
                                                         add_watermarker=False)
    else:
        pipe = StableDiffusionXLPipeline.from_single_file(str(path), dtype=dtype, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    if dtype is not None and str(dtype) != "torch.float16":
        pipe.vae.register_to_config(force_upcast=False)  # only fp16 overflows in the SDXL VAE
    return GarmentPipeline(pipe)


class GarmentGenerator:
    def __init__(self, model: str = DEFAULT_MODEL, *, device=None, dtype=None):
        if not isinstance(model, str) or not model.strip():
            raise GarmentGenerationError(f"garment_model: name an SDXL text-to-image model (for example "
                                         f"'{DEFAULT_MODEL}'), a folder path or a Hugging Face repo id")
        self.model_choice, self.device, self.dtype = model.strip(), device, dtype

    def load(self):
        return acquire(self.model_choice, FAMILY, build_pipeline, dtype=self.dtype, device=self.device)

    def generate(self, description: str, *, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                 progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """The garment ``description`` names, alone on white, as float RGB ``[H, W, 3]``."""
        import torch

        from .unet_graph import graphed_unet

        if not isinstance(description, str) or not description.strip():
            raise GarmentGenerationError("garment_description: describe the garment to try on (for example 'a "
                                         "navy wool coat with brass buttons'), or connect a garment image")
        steps = DEFAULTS["steps"] if not steps else int(steps)
        guidance = DEFAULTS["guidance"] if not guidance else float(guidance)
        with self.load().use() as holder:
            pipe = holder.pipe
            native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
            height, width = native, max(8, int(round(native * 0.75 / 8)) * 8)

            def on_step(pipeline, step, timestep, tensors):
                if progress is not None:
                    progress(step + 1, steps)
                return tensors

            generator = torch.Generator(device="cpu").manual_seed(int(seed))
            with graphed_unet(pipe.unet):
                result = pipe(prompt=PROMPT.format(description=description.strip()), negative_prompt=NEGATIVE,
                              height=height, width=width, num_inference_steps=steps, guidance_scale=guidance,
                              generator=generator, output_type="np", callback_on_step_end=on_step)
        log.info("garment generated from %r at %dx%d", description, width, height)
        return np.asarray(result.images[0], dtype=np.float32)


__all__ = ["DEFAULTS", "DEFAULT_MODEL", "FAMILY", "GarmentGenerationError", "GarmentGenerator", "NEGATIVE", "PROMPT",
           "build_pipeline"]

"""Tiny random-weight checkpoints for the try-on: CatVTON's attention files, its VAE, and an SDXL
text-to-image pipeline for garments described in words.

* ``catvton/CatVTON``: the zhengchong/CatVTON repository's layout,
  ``mix-48k-1024/attention/model.safetensors`` and ``vitonhd-16k-512/attention/model.safetensors``,
  made the way the authors made theirs: every module of the UNet whose name contains "attn1", in
  ``named_modules()`` order, goes into a ``ModuleList`` (their attention processors were
  ``nn.Module``s, so each layer gives eight entries), and its state dict is saved with the tensors
  a child shares with its parent kept once, under the first name. The UNet is the tiny SD-1.5
  inpainting UNet of ``sd_inpaint.py`` (the base the engine finds as
  ``diffusers/stable-diffusion-inpainting``), with other random weights.
* ``vae/sd-vae-ft-mse``: an ``AutoencoderKL`` diffusers folder (the tiny 2-level VAE).
* ``diffusers/stable-diffusion-xl-base-1.0``: a ``StableDiffusionXLPipeline`` folder: the tiny SDXL
  recipe of ``sdxl_inpaint.py`` with a 4-channel UNet (text-to-image).
"""

from __future__ import annotations

from pathlib import Path

from . import TinyModel
from .sd_inpaint import _tiny_pipeline as _tiny_sd_inpaint
from .sd_inpaint import tiny_text_config, tiny_tokenizer, tiny_vae, write_tokenizer_files
from .sdxl_inpaint import tiny_sdxl_scheduler, tiny_sdxl_unet

ATTENTION_VERSIONS = ("mix-48k-1024", "vitonhd-16k-512")


def released_attention_state(unet) -> dict:
    """The attention file's tensors, selected and de-duplicated as the release did."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    class ModuleProcessor(torch.nn.Module):  # the authors' processors were modules (no weights)
        def __call__(self, *args, **kwargs):
            return AttnProcessor2_0()(*args, **kwargs)

    unet.set_attn_processor({name: ModuleProcessor() if name.endswith("attn1.processor") else processor
                             for name, processor in unet.attn_processors.items()})
    selected = torch.nn.ModuleList(module for name, module in unet.named_modules() if "attn1" in name)
    state, seen = {}, set()
    for key, tensor in selected.state_dict().items():
        if tensor.data_ptr() in seen:  # the same tensor under a child's name: saved once
            continue
        seen.add(tensor.data_ptr())
        state[key] = tensor.detach().contiguous().clone()
    return state


def _build_attention(target: Path) -> None:
    from safetensors.torch import save_file

    for seed, version in enumerate(ATTENTION_VERSIONS, start=7):
        unet = _tiny_sd_inpaint(seed).unet
        folder = target / version / "attention"
        folder.mkdir(parents=True, exist_ok=True)
        save_file(released_attention_state(unet), str(folder / "model.safetensors"))


def _build_vae(target: Path) -> None:
    import torch

    torch.manual_seed(5)
    tiny_vae().save_pretrained(target, safe_serialization=True)


def _build_sdxl_text_to_image(target: Path) -> None:
    import torch
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(6)
    unet = tiny_sdxl_unet(in_channels=4)
    pipe = StableDiffusionXLPipeline(
        vae=tiny_vae(), text_encoder=CLIPTextModel(tiny_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(tiny_text_config(projection=True)),
        tokenizer=tiny_tokenizer(), tokenizer_2=tiny_tokenizer(), unet=unet, scheduler=tiny_sdxl_scheduler(),
        force_zeros_for_empty_prompt=True)
    pipe.save_pretrained(target, safe_serialization=True)
    write_tokenizer_files(target / "tokenizer")
    write_tokenizer_files(target / "tokenizer_2")


MODELS = [
    TinyModel(name="CatVTON", folder="catvton", build=_build_attention,
              description="tiny random CatVTON attention files in the release's index layout (mix + vitonhd)"),
    TinyModel(name="sd-vae-ft-mse", folder="vae", build=_build_vae,
              description="tiny random AutoencoderKL folder under the sd-vae-ft-mse name"),
    TinyModel(name="stable-diffusion-xl-base-1.0", folder="diffusers", build=_build_sdxl_text_to_image,
              description="tiny random SDXL text-to-image pipeline (diffusers folder)"),
]

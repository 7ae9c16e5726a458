"""Tiny random-weight SDXL inpainting and IP-Adapter checkpoints.

* ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1``: a ``StableDiffusionXLInpaintPipeline``
  folder in the real repo's layout: 9-channel UNet with SDXL's text-time conditioning
  (``addition_embed_type="text_time"``), two text encoders (``CLIPTextModel`` and
  ``CLIPTextModelWithProjection``, 32 wide each, so the UNet's cross-attention is 64 wide), two
  tokenizers and an ``EulerDiscreteScheduler``. The recipe is diffusers' own dummy SDXL components
  (tests/pipelines/stable_diffusion_xl), see shared/research/engines.md section 10.
* ``ipadapter/ip-adapter_sdxl``: the h94/IP-Adapter repository's SDXL layout under the folder the
  engine's spec names: ``sdxl_models/ip-adapter_sdxl.safetensors`` (flat keys ``image_proj.*`` and
  ``ip_adapter.{1,3,5,..}.to_k_ip/to_v_ip.weight``, one pair per cross-attention layer in
  ``unet.attn_processors`` order, as the real file) and ``sdxl_models/image_encoder/`` (a tiny
  ``CLIPVisionModelWithProjection`` saved with ``save_pretrained``, as the real bigG encoder).
* ``clip_vision/CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors``: the same tiny encoder as one file
  without a config, the way ComfyUI IP-Adapter users keep image encoders.
"""

from __future__ import annotations

from pathlib import Path

from . import TinyModel
from .sd_inpaint import tiny_text_config, tiny_tokenizer, tiny_vae, write_tokenizer_files

ADDITION_TIME_EMBED_DIM = 8
CROSS_ATTENTION_DIM = 64        # text encoder 1 (32) + text encoder 2 (32), concatenated
IMAGE_ENCODER_PROJECTION = 32   # the tiny CLIP vision projection (bigG's is 1280)
IP_TOKENS = 4                   # the base IP-Adapter's image tokens
IP_ADAPTER_FILE = "ip-adapter_sdxl.safetensors"
CLIP_VISION_FILE = "CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors"


def tiny_sdxl_unet(in_channels: int):
    """The tiny SDXL UNet: 9 input channels for inpainting, 4 for text-to-image."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=16, in_channels=in_channels, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM, transformer_layers_per_block=(1, 2),
        # 6 time ids (original size, crop, target size) + the pooled text embedding of encoder 2
        projection_class_embeddings_input_dim=6 * ADDITION_TIME_EMBED_DIM + 32,
        cross_attention_dim=CROSS_ATTENTION_DIM, norm_num_groups=16)


def tiny_sdxl_scheduler():
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  steps_offset=1, timestep_spacing="leading")


def _tiny_pipeline(seed: int):
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    unet = tiny_sdxl_unet(in_channels=9)
    return StableDiffusionXLInpaintPipeline(
        vae=tiny_vae(), text_encoder=CLIPTextModel(tiny_text_config()),
        text_encoder_2=CLIPTextModelWithProjection(tiny_text_config(projection=True)),
        tokenizer=tiny_tokenizer(), tokenizer_2=tiny_tokenizer(), unet=unet, scheduler=tiny_sdxl_scheduler(),
        requires_aesthetics_score=False, force_zeros_for_empty_prompt=True)


def build_sdxl_inpaint_folder(target: Path, seed: int = 0) -> None:
    pipe = _tiny_pipeline(seed)
    pipe.save_pretrained(target, safe_serialization=True)
    write_tokenizer_files(target / "tokenizer")
    write_tokenizer_files(target / "tokenizer_2")


def _build_sdxl(target: Path) -> None:
    build_sdxl_inpaint_folder(target, seed=0)


# ---- IP-Adapter -------------------------------------------------------------------------------------

def tiny_image_encoder(seed: int = 3):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    # 64 wide with one 64-wide head: CLIP's usual head width, so the config of the config-less copy
    # can be inferred from its shapes the way the engine does for real files.
    config = CLIPVisionConfig(hidden_size=64, intermediate_size=37, num_hidden_layers=2, num_attention_heads=1,
                              image_size=32, patch_size=4, projection_dim=IMAGE_ENCODER_PROJECTION,
                              hidden_act="gelu", layer_norm_eps=1e-5)
    return CLIPVisionModelWithProjection(config).eval()


def ip_adapter_state_dict(seed: int = 4) -> dict:
    """Random IP-Adapter weights in h94's flat safetensors layout for the tiny SDXL UNet."""
    import torch

    pipe = _tiny_pipeline(0)  # only the UNet's shapes matter
    unet = pipe.unet
    generator = torch.Generator().manual_seed(seed)

    def weight(*shape):
        return torch.randn(*shape, generator=generator) * 0.2

    state = {
        "image_proj.proj.weight": weight(CROSS_ATTENTION_DIM * IP_TOKENS, IMAGE_ENCODER_PROJECTION),
        "image_proj.proj.bias": weight(CROSS_ATTENTION_DIM * IP_TOKENS),
        "image_proj.norm.weight": torch.ones(CROSS_ATTENTION_DIM),
        "image_proj.norm.bias": torch.zeros(CROSS_ATTENTION_DIM),
    }
    modules = dict(unet.named_modules())
    # h94 numbered every attention processor and kept weights only for the cross-attention ones.
    for index, name in enumerate(unet.attn_processors):
        if not name.endswith("attn2.processor"):
            continue
        attention = modules[name[: -len(".processor")]]
        hidden = attention.to_k.out_features
        state[f"ip_adapter.{index}.to_k_ip.weight"] = weight(hidden, CROSS_ATTENTION_DIM)
        state[f"ip_adapter.{index}.to_v_ip.weight"] = weight(hidden, CROSS_ATTENTION_DIM)
    return state


def _build_ip_adapter(target: Path) -> None:
    """h94's layout: ``sdxl_models/ip-adapter_sdxl.safetensors`` and ``sdxl_models/image_encoder/``."""
    from safetensors.torch import save_file

    models = target / "sdxl_models"
    models.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ip_adapter_state_dict().items()}, str(models / IP_ADAPTER_FILE))
    tiny_image_encoder().save_pretrained(models / "image_encoder", safe_serialization=True)


def _build_clip_vision_file(target: Path) -> None:
    """The same encoder as one config-less safetensors file (ComfyUI's clip_vision folder)."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in tiny_image_encoder().state_dict().items()}
    save_file(state, str(target))


MODELS = [
    TinyModel(name="stable-diffusion-xl-1.0-inpainting-0.1", folder="diffusers", build=_build_sdxl,
              description="tiny random SDXL inpainting pipeline (diffusers folder)"),
    TinyModel(name="ip-adapter_sdxl", folder="ipadapter", build=_build_ip_adapter,
              description="tiny random IP-Adapter SDXL weights + image encoder in h94's sdxl_models layout"),
    TinyModel(name=CLIP_VISION_FILE, folder="clip_vision", build=_build_clip_vision_file,
              description="tiny random CLIP vision encoder as one config-less file (IP-Adapter image encoder)"),
]

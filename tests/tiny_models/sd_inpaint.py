"""Tiny random-weight SD-1.5 inpainting checkpoints (``StableDiffusionInpaintPipeline`` layout).

The real architecture with every width shrunk (recipe: shared/research/engines.md section 10): a
9-channel UNet (4 noisy latents + 1 mask + 4 masked-image latents) of widths (32, 64) with one
cross-attention level, a 2-level ``AutoencoderKL``, a 2-layer ``CLIPTextModel`` of width 32 and a
real ``CLIPTokenizer`` (a letter-level vocabulary written here; ``model_max_length`` 77 as in SD).

Three copies, each in a real on-disk layout:

* ``diffusers/stable-diffusion-inpainting``: ``save_pretrained`` folder with the real repo's
  ``PNDMScheduler`` config (stable-diffusion-v1-5/stable-diffusion-inpainting);
* ``diffusers/prefpaint-v1.0``: the same layout whose scheduler names the training-only class
  ``DDIMSchedulerCustom`` in ``scheduler_config.json`` and ``model_index.json``, as the real
  kd5678/prefpaint-v1.0 repo does, so the engine's scheduler override is exercised;
* ``checkpoints/sd-v1-5-inpainting.safetensors``: one file in the original (CompVis / LDM) key
  layout (``model.diffusion_model.*``, ``first_stage_model.*``, ``cond_stage_model.transformer.*``)
  that ComfyUI's checkpoint folder holds. The conversion below is the inverse of diffusers'
  ``convert_ldm_*`` functions (diffusers/loaders/single_file_utils.py) for SD-1.x layouts; diffusers
  reads it back with ``from_single_file(..., config=<a diffusers folder of the same architecture>)``.
  Its weights equal the diffusers folder's, so a test can compare the two loaders.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from . import TinyModel

TOKENIZER_MAX_LENGTH = 77
# The real SD-1.5 inpainting scheduler (scheduler/scheduler_config.json of the diffusers repo).
SD15_SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
                  "steps_offset": 1}
SINGLE_FILE_NAME = "sd-v1-5-inpainting.safetensors"


# ---- tokenizer ----------------------------------------------------------------------------------

def _tiny_vocab() -> dict[str, int]:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in string.ascii_lowercase + string.digits + ".,!?'-":
        vocab.setdefault(symbol, len(vocab))
        vocab.setdefault(symbol + "</w>", len(vocab))
    return vocab


def write_tokenizer_files(folder: Path) -> None:
    """The slow-tokenizer files the real SD repos ship (vocab.json + merges.txt, no tokenizer.json),
    so loading goes the same way as for them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(_tiny_vocab()))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer.json").unlink(missing_ok=True)


def tiny_tokenizer():
    """A real ``CLIPTokenizer`` over single letters and digits (no merges)."""
    import tempfile

    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        write_tokenizer_files(Path(folder))
        return CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"),
                             model_max_length=TOKENIZER_MAX_LENGTH)


def tiny_vocab_size() -> int:
    return len(_tiny_vocab())


def tiny_text_config(projection: bool = False):
    from transformers import CLIPTextConfig

    kwargs = {"projection_dim": 32} if projection else {}
    return CLIPTextConfig(vocab_size=tiny_vocab_size(), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, max_position_embeddings=TOKENIZER_MAX_LENGTH, bos_token_id=0,
                          eos_token_id=1, pad_token_id=1, layer_norm_eps=1e-5, **kwargs)


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                         up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=16,
                         sample_size=32)


# ---- the pipeline -------------------------------------------------------------------------------

def _tiny_pipeline(seed: int):
    import torch
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=9,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=4, norm_num_groups=16)
    vae = tiny_vae()
    text_encoder = CLIPTextModel(tiny_text_config())
    return StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tiny_tokenizer(), unet=unet,
                                          scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None,
                                          feature_extractor=None, requires_safety_checker=False)


def build_sd_inpaint_folder(target: Path, seed: int = 0) -> None:
    """Write the tiny pipeline as a diffusers folder (safetensors) at ``target``."""
    pipe = _tiny_pipeline(seed)
    pipe.save_pretrained(target, safe_serialization=True)
    write_tokenizer_files(target / "tokenizer")


def _build_sd_inpainting(target: Path) -> None:
    build_sd_inpaint_folder(target, seed=0)


def _build_prefpaint(target: Path) -> None:
    build_sd_inpaint_folder(target, seed=1)
    # The real repo's scheduler is its training class (DDIM that also returns log-probabilities).
    config_path = target / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config.update({"_class_name": "DDIMSchedulerCustom", "clip_sample": False, "set_alpha_to_one": False,
                   "steps_offset": 1, "prediction_type": "epsilon"})
    config.pop("skip_prk_steps", None)
    config_path.write_text(json.dumps(config, indent=2))
    index = json.loads((target / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "DDIMSchedulerCustom"]
    (target / "model_index.json").write_text(json.dumps(index, indent=2))


# ---- the original (LDM) single-file layout ----------------------------------------------------------

_UNET_RESNET = (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection"))
_VAE_ATTENTION = (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out"))


def _rename(rest: str, table) -> str:
    for new, old in table:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_to_ldm(state: dict, config) -> dict:
    """diffusers UNet2DConditionModel keys -> LDM ``model.diffusion_model.*`` keys (SD-1.x/2.x/XL)."""
    per_level = config["layers_per_block"] + 1
    fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
             "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
             "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
    up_has_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    out = {}
    for key, tensor in state.items():
        parts = key.split(".")
        head, rest = None, None
        for prefix, ldm in fixed.items():
            if key.startswith(prefix + "."):
                head, rest = ldm, key[len(prefix) + 1:]
        if head is None:
            if parts[0] == "down_blocks":
                level, kind, index = int(parts[1]), parts[2], int(parts[3])
                block = 1 + level * per_level + (config["layers_per_block"] if kind == "downsamplers" else index)
                rest = ".".join(parts[4:])
                if kind == "resnets":
                    head, rest = f"input_blocks.{block}.0", _rename(rest, _UNET_RESNET)
                elif kind == "attentions":
                    head = f"input_blocks.{block}.1"
                else:  # downsamplers.0.conv.*
                    head, rest = f"input_blocks.{block}.0.op", ".".join(parts[5:])
            elif parts[0] == "mid_block":
                kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
                if kind == "resnets":
                    head, rest = f"middle_block.{2 * index}", _rename(rest, _UNET_RESNET)
                else:
                    head = "middle_block.1"
            elif parts[0] == "up_blocks":
                level, kind, index = int(parts[1]), parts[2], int(parts[3])
                rest = ".".join(parts[4:])
                if kind == "resnets":
                    head, rest = f"output_blocks.{level * per_level + index}.0", _rename(rest, _UNET_RESNET)
                elif kind == "attentions":
                    head = f"output_blocks.{level * per_level + index}.1"
                else:  # upsamplers.0.conv.*: after the block's attention when it has one
                    slot = 2 if up_has_attention[level] else 1
                    head = f"output_blocks.{level * per_level + config['layers_per_block']}.{slot}"
                    rest = ".".join(parts[4:])
            else:
                raise ValueError(f"unet_to_ldm: no LDM name for {key}")
        out[f"model.diffusion_model.{head}.{rest}"] = tensor
    return out


def vae_to_ldm(state: dict, config) -> dict:
    """diffusers AutoencoderKL keys -> LDM ``first_stage_model.*`` keys."""
    levels = len(config["up_block_types"])
    out = {}
    for key, tensor in state.items():
        parts = key.split(".")
        side = parts[0]
        if side in ("quant_conv", "post_quant_conv"):
            name = key
        elif parts[1] in ("conv_in", "conv_out"):
            name = key
        elif parts[1] == "conv_norm_out":
            name = f"{side}.norm_out.{parts[2]}"
        elif parts[1] in ("down_blocks", "up_blocks"):
            level = int(parts[2]) if side == "encoder" else levels - 1 - int(parts[2])
            stage = "down" if side == "encoder" else "up"
            if parts[3] == "resnets":
                rest = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
                name = f"{side}.{stage}.{level}.block.{parts[4]}.{rest}"
            else:  # downsamplers.0.conv / upsamplers.0.conv
                name = f"{side}.{stage}.{level}.{'downsample' if side == 'encoder' else 'upsample'}.conv.{parts[-1]}"
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                rest = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
                name = f"{side}.mid.block_{int(parts[3]) + 1}.{rest}"
            else:
                name = f"{side}.mid.attn_1.{_rename('.'.join(parts[4:]), _VAE_ATTENTION)}"
                if tensor.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                    tensor = tensor[:, :, None, None]
        else:
            raise ValueError(f"vae_to_ldm: no LDM name for {key}")
        out[f"first_stage_model.{name}"] = tensor
    return out


def build_sd_inpaint_single_file(target: Path, folder: Path | None = None, seed: int = 0) -> None:
    """Write the tiny SD-1.5 inpaint pipeline as one LDM-layout safetensors file at ``target``.

    The weights are those of the diffusers folder built with the same ``seed``."""
    import torch
    from safetensors.torch import save_file

    pipe = _tiny_pipeline(seed)
    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    # The original layout nests CLIP under ``text_model.`` (transformers >= 5.6 flattened CLIPTextModel).
    state.update({"cond_stage_model.transformer." + (k if k.startswith("text_model.") else f"text_model.{k}"): v
                  for k, v in pipe.text_encoder.state_dict().items()})
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(torch.float32).contiguous() for k, v in state.items()}, str(target))


def _build_single_file(target: Path) -> None:
    build_sd_inpaint_single_file(target, seed=0)


MODELS = [
    TinyModel(name="stable-diffusion-inpainting", folder="diffusers", build=_build_sd_inpainting,
              description="tiny random SD-1.5 inpainting pipeline (diffusers folder, PNDM scheduler)"),
    TinyModel(name="prefpaint-v1.0", folder="diffusers", build=_build_prefpaint,
              description="tiny random SD-1.5 inpainting pipeline whose scheduler names DDIMSchedulerCustom"),
    TinyModel(name=SINGLE_FILE_NAME, folder="checkpoints", build=_build_single_file,
              description="tiny random SD-1.5 inpainting weights as one LDM-layout safetensors file"),
]

"""CatVTON's weights: which files, where they go, and how they become one try-on UNet.

CatVTON (Zheng-Chong/CatVTON, ICLR 2025) is an SD-1.5 inpainting UNet whose self-attention layers
were retrained and whose cross-attention is switched off; the VAE is ``sd-vae-ft-mse``. Three
downloads, each a model choice of its own:

* the attention weights (``catvton`` folder; zhengchong/CatVTON, CC BY-NC-SA 4.0):
  ``mix-48k-1024/attention/model.safetensors`` (the default, trained at 1024x768), or the 512x384
  variants ``vitonhd-16k-512`` and ``dresscode-16k-512``;
* the base UNet: the ``unet/`` of an SD-1.5 inpainting diffusers folder (``diffusers`` folder; any
  copy named ``stable-diffusion-inpainting`` is used, only ``unet/`` is needed), or a UNet folder;
* the VAE: an ``AutoencoderKL`` diffusers folder (``vae`` or ``diffusers`` folder), or the same VAE as
  one original-layout file in ``models/vae`` (``vae-ft-mse-840000-ema-pruned.safetensors``).

The attention file is not in diffusers' names. The authors collected, in ``named_modules()``
order, every module of the UNet whose name contains "attn1" into a ``ModuleList`` and saved its
state dict: an attention module, then each of its children (``to_q``, ``to_k``, ``to_v``,
``to_out``, ``to_out.0``, ``to_out.1``) and its processor (an ``nn.Module`` in their code), eight
list entries per self-attention layer. A child's weight is also its parent's (``3.weight`` is
``0.to_v.weight``); the saver dropped such duplicates. So a key is ``<list index>.<parameter
path>``; ``release_slots`` rebuilds that list for any SD-1.x UNet and ``load_attention_weights``
maps every key to the parameter it names, checking that the file holds each self-attention
parameter exactly once (80 keys for SD-1.5).
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..models import ModelSpec, register_family_folders, register_spec

log = logging.getLogger(__name__)

ATTENTION_FAMILY = "catvton"
UNET_FAMILY = "catvton_unet"
VAE_FAMILY = "catvton_vae"
ATTENTION_REPO = "zhengchong/CatVTON"
LICENCE = "CC BY-NC-SA 4.0 (non-commercial; the CatVTON code, weights and demo)"
VERSIONS = {  # folder in the repo -> (working height, width) it was trained at
    "mix-48k-1024": (1024, 768),
    "vitonhd-16k-512": (512, 384),
    "dresscode-16k-512": (512, 384),
}
DEFAULT_VERSION = "mix-48k-1024"
ATTENTION_FILE = "attention/model.safetensors"
DEFAULT_ATTENTION = f"CatVTON-{DEFAULT_VERSION}"
DEFAULT_UNET = "stable-diffusion-inpainting-unet"
DEFAULT_VAE = "sd-vae-ft-mse"

# The children of diffusers' ``Attention`` in the order they were registered when the file was
# written, then the processor slot: the eight list entries one self-attention layer took.
RELEASE_LAYOUT = ("", "to_q", "to_k", "to_v", "to_out", "to_out.0", "to_out.1", "processor")

SPECS = tuple(
    ModelSpec(key=f"CatVTON-{version}", family=ATTENTION_FAMILY, folder="catvton", repo_id=ATTENTION_REPO,
              required_files=(f"{version}/{ATTENTION_FILE}",), allow_patterns=(f"{version}/{ATTENTION_FILE}",),
              licence=LICENCE, size_gb=0.2,
              notes=f"Only the file {version}/{ATTENTION_FILE} is needed (DensePose/ and SCHP/ are not used).")
    for version in VERSIONS
) + (
    ModelSpec(key=DEFAULT_UNET, family=UNET_FAMILY, folder="diffusers",
              repo_id="stable-diffusion-v1-5/stable-diffusion-inpainting",
              required_files=("unet/config.json", "unet/diffusion_pytorch_model*"),
              allow_patterns=("unet/config.json", "unet/*.safetensors", "scheduler/*"),
              licence="CreativeML OpenRAIL-M", size_gb=1.7,
              notes="Any SD-1.5 inpainting copy works (CatVTON's own demo uses booksforcharlie/stable-diffusion-"
                    "inpainting); an installed models/diffusers/stable-diffusion-inpainting folder is used as is."),
    ModelSpec(key=DEFAULT_VAE, family=VAE_FAMILY, folder="vae", repo_id="stabilityai/sd-vae-ft-mse",
              required_files=("config.json", "diffusion_pytorch_model*"),
              allow_patterns=("config.json", "diffusion_pytorch_model.safetensors"), licence="MIT", size_gb=0.33),
)
for _spec in SPECS:
    register_spec(_spec)
register_family_folders(UNET_FAMILY, "diffusers")
register_family_folders(VAE_FAMILY, "vae", "diffusers")

# SD-1.5's training noise schedule, for a base folder without scheduler/. CatVTON builds its DDIM
# from the base's (PNDM) config, which does not set clip_sample, so DDIM's own default applies.
SD15_SCHEDULE = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": False}


class CatVTONWeightsError(ValueError):
    """Files that are not CatVTON's weights (or do not fit the base UNet); the message says what to do."""


# ---- the attention file ----------------------------------------------------------------------------

def attention_file(path: Path, version: str | None = None) -> Path:
    """The attention safetensors inside a resolved attention choice: the file itself, or
    ``<version>/attention/model.safetensors`` / ``attention/model.safetensors`` in a folder."""
    if path.is_file():
        return path
    names = ([f"{version}/{ATTENTION_FILE}"] if version else []) + [ATTENTION_FILE, "model.safetensors"]
    names += [f"{v}/{ATTENTION_FILE}" for v in VERSIONS if v != version]
    for name in names:
        if (path / name).is_file():
            return path / name
    raise CatVTONWeightsError(f"{path} holds no CatVTON attention file: expected <version>/{ATTENTION_FILE} "
                              f"(versions: {', '.join(VERSIONS)}) from https://huggingface.co/{ATTENTION_REPO}")


def version_of(file: Path) -> str | None:
    """The release version a file belongs to, from its folder names (None when they do not say)."""
    return next((part for part in reversed(file.parts) if part in VERSIONS), None)


@dataclass(frozen=True)
class Slot:
    """One entry of the released ModuleList: the attention layer and the path of the entry inside it."""

    attention_name: str
    child: str   # "" for the attention module itself, "processor" for its (weightless) processor


def release_slots(unet) -> list[Slot]:
    """The released ModuleList's entries for ``unet``, by index (see the module doc)."""
    from diffusers.models.attention_processor import Attention

    slots: list[Slot] = []
    for name, module in unet.named_modules():
        if name.rsplit(".", 1)[-1] == "attn1" and isinstance(module, Attention):
            slots.extend(Slot(name, child) for child in RELEASE_LAYOUT)
    return slots


def self_attention_parameters(unet) -> dict[str, "object"]:
    """Every parameter of the self-attention layers, by its name in the UNet."""
    return {name: p for name, p in unet.named_parameters() if ".attn1." in f".{name}"}


def map_release_keys(unet, keys) -> dict[str, str]:
    """File key (``<index>.<path>``) -> the UNet parameter name it holds. Raises on a key that
    names no self-attention parameter, or two keys for one parameter."""
    slots = release_slots(unet)
    wanted = self_attention_parameters(unet)
    mapping: dict[str, str] = {}
    taken: dict[str, str] = {}
    for key in keys:
        index, _, rest = key.partition(".")
        if not index.isdigit() or not rest:
            raise CatVTONWeightsError(f"attention file key {key!r} is not '<index>.<parameter>': this is not a "
                                      f"CatVTON attention file (from https://huggingface.co/{ATTENTION_REPO})")
        if int(index) >= len(slots):
            raise CatVTONWeightsError(
                f"attention file key {key!r} points past the {len(slots)} self-attention entries of the base UNet "
                f"({len(slots) // len(RELEASE_LAYOUT)} layers): the file was made for a bigger UNet; use an SD-1.5 "
                "inpainting UNet as the base")
        slot = slots[int(index)]
        name = ".".join(part for part in (slot.attention_name, slot.child, rest) if part)
        if name not in wanted:
            raise CatVTONWeightsError(f"attention file key {key!r} names {name}, which the base UNet does not have")
        if name in taken:
            raise CatVTONWeightsError(f"attention file keys {taken[name]!r} and {key!r} both hold {name}")
        taken[name] = key
        mapping[key] = name
    return mapping


def load_attention_weights(unet, file: Path) -> int:
    """Copy the released self-attention weights in ``file`` into ``unet`` (in place, keeping each
    parameter's dtype and device). Returns the number of tensors loaded."""
    import torch
    from safetensors import safe_open

    wanted = self_attention_parameters(unet)
    try:
        handle = safe_open(str(file), framework="pt", device="cpu")
    except Exception as exc:  # not a safetensors file, truncated download
        raise CatVTONWeightsError(f"{file} is not a readable safetensors file ({exc}); download it again from "
                                  f"https://huggingface.co/{ATTENTION_REPO}") from None
    with handle:
        keys = list(handle.keys())
        if len(keys) != len(wanted):
            raise CatVTONWeightsError(
                f"{file} holds {len(keys)} tensors; the base UNet's {len(release_slots(unet)) // len(RELEASE_LAYOUT)} "
                f"self-attention "
                f"layers need exactly {len(wanted)} (to_q, to_k, to_v, to_out weights and to_out bias each). "
                "Use a CatVTON attention file (mix-48k-1024, vitonhd-16k-512 or dresscode-16k-512) with an SD-1.5 "
                "inpainting base UNet")
        mapping = map_release_keys(unet, keys)
        with torch.no_grad():
            for key, name in mapping.items():
                tensor, target = handle.get_tensor(key), wanted[name]
                if tuple(tensor.shape) != tuple(target.shape):
                    raise CatVTONWeightsError(f"{file}: {key} ({name}) has shape {tuple(tensor.shape)}, the base "
                                              f"UNet's is {tuple(target.shape)}: the file was made for another UNet")
                target.copy_(tensor.to(dtype=target.dtype, device=target.device))
    return len(mapping)


# ---- cross-attention off ------------------------------------------------------------------------------

class SkipCrossAttention:
    """CatVTON's cross-attention: hands back the (normalised) hidden states it was given, so the
    transformer block adds them to its residual. The model was trained this way."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        return hidden_states


def disable_cross_attention(unet) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    processors = {name: SkipCrossAttention() if name.endswith("attn2.processor") else AttnProcessor2_0()
                  for name in unet.attn_processors}
    unet.set_attn_processor(processors)


# ---- base UNet, VAE, scheduler -----------------------------------------------------------------------

def unet_folder(path: Path) -> Path:
    """The UNet folder of a resolved base choice: ``path/unet`` of a pipeline folder, or ``path``."""
    for folder in (path / "unet", path):
        config = folder / "config.json"
        if config.is_file():
            channels = json.loads(config.read_text()).get("in_channels")
            if channels != 9:
                raise CatVTONWeightsError(f"{folder} is a UNet with {channels} input channels; CatVTON needs an "
                                          "SD-1.5 inpainting UNet (9: latents, mask, masked image)")
            return folder
    raise CatVTONWeightsError(f"{path} is neither an SD-1.5 inpainting diffusers folder (unet/config.json) nor a "
                              "UNet folder (config.json)")


def _variant(folder: Path) -> str | None:
    plain = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
    if not any((folder / name).is_file() for name in plain) and any(folder.glob("*.fp16.*")):
        return "fp16"
    return None


def load_unet(path: Path, dtype):
    from diffusers import UNet2DConditionModel

    folder = unet_folder(path)
    unet = UNet2DConditionModel.from_pretrained(str(folder), dtype=dtype, variant=_variant(folder))
    return unet.eval().requires_grad_(False)


def load_vae(path: Path, dtype):
    """The VAE of a diffusers folder (``config.json`` + weights, or a pipeline's ``vae/``), or of a
    single file in the original layout (ComfyUI's ``vae-ft-mse-840000-ema-pruned.safetensors``)."""
    from diffusers import AutoencoderKL

    if path.is_file():
        return _single_file_vae(path, dtype)
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    if not (folder / "config.json").is_file():
        raise CatVTONWeightsError(f"{path} is not an AutoencoderKL diffusers folder (config.json + weights), such "
                                  "as stabilityai/sd-vae-ft-mse, nor a VAE file")
    return AutoencoderKL.from_pretrained(str(folder), dtype=dtype, variant=_variant(folder)).eval() \
        .requires_grad_(False)


def _single_file_vae(path: Path, dtype):
    """An original-layout VAE file: its shapes give the architecture (SD's VAE: 4 levels of 128-512
    channels, 4 latent channels), diffusers' converter the names."""
    import torch
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    if path.suffix.lower() in (".safetensors", ".sft"):
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
    state = {k[len("first_stage_model."):] if k.startswith("first_stage_model.") else k: v for k, v in state.items()}
    levels = sorted({int(k.split(".")[2]) for k in state if k.startswith("encoder.down.")})
    if not levels or "encoder.conv_in.weight" not in state or "quant_conv.weight" not in state:
        raise CatVTONWeightsError(f"{path.name} is not a Stable Diffusion VAE file (no encoder.down.* / quant_conv "
                                  "weights); use sd-vae-ft-mse (a diffusers folder or vae-ft-mse-840000-ema-pruned)")
    blocks = {int(k.split(".")[4]) for k in state if k.startswith("encoder.down.0.block.")}
    config = {"in_channels": state["encoder.conv_in.weight"].shape[1],
              "out_channels": state["decoder.conv_out.weight"].shape[0],
              "down_block_types": ["DownEncoderBlock2D"] * len(levels),
              "up_block_types": ["UpDecoderBlock2D"] * len(levels),
              "block_out_channels": [state[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] for i in levels],
              "layers_per_block": len(blocks), "latent_channels": state["quant_conv.weight"].shape[0] // 2,
              "norm_num_groups": 32, "scaling_factor": 0.18215, "sample_size": 512}
    vae = AutoencoderKL(**config)
    vae.load_state_dict(convert_ldm_vae_checkpoint(state, config), strict=True)
    return vae.to(dtype).eval().requires_grad_(False)


def ddim_scheduler(base: Path):
    """DDIM on the base model's training schedule (its scheduler/ config when there is one)."""
    from diffusers import DDIMScheduler

    values = dict(SD15_SCHEDULE)
    for config in (base / "scheduler" / "scheduler_config.json", base.parent / "scheduler" / "scheduler_config.json"):
        if config.is_file():
            values.update({k: v for k, v in json.loads(config.read_text()).items() if not k.startswith("_")})
            break
    accepted = set(inspect.signature(DDIMScheduler.__init__).parameters)
    return DDIMScheduler(**{k: v for k, v in values.items() if k in accepted})


__all__ = ["ATTENTION_FAMILY", "CatVTONWeightsError", "DEFAULT_ATTENTION", "DEFAULT_UNET", "DEFAULT_VAE",
           "DEFAULT_VERSION", "RELEASE_LAYOUT", "SPECS", "SkipCrossAttention", "Slot", "UNET_FAMILY", "VAE_FAMILY",
           "VERSIONS", "attention_file", "ddim_scheduler", "disable_cross_attention", "load_attention_weights",
           "load_unet", "load_vae", "map_release_keys", "release_slots", "unet_folder", "version_of"]

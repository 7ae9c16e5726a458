"""IP-Adapter (image prompt) on the SDXL inpainting pipeline, through diffusers' own loader.

The weights are h94/IP-Adapter's SDXL files (Apache-2.0, tencent-ailab/IP-Adapter): a small
projection from a CLIP image embedding to 4 (base) or 16 ("plus") extra tokens, and an extra
key/value pair in every cross-attention layer. diffusers' ``pipe.load_ip_adapter`` builds them; we
give it the state dict and the image encoder ourselves, so any of these layouts works offline:

* h94's repository layout (what the specs download, inside ``ipadapter/<spec key>/``):
  ``sdxl_models/ip-adapter_sdxl.safetensors`` with its OpenCLIP ViT-bigG encoder in
  ``sdxl_models/image_encoder/``, and the ``*_vit-h`` files whose ViT-H encoder is in
  ``models/image_encoder/``;
* ComfyUI IP-Adapter users' layout: the adapter file alone in ``models/ipadapter/`` and the encoder
  as one config-less file in ``models/clip_vision/`` (``CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors``
  or ``CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors``); the encoder's config is read off its shapes;
* explicit paths for both.

``IPAdapterSlot`` keeps every adapter it loaded on its pipeline and switches between them and "no
adapter" by swapping attention processors, so one cached pipeline serves runs with and without a
reference image without reloading. The adapter modules live in a ``ModuleDict`` that the model
store moves with the pipeline.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models import ModelSpec, register_family_folders, register_spec, resolve
from ..models.paths import folder_dirs

log = logging.getLogger(__name__)

FAMILY = "ipadapter_sdxl"
FOLDER = "ipadapter"
ENCODER_FAMILY = "ipadapter_image_encoder"
ENCODER_FOLDER = "clip_vision"
DEFAULT_ADAPTER = "ip-adapter_sdxl"
REPO = "h94/IP-Adapter"

# spec key -> (adapter file in the repo, image encoder folder in the repo, size in GB)
_LAYOUT = {
    "ip-adapter_sdxl": ("sdxl_models/ip-adapter_sdxl.safetensors", "sdxl_models/image_encoder", 4.4),
    "ip-adapter_sdxl_vit-h": ("sdxl_models/ip-adapter_sdxl_vit-h.safetensors", "models/image_encoder", 3.2),
    "ip-adapter-plus_sdxl_vit-h": ("sdxl_models/ip-adapter-plus_sdxl_vit-h.safetensors", "models/image_encoder", 3.5),
}
for _key, (_file, _encoder, _size) in _LAYOUT.items():
    register_spec(ModelSpec(
        key=_key, family=FAMILY, folder=FOLDER, repo_id=REPO,
        required_files=(_file.rsplit(".", 1)[0] + ".*", f"{_encoder}/config.json", f"{_encoder}/*.safetensors"),
        allow_patterns=(_file, f"{_encoder}/config.json", f"{_encoder}/model.safetensors"),
        licence="Apache-2.0", size_gb=_size,
        notes="IP-Adapter for SDXL with its CLIP image encoder, in h94/IP-Adapter's layout"))
register_family_folders(FAMILY, FOLDER)
register_family_folders(ENCODER_FAMILY, ENCODER_FOLDER, FOLDER)

# The names ComfyUI IP-Adapter users give the two encoders in models/clip_vision.
ENCODER_FILE_NAMES = {
    "bigG": ("CLIP-ViT-bigG-14-laion2B-39B-b160k.safetensors", "clip_vision_g.safetensors"),
    "vit-h": ("CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors", "clip_vision_h.safetensors"),
}


class IPAdapterError(ValueError):
    """An IP-Adapter or image encoder that cannot be found or does not fit; the message says what to do."""


@dataclass(frozen=True)
class AdapterFiles:
    weights: Path        # the adapter's .safetensors / .bin
    image_encoder: Path  # a save_pretrained folder, or one config-less .safetensors file


def encoder_kind(weights: Path) -> str:
    """Which CLIP image encoder an h94 SDXL adapter was trained with, from its name ("vit-h" or "bigG")."""
    return "vit-h" if "vit-h" in weights.name.lower() else "bigG"


def _weights_in(folder: Path, spec_key: str | None) -> Path:
    if spec_key in _LAYOUT:
        stem = folder / _LAYOUT[spec_key][0].rsplit(".", 1)[0]
        for suffix in (".safetensors", ".bin"):
            if stem.with_suffix(suffix).is_file():
                return stem.with_suffix(suffix)
    found = sorted(p for p in folder.rglob("ip-adapter*") if p.suffix in (".safetensors", ".bin"))
    if len(found) != 1:
        raise IPAdapterError(f"IP-Adapter folder {folder}: expected one ip-adapter*.safetensors/.bin file, found "
                             f"{[str(p.relative_to(folder)) for p in found] or 'none'}; name the file instead")
    return found[0]


def _encoder_beside(weights: Path) -> Path | None:
    """h94's layout: sdxl_models/image_encoder for bigG adapters, models/image_encoder for ViT-H ones."""
    if encoder_kind(weights) == "vit-h":
        candidates = [weights.parent.parent / "models" / "image_encoder", weights.parent / "image_encoder"]
    else:
        candidates = [weights.parent / "image_encoder"]
    return next((c for c in candidates if (c / "config.json").is_file()), None)


def locate(adapter: str = DEFAULT_ADAPTER, image_encoder: str | None = None) -> AdapterFiles:
    """The files of an IP-Adapter choice (spec key, file or folder in the ``ipadapter`` folder, a
    path or a hub id) and of its image encoder (``image_encoder``: a choice in ``clip_vision`` or a
    path; None finds it beside the adapter or by its usual name in ``clip_vision``)."""
    resolved = resolve(adapter, FAMILY)
    spec_key = resolved.spec.key if resolved.spec is not None else None
    weights = resolved.path if resolved.path.is_file() else _weights_in(resolved.path, spec_key)
    if image_encoder:
        return AdapterFiles(weights, resolve(image_encoder, ENCODER_FAMILY).path)
    beside = _encoder_beside(weights)
    if beside is not None:
        return AdapterFiles(weights, beside)
    kind = encoder_kind(weights)
    for directory in folder_dirs(ENCODER_FOLDER):
        for name in ENCODER_FILE_NAMES[kind]:
            for candidate in (directory / name, directory / name.rsplit(".", 1)[0]):
                if candidate.is_file() or (candidate / "config.json").is_file():
                    return AdapterFiles(weights, candidate)
    searched = ", ".join(str(d) for d in folder_dirs(ENCODER_FOLDER))
    raise IPAdapterError(
        f"IP-Adapter {weights.name} needs its CLIP image encoder ({'ViT-H-14' if kind == 'vit-h' else 'ViT-bigG-14'}). "
        f"Put {ENCODER_FILE_NAMES[kind][0]} in one of: {searched}; or keep h94/IP-Adapter's layout "
        f"({'models/image_encoder' if kind == 'vit-h' else 'sdxl_models/image_encoder'}/ beside the adapter); "
        "or name the encoder with image_encoder=...")


# ---- loading -----------------------------------------------------------------------------------------

def load_adapter_state_dict(path: Path) -> dict:
    """``{"image_proj": {...}, "ip_adapter": {...}}`` from h94's flat safetensors or nested .bin."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        flat = load_file(str(path))
        state = {"image_proj": {}, "ip_adapter": {}}
        for key, tensor in flat.items():
            group, _, rest = key.partition(".")
            if group in state:
                state[group][rest] = tensor
    else:
        import torch

        state = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not state.get("image_proj") or not state.get("ip_adapter"):
        raise IPAdapterError(f"{path.name} is not an IP-Adapter file (no image_proj.* and ip_adapter.* weights)")
    return state


def check_fits(state: dict, unet, name: str) -> None:
    """Refuse an adapter made for another UNet (SD-1.5 adapters on SDXL, ...) with a clear message."""
    cross = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    pairs = {k.split(".")[0] for k in state["ip_adapter"] if k.endswith("to_k_ip.weight")}
    widths = {tuple(v.shape)[1] for k, v in state["ip_adapter"].items() if k.endswith("to_k_ip.weight")}
    if len(pairs) != len(cross) or widths != {unet.config.cross_attention_dim}:
        raise IPAdapterError(
            f"IP-Adapter {name} does not fit this model: it has {len(pairs)} cross-attention layers of width "
            f"{sorted(widths)}, the UNet has {len(cross)} of width {unet.config.cross_attention_dim}. Use an SDXL "
            "IP-Adapter (h94/IP-Adapter sdxl_models/*) with an SDXL inpainting model")


_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}  # CLIP ViT-B, ViT-L, ViT-H, ViT-bigG


def clip_vision_config_from_shapes(state: dict):
    """A ``CLIPVisionConfig`` for a config-less ``CLIPVisionModelWithProjection`` state dict.

    Widths, depth, patch and image size come from the shapes; the head count from the known CLIP
    widths (64-wide heads otherwise); the 768/1024-wide ones are taken for OpenAI's B/L (quick_gelu),
    the others for OpenCLIP's H/bigG (gelu), which are the encoders IP-Adapter uses."""
    from transformers import CLIPVisionConfig

    prefix = "vision_model."
    try:
        patch = state[prefix + "embeddings.patch_embedding.weight"].shape
        positions = state[prefix + "embeddings.position_embedding.weight"].shape[0]
        projection = state["visual_projection.weight"].shape[0]
        intermediate = state[prefix + "encoder.layers.0.mlp.fc1.weight"].shape[0]
    except KeyError as exc:
        raise IPAdapterError(f"not a CLIP vision model with projection (no {exc.args[0]})") from None
    hidden = patch[0]
    layers = len({int(m.group(1)) for k in state if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.", k))})
    grid = int(round((positions - 1) ** 0.5))
    return CLIPVisionConfig(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                            num_attention_heads=_HEADS.get(hidden, max(1, hidden // 64)), patch_size=patch[2],
                            image_size=grid * patch[2], projection_dim=projection, layer_norm_eps=1e-5,
                            hidden_act="quick_gelu" if hidden in (768, 1024) else "gelu")


def load_image_encoder(path: Path, dtype):
    """A ``CLIPVisionModelWithProjection`` from a save_pretrained folder or one config-less file."""
    from transformers import CLIPVisionModelWithProjection

    if path.is_dir():
        return CLIPVisionModelWithProjection.from_pretrained(str(path), dtype=dtype).eval()
    from safetensors.torch import load_file

    state = load_file(str(path))
    config = clip_vision_config_from_shapes(state)
    # from_pretrained with a state dict: no random initialisation of a 2 GB encoder before loading.
    model, info = CLIPVisionModelWithProjection.from_pretrained(None, config=config, state_dict=state, dtype=dtype,
                                                                output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.endswith("position_ids")]
    unexpected = [k for k in info["unexpected_keys"] if not k.endswith("position_ids")]
    if missing or unexpected:
        raise IPAdapterError(f"{path.name} is not a CLIP vision model with projection: missing {sorted(missing)[:3]}, "
                             f"unexpected {sorted(unexpected)[:3]}")
    return model.eval()


def feature_extractor_for(encoder):
    from transformers import CLIPImageProcessor

    size = encoder.config.image_size
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


# ---- switching adapters on one pipeline -------------------------------------------------------------------

class IPAdapterSlot:
    """The IP-Adapters attached to one SDXL inpainting pipeline, and which one (if any) is on."""

    def __init__(self, pipe, container):
        self.pipe = pipe
        self.container = container  # torch.nn.ModuleDict the store moves with the pipeline
        self._base_processors = None
        self._loaded: dict[tuple[str, str], dict] = {}
        self.active: tuple[str, str] | None = None
        self._lock = threading.Lock()

    def activate(self, files: AdapterFiles, scale: float) -> None:
        """Switch ``files``' adapter on at ``scale`` (loading it the first time)."""
        key = (str(files.weights), str(files.image_encoder))
        with self._lock:
            if key not in self._loaded:
                self._load(key, files)
            if self.active != key:
                self._switch_on(self._loaded[key])
                self.active = key
            self.pipe.set_ip_adapter_scale(float(scale))

    def deactivate(self) -> None:
        """Back to the plain pipeline (the adapters stay loaded for the next reference image)."""
        with self._lock:
            self._deactivate()

    def _deactivate(self) -> None:
        if self.active is None:
            return
        unet = self.pipe.unet
        unet.set_attn_processor(dict(self._base_processors))
        unet.encoder_hid_proj = None
        unet.config.encoder_hid_dim_type = None  # what diffusers' own unload_ip_adapter does
        self.active = None

    def _load(self, key, files: AdapterFiles) -> None:
        import torch

        unet = self.pipe.unet
        if self._base_processors is None:
            self._base_processors = dict(unet.attn_processors)
        self._deactivate()
        state = load_adapter_state_dict(files.weights)
        check_fits(state, unet, files.weights.name)
        encoder = load_image_encoder(files.image_encoder, unet.dtype).to(unet.device)
        self.pipe.register_modules(image_encoder=encoder, feature_extractor=feature_extractor_for(encoder))
        self.pipe.load_ip_adapter(state, subfolder="", weight_name=files.weights.name, image_encoder_folder=None)
        processors = dict(unet.attn_processors)
        entry = {"processors": processors, "projection": unet.encoder_hid_proj, "image_encoder": encoder,
                 "feature_extractor": self.pipe.feature_extractor}
        self.container[str(len(self.container))] = torch.nn.ModuleDict({
            "processors": torch.nn.ModuleList([p for p in processors.values() if isinstance(p, torch.nn.Module)]),
            "projection": unet.encoder_hid_proj, "image_encoder": encoder})
        self._loaded[key] = entry
        self.active = key
        log.info("IP-Adapter %s loaded (image encoder %s)", files.weights.name, files.image_encoder.name)

    def _switch_on(self, entry: dict) -> None:
        unet = self.pipe.unet
        unet.set_attn_processor(dict(entry["processors"]))
        unet.encoder_hid_proj = entry["projection"]
        unet.config.encoder_hid_dim_type = "ip_image_proj"
        self.pipe.register_modules(image_encoder=entry["image_encoder"], feature_extractor=entry["feature_extractor"])


def reference_to_pil(reference, name: str = "ip_adapter_image"):
    """A reference image (float/uint8 RGB or RGBA array, or PIL) as 8-bit RGB PIL. Transparent parts
    become white: a cut-out on white is how such references are usually shown, and black would add a
    dark halo the encoder reads as part of the object."""
    from PIL import Image

    from .imaging import ImageInputError, rgb_to_pil, to_rgb_array

    if isinstance(reference, Image.Image):
        if reference.mode in ("RGBA", "LA", "PA") or (reference.mode == "P" and "transparency" in reference.info):
            rgba = np.asarray(reference.convert("RGBA"), dtype=np.float32) / 255.0
            return rgb_to_pil(rgba[..., :3] * rgba[..., 3:4] + (1.0 - rgba[..., 3:4]))
        return rgb_to_pil(to_rgb_array(reference, name))
    array = np.asarray(reference)
    if array.ndim == 3 and array.shape[-1] in (2, 4):
        unit = to_rgb_array(array[..., :-1] if array.shape[-1] == 4 else array[..., :1], name)
        alpha = to_rgb_array(array[..., -1:], name)[..., :1]
        return rgb_to_pil(unit * alpha + (1.0 - alpha))
    try:
        return rgb_to_pil(to_rgb_array(array, name))
    except ImageInputError:
        raise
    except (TypeError, ValueError) as exc:
        raise ImageInputError(f"{name}: not an image ({exc})") from None


__all__ = [
    "AdapterFiles", "DEFAULT_ADAPTER", "ENCODER_FAMILY", "ENCODER_FILE_NAMES", "FAMILY", "FOLDER", "IPAdapterError",
    "IPAdapterSlot", "check_fits", "clip_vision_config_from_shapes", "encoder_kind", "feature_extractor_for",
    "load_adapter_state_dict", "load_image_encoder", "locate", "reference_to_pil",
]

"""ObjectClear weights: the model we know, what its folder must hold, and how to load it.

``jixin0101/ObjectClear`` (NTU S-Lab License 1.0, non-commercial) is a diffusers SDXL-inpainting
folder (unet, vae, text encoders, tokenizers, scheduler) fine-tuned end to end, plus:

* ``image_prompt_encoder/``: a ``CLIPModel`` (CLIP ViT-L/14); its vision tower and projection turn
  the object's pixels into one embedding;
* ``postfuse_module/model.safetensors``: a small MLP (our ``PostFuse`` below) that maps that
  embedding to the width of SDXL's prompt embedding (768 + 1280 = 2048), where it replaces the word
  "object" of the fixed prompt.

Every component exists as fp32 ``*.safetensors`` and fp16 ``*.fp16.safetensors``; whichever is
present is loaded (fp32 first) and cast to the device's dtype. The post-fuse widths are read from
the tensors' shapes, never assumed, so any CLIP/SDXL pairing (and the tiny test copies) load.

The folder goes in ComfyUI's ``models/objectclear/ObjectClear`` (a diffusers folder of the same
layout in ``models/diffusers`` is found too).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import ModelSpec, register_family_folders, register_spec
from ..models.paths import folder_dirs
from ..models.resolve import missing_files
from .inpaint_loader import SDXL, folder_family, load_folder

log = logging.getLogger(__name__)

FAMILY = "objectclear"
FOLDER = "objectclear"
DEFAULT_MODEL = "ObjectClear"
REPO_ID = "jixin0101/ObjectClear"
LICENCE = "NTU S-Lab License 1.0 (non-commercial use only)"
PROMPT = "remove the instance of object"   # the fixed prompt the model was trained with
OBJECT_WORD = "object"                      # the word whose embedding the object embedding replaces
ENCODER_DIR = "image_prompt_encoder"
POSTFUSE_DIR = "postfuse_module"
WEIGHT_NAMES = ("model.safetensors", "model.fp16.safetensors")
# CLIP's pixel normalisation (the object encoder was trained with it).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

REQUIRED_FILES = (
    "model_index.json", "unet/config.json", "unet/diffusion_pytorch_model*.safetensors", "vae/config.json",
    "vae/diffusion_pytorch_model*.safetensors", "text_encoder/config.json", "text_encoder/model*.safetensors",
    "text_encoder_2/config.json", "text_encoder_2/model*.safetensors", "tokenizer/*", "tokenizer_2/*",
    "scheduler/scheduler_config.json", f"{ENCODER_DIR}/config.json", f"{ENCODER_DIR}/model*.safetensors",
    f"{POSTFUSE_DIR}/model*.safetensors")
SPEC = ModelSpec(
    key=DEFAULT_MODEL, family=FAMILY, folder=FOLDER, repo_id=REPO_ID, required_files=REQUIRED_FILES,
    # The fp16 copies only (half the download); loaded in whatever dtype the device uses.
    allow_patterns=("model_index.json", "*/config.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*",
                    "*/*.fp16.safetensors"),
    licence=LICENCE, size_gb=7.8,
    notes="ObjectClear (CVPR 2026): removes an object with its shadow and reflection. Non-commercial licence")
register_spec(SPEC)
register_family_folders(FAMILY, FOLDER, "diffusers")


class ObjectClearModelError(ValueError):
    """Files that are not a loadable ObjectClear model; the message says what is missing and where."""


# ---- the post-fuse module -------------------------------------------------------------------------

def _post_fuse_class():
    import torch
    from torch import nn

    class Block(nn.Module):
        """LayerNorm -> Linear -> GELU -> Linear, with an optional residual (the checkpoint's "mlp1"/"mlp2")."""

        def __init__(self, width_in: int, width_hidden: int, width_out: int, residual: bool):
            super().__init__()
            self.layernorm = nn.LayerNorm(width_in)
            self.fc1 = nn.Linear(width_in, width_hidden)
            self.fc2 = nn.Linear(width_hidden, width_out)
            self.residual = residual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.fc2(nn.functional.gelu(self.fc1(self.layernorm(x))))
            return x + y if self.residual else y

    class PostFuse(nn.Module):
        """Object embedding (CLIP projection width) -> one prompt-token embedding (SDXL text width)."""

        def __init__(self, image_width: int, hidden_width: int, text_width: int, hidden_width_2: int):
            super().__init__()
            self.mlp1 = Block(image_width, hidden_width, text_width, residual=False)
            self.mlp2 = Block(text_width, hidden_width_2, text_width, residual=True)
            self.layer_norm = nn.LayerNorm(text_width)

        @property
        def text_width(self) -> int:
            return self.layer_norm.normalized_shape[0]

        def forward(self, object_embedding: torch.Tensor) -> torch.Tensor:
            return self.layer_norm(self.mlp2(self.mlp1(object_embedding)))

    return PostFuse


def make_post_fuse(image_width: int, text_width: int, hidden_width: int | None = None,
                   hidden_width_2: int | None = None):
    """A randomly initialised post-fuse module of the given widths (hidden widths default to the text
    width, as in the released model: 768 -> 2048 -> 2048)."""
    return _post_fuse_class()(image_width, hidden_width or text_width, text_width, hidden_width_2 or text_width)


def _weights_file(folder: Path, what: str) -> Path:
    for name in WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise ObjectClearModelError(
        f"{what}: {folder} has neither {' nor '.join(WEIGHT_NAMES)}. Download {POSTFUSE_DIR if what == 'post-fuse module' else ENCODER_DIR}/ "
        f"from https://huggingface.co/{REPO_ID} (either file) into that folder ({LICENCE}).")


def load_post_fuse(folder: Path, dtype):
    """Our post-fuse module with the checkpoint's weights; widths from the tensor shapes."""
    from safetensors.torch import load_file

    path = _weights_file(folder, "post-fuse module")
    state = load_file(str(path))
    needed = ("mlp1.fc1.weight", "mlp1.fc2.weight", "mlp2.fc1.weight", "layer_norm.weight")
    absent = [k for k in needed if k not in state]
    if absent:
        raise ObjectClearModelError(f"{path} is not an ObjectClear post-fuse module: it lacks {', '.join(absent)}")
    hidden, image_width = state["mlp1.fc1.weight"].shape
    text_width = state["mlp1.fc2.weight"].shape[0]
    hidden_2 = state["mlp2.fc1.weight"].shape[0]
    module = make_post_fuse(image_width, text_width, hidden, hidden_2)
    module.load_state_dict(state, strict=True)
    return module.to(dtype=dtype).eval()


def load_object_encoder(folder: Path, dtype):
    """The CLIP model of ``image_prompt_encoder/`` (fp32 or fp16 file)."""
    from transformers import CLIPModel

    if not (folder / "config.json").is_file():
        raise ObjectClearModelError(f"object encoder: {folder} has no config.json; download {ENCODER_DIR}/ from "
                                    f"https://huggingface.co/{REPO_ID}")
    path = _weights_file(folder, "object encoder")
    kwargs = {"variant": "fp16"} if path.name.endswith(".fp16.safetensors") else {}
    return CLIPModel.from_pretrained(str(folder), dtype=dtype, **kwargs).eval()


# ---- the whole model ----------------------------------------------------------------------------------

@dataclass
class ObjectClearParts:
    """What the model store caches for ObjectClear."""

    pipe: Any              # StableDiffusionXLInpaintPipeline (unet, vae, text encoders, tokenizers, scheduler)
    object_encoder: Any    # transformers CLIPModel (vision tower + projection used)
    post_fuse: Any         # PostFuse
    token_index: int       # where "object" sits in the tokenised fixed prompt

    def torch_modules(self) -> list:
        import torch

        modules = [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]
        return modules + [self.object_encoder, self.post_fuse]


def object_token_index(tokenizer, prompt: str = PROMPT, word: str = OBJECT_WORD) -> int:
    """The position of ``word`` in the tokenised ``prompt`` (start token included): 5 for CLIP's
    tokenizer and "remove the instance of object". It must be a single token."""
    word_ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(word_ids) != 1:
        raise ObjectClearModelError(f"tokenizer: {word!r} is {len(word_ids)} tokens, not one; this tokenizer "
                                    "is not ObjectClear's (CLIP) tokenizer")
    ids = list(tokenizer(prompt).input_ids)
    if ids.count(word_ids[0]) != 1:
        raise ObjectClearModelError(f"tokenizer: {word!r} does not occur exactly once in {prompt!r}")
    return ids.index(word_ids[0])


def check_folder(path: Path) -> None:
    """A clear error for a folder that is not ObjectClear's layout (before any weights load)."""
    if not path.is_dir():
        raise ObjectClearModelError(f"{path} is not a folder; ObjectClear is a folder in {REPO_ID}'s layout")
    if folder_family(path) != SDXL:
        raise ObjectClearModelError(f"{path.name}: its UNet is not an SDXL inpainting UNet")
    missing = missing_files(path, REQUIRED_FILES[-3:])
    if missing:
        raise ObjectClearModelError(
            f"{path} lacks {', '.join(missing)}: it is an SDXL inpainting folder without ObjectClear's object "
            f"encoder / post-fuse module. Download them from https://huggingface.co/{REPO_ID} "
            f"({ENCODER_DIR}/ and {POSTFUSE_DIR}/, fp32 or *.fp16.safetensors) into {path} ({LICENCE}).")


def build_objectclear(resolved, device, dtype) -> ObjectClearParts:
    """The store's build function: everything on the CPU in ``dtype`` (``use()`` moves it)."""
    import torch

    path = Path(resolved.path)
    check_folder(path)
    pipe = load_folder(path, SDXL, dtype)
    pipe.set_progress_bar_config(disable=True)
    if dtype != torch.float16:
        pipe.vae.register_to_config(force_upcast=False)  # the fp32 round trip only matters in fp16
    encoder = load_object_encoder(path / ENCODER_DIR, dtype)
    post_fuse = load_post_fuse(path / POSTFUSE_DIR, dtype)
    index = object_token_index(pipe.tokenizer)
    if object_token_index(pipe.tokenizer_2) != index:
        raise ObjectClearModelError("tokenizer and tokenizer_2 place 'object' at different positions")
    text_width = int(pipe.unet.config.cross_attention_dim)
    if post_fuse.text_width != text_width:
        raise ObjectClearModelError(f"{POSTFUSE_DIR}: it outputs {post_fuse.text_width}-wide embeddings but the "
                                    f"UNet's prompt embeddings are {text_width} wide; the files are from different models")
    projection = int(encoder.config.projection_dim)
    if post_fuse.mlp1.layernorm.normalized_shape[0] != projection:
        raise ObjectClearModelError(f"{POSTFUSE_DIR} takes {post_fuse.mlp1.layernorm.normalized_shape[0]}-wide "
                                    f"object embeddings but {ENCODER_DIR} makes {projection}-wide ones")
    return ObjectClearParts(pipe, encoder, post_fuse, index)


def installed_path(choice: str = DEFAULT_MODEL) -> Path | None:
    """A complete local copy of ``choice`` (a path, or a name in the objectclear/diffusers folders),
    or None; never downloads. Used to pick the removal method."""
    candidates: list[Path] = []
    if choice.startswith("~") or Path(choice).is_absolute():
        candidates.append(Path(choice).expanduser())
    else:
        names = {choice, REPO_ID.split("/")[1]} if choice in (DEFAULT_MODEL, REPO_ID) else {choice}
        for key in (FOLDER, "diffusers"):
            for directory in folder_dirs(key):
                candidates.extend(directory / name for name in names)
                if choice in (DEFAULT_MODEL, REPO_ID):
                    snapshots = directory / "models--jixin0101--ObjectClear" / "snapshots"
                    if snapshots.is_dir():
                        candidates.extend(sorted(snapshots.iterdir()))
    for path in candidates:
        if path.is_dir() and not missing_files(path, REQUIRED_FILES):
            return path
    return None


__all__ = ["CLIP_MEAN", "CLIP_STD", "DEFAULT_MODEL", "FAMILY", "LICENCE", "ObjectClearModelError",
           "ObjectClearParts", "PROMPT", "REPO_ID", "SPEC", "build_objectclear", "check_folder", "installed_path",
           "load_object_encoder", "load_post_fuse", "make_post_fuse", "object_token_index"]

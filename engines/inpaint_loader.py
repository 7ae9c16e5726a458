"""Inpainting models: which ones we know, what a file or folder holds, and how to load it.

Two families share one engine (engines/inpaint.py):

* ``sd15_inpaint``: ``StableDiffusionInpaintPipeline`` models (SD-1.5 inpainting, PrefPaint, and
  other 9-channel SD-1.x/2.x inpainting UNets);
* ``sdxl_inpaint``: ``StableDiffusionXLInpaintPipeline`` models (SDXL inpainting 0.1 and fine-tunes).

Models come as diffusers folders (ComfyUI's ``diffusers`` folder, a local path, or a hub download)
or as single-file checkpoints in the original layout (ComfyUI's ``checkpoints`` folder). Each
component is loaded explicitly rather than through ``DiffusionPipeline.from_pretrained``, so that a
scheduler config naming a class diffusers does not have (PrefPaint's training-only
``DDIMSchedulerCustom``) never blocks loading: the scheduler is always built by us from the config's
numbers. No safety checker is loaded (the pipeline runs with ``safety_checker=None``): it would
black out whole outputs on false positives and cost 1.2 GB; users answer for their own content
under the models' licences. The SDXL invisible watermark is off: it would be applied to a crop
that is then pasted into an unmarked image.

Single files: diffusers' ``from_single_file`` needs the diffusers *configuration* of the
architecture (model_index.json, component config.json files, tokenizer files; about 2 MB, no
weights). It is taken from an installed diffusers copy of the matching known model (its config
files are enough), else from the Hugging Face cache, else downloaded once when downloads are
allowed; with downloads off and no copy, loading raises an error that says what to put where.
"""

from __future__ import annotations

import inspect
import json
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models import ModelNotFoundError, ModelSpec, register_family_folders, register_spec
from ..models.paths import folder_dirs
from ..models.resolve import downloads_allowed

log = logging.getLogger(__name__)

SD15 = "sd15_inpaint"
SDXL = "sdxl_inpaint"
FAMILIES = (SD15, SDXL)
DIFFUSERS_FOLDER = "diffusers"
CHECKPOINTS_FOLDER = "checkpoints"

_SD15_FILES = ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.*", "vae/config.json",
               "vae/diffusion_pytorch_model.*", "text_encoder/config.json", "text_encoder/*model*",
               "tokenizer/*", "scheduler/scheduler_config.json")
_SDXL_FILES = _SD15_FILES + ("text_encoder_2/config.json", "text_encoder_2/*model*", "tokenizer_2/*")
_CONFIGS = ("model_index.json", "*/config.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*")
SPECS = (
    ModelSpec(key="stable-diffusion-inpainting", family=SD15, folder=DIFFUSERS_FOLDER,
              repo_id="stable-diffusion-v1-5/stable-diffusion-inpainting", required_files=_SD15_FILES,
              # The repo's UNet and VAE come as fp32 pickles and fp16 safetensors: the safetensors are taken
              # (loaded in whatever dtype the device uses).
              allow_patterns=_CONFIGS + ("unet/*.safetensors", "vae/*.safetensors", "text_encoder/*.safetensors"),
              licence="CreativeML OpenRAIL-M", size_gb=2.6,
              notes="SD-1.5 inpainting (the live mirror of the removed runwayml/stable-diffusion-inpainting)"),
    ModelSpec(key="prefpaint-v1.0", family=SD15, folder=DIFFUSERS_FOLDER, repo_id="kd5678/prefpaint-v1.0",
              required_files=_SD15_FILES,
              # The repo's weight format is not pinned here: both names are allowed, whichever it has.
              allow_patterns=_CONFIGS + ("unet/diffusion_pytorch_model.*", "vae/diffusion_pytorch_model.*",
                                         "text_encoder/model.*", "text_encoder/pytorch_model.*"),
              licence="model card says only 'cc' (no version); the code repo has no licence file",
              size_gb=4.3,
              notes="PrefPaint: SD-1.5 inpainting fine-tuned on human preferences (NeurIPS 2024). Its scheduler "
                    "config names the training class DDIMSchedulerCustom; a standard DDIMScheduler is used"),
    ModelSpec(key="stable-diffusion-xl-1.0-inpainting-0.1", family=SDXL, folder=DIFFUSERS_FOLDER,
              repo_id="diffusers/stable-diffusion-xl-1.0-inpainting-0.1", required_files=_SDXL_FILES,
              # The fp16 copies (half the download; every component has one); loaded in the device's dtype.
              allow_patterns=_CONFIGS + ("unet/diffusion_pytorch_model.fp16.safetensors",
                                         "vae/diffusion_pytorch_model.fp16.safetensors",
                                         "text_encoder/model.fp16.safetensors",
                                         "text_encoder_2/model.fp16.safetensors"),
              licence="CreativeML OpenRAIL++-M", size_gb=6.9),
)
for _spec in SPECS:
    register_spec(_spec)
for _family in FAMILIES:
    register_family_folders(_family, DIFFUSERS_FOLDER, CHECKPOINTS_FOLDER)

# Per-model defaults (a missing key falls back to the family's).
FAMILY_DEFAULTS = {
    SD15: {"steps": 30, "guidance": 7.5, "strength": 1.0, "scheduler": "default", "eta": 0.0},
    # The SDXL inpainting card: quality drops at strength 1.0 (diffusers defaults to 0.9999).
    SDXL: {"steps": 25, "guidance": 8.0, "strength": 0.99, "scheduler": "default", "eta": 0.0},
}
MODEL_DEFAULTS = {
    # PrefPaint's README runs the pipeline with eta=1.0; it was trained with DDIM, 50 steps, guidance 7.
    "prefpaint-v1.0": {"steps": 50, "guidance": 7.5, "scheduler": "ddim", "eta": 1.0},
}
# Single-file architectures (diffusers' names, loaders/single_file_utils.py) -> family and config repo.
SINGLE_FILE_TYPES = {
    "inpainting": (SD15, "stable-diffusion-v1-5/stable-diffusion-inpainting"),
    "inpainting_v2": (SD15, "stabilityai/stable-diffusion-2-inpainting"),
    "xl_inpaint": (SDXL, "diffusers/stable-diffusion-xl-1.0-inpainting-0.1"),
}


class InpaintModelError(ValueError):
    """Files that are not a loadable inpainting model; the message says what was found and what to do."""


def defaults_for(spec_key: str | None, family: str) -> dict[str, Any]:
    return {**FAMILY_DEFAULTS[family], **MODEL_DEFAULTS.get(spec_key or "", {})}


# ---- what is this file or folder? ------------------------------------------------------------------

class _ShapeView(Mapping):
    """A safetensors file's tensor names and shapes, read from its header only (no weights)."""

    class _Shape:
        def __init__(self, shape):
            self.shape = tuple(shape)

    def __init__(self, path: Path):
        with open(path, "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        self._shapes = {k: v["shape"] for k, v in header.items() if k != "__metadata__"}

    def __getitem__(self, key):
        return self._Shape(self._shapes[key])

    def __iter__(self):
        return iter(self._shapes)

    def __len__(self):
        return len(self._shapes)


def _single_file_tensors(path: Path) -> Mapping:
    if path.suffix.lower() in (".safetensors", ".sft"):
        try:
            return _ShapeView(path)
        except (OSError, ValueError, struct.error) as exc:
            raise InpaintModelError(f"{path} is not a readable safetensors file ({exc})") from None
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    return load_single_file_checkpoint(str(path), local_files_only=True)


def single_file_type(path: Path) -> str:
    """diffusers' architecture name for a single-file checkpoint ("inpainting", "xl_inpaint", ...)."""
    from diffusers.loaders.single_file_utils import CHECKPOINT_KEY_NAMES, infer_diffusers_model_type

    tensors = _single_file_tensors(path)
    first_conv = CHECKPOINT_KEY_NAMES["inpainting"]
    if first_conv not in tensors:
        raise InpaintModelError(f"{path.name} is not a Stable Diffusion checkpoint in the original layout "
                                f"(no {first_conv}); use a diffusers folder or an SD/SDXL inpainting checkpoint")
    channels = tensors[first_conv].shape[1]
    kind = infer_diffusers_model_type(tensors)
    if channels != 9 or kind not in SINGLE_FILE_TYPES:
        raise InpaintModelError(f"{path.name} is not an inpainting checkpoint: its UNet takes {channels} input "
                                f"channels (a {kind} model); inpainting models take 9 (latents, mask, masked image)")
    return kind


def folder_family(path: Path) -> str:
    """``sd15_inpaint`` or ``sdxl_inpaint`` for a diffusers folder, from its UNet config."""
    unet_config = path / "unet" / "config.json"
    if not unet_config.is_file():
        raise InpaintModelError(f"{path} is not a diffusers pipeline folder (no unet/config.json)")
    config = json.loads(unet_config.read_text())
    channels = config.get("in_channels")
    if channels != 9:
        raise InpaintModelError(f"{path.name} is not an inpainting model: its UNet takes {channels} input channels; "
                                "inpainting models take 9 (latents, mask, masked image)")
    return SDXL if config.get("addition_embed_type") == "text_time" else SD15


def looks_like_inpaint_model(path: Path) -> bool:
    """A cheap check for model lists: folders and safetensors files are inspected (configs and
    headers only); pickled checkpoints, which would have to be loaded whole, go by their name."""
    try:
        if path.is_dir():
            folder_family(path)
        elif path.suffix.lower() in (".safetensors", ".sft"):
            single_file_type(path)
        else:
            return "inpaint" in path.name.lower()
    except (InpaintModelError, OSError, ValueError):
        return False
    return True


def model_family(path: Path) -> str:
    if path.is_dir():
        return folder_family(path)
    return SINGLE_FILE_TYPES[single_file_type(path)][0]


# ---- schedulers ---------------------------------------------------------------------------------------

SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                 "use_karras_sigmas": False}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                        "use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
}
SCHEDULER_NAMES = ("default",) + tuple(SCHEDULERS)


@dataclass(frozen=True)
class SchedulerConfig:
    """The model's own scheduler: its class name (maybe one diffusers lacks) and its numbers."""

    class_name: str
    values: dict = field(default_factory=dict)


def read_scheduler_config(path: Path) -> SchedulerConfig:
    file = path / "scheduler" / "scheduler_config.json"
    if not file.is_file():
        return SchedulerConfig("DDIMScheduler", {})
    values = json.loads(file.read_text())
    return SchedulerConfig(str(values.get("_class_name", "DDIMScheduler")),
                           {k: v for k, v in values.items() if not k.startswith("_")})


def make_scheduler(name: str, base: SchedulerConfig):
    """A fresh scheduler: ``name`` from ``SCHEDULER_NAMES`` built on the model's training numbers
    (betas, timestep spacing, prediction type). "default" is the model's own class when diffusers has
    it, else DDIM."""
    import diffusers

    if name not in SCHEDULER_NAMES:
        raise ValueError(f"scheduler: {name!r} is not one of {', '.join(SCHEDULER_NAMES)}")
    if name == "default":
        cls, extra = getattr(diffusers, base.class_name, None), {}
        if cls is None or not hasattr(cls, "from_config") or not base.class_name.endswith("Scheduler"):
            log.info("scheduler class %s is not in diffusers (a training-only class); using DDIMScheduler "
                     "with its config", base.class_name)
            cls = diffusers.DDIMScheduler
    else:
        class_name, extra = SCHEDULERS[name]
        cls = getattr(diffusers, class_name)
    accepted = set(inspect.signature(cls.__init__).parameters)
    values = {k: v for k, v in base.values.items() if k in accepted}
    return cls(**{**values, **extra})


# ---- building pipelines ------------------------------------------------------------------------------

def _variant(folder: Path, plain: tuple[str, ...]) -> str | None:
    """None when the full-precision weights are there, "fp16" when only the fp16 copies are."""
    if any((folder / name).is_file() for name in plain):
        return None
    if any(folder.glob("*.fp16.*")):
        return "fp16"
    return None


def _diffusers_component(cls, path: Path, sub: str, dtype, device=None):
    variant = _variant(path / sub, ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))
    kwargs = {"device_map": str(device)} if device is not None and str(device) != "cpu" else {}
    return cls.from_pretrained(str(path), subfolder=sub, torch_dtype=dtype, variant=variant, **kwargs)


def _transformers_component(cls, path: Path, sub: str, dtype, device=None):
    """A text encoder, loaded once per (files, dtype) for every engine that asks (``models/shared.py``:
    SDXL inpainting, ObjectClear and SDXL text-to-image folders may hold the same encoders)."""
    from ..models.shared import shared_component

    variant = _variant(path / sub, ("model.safetensors", "pytorch_model.bin"))
    kwargs = {"variant": variant} if variant else {}
    if device is not None and str(device) != "cpu":
        kwargs["device_map"] = str(device)
    return shared_component(path / sub, dtype, lambda: cls.from_pretrained(str(path), subfolder=sub, dtype=dtype,
                                                                           **kwargs), variant=variant)


def _pipeline_flags(path: Path) -> dict:
    index = path / "model_index.json"
    values = json.loads(index.read_text()) if index.is_file() else {}
    return {k: values[k] for k in ("requires_aesthetics_score", "force_zeros_for_empty_prompt") if k in values}


def load_folder(path: Path, family: str, dtype, device=None):
    """The pipeline of a diffusers folder, each component loaded on its own (see the module doc).

    ``device``: where the weights are loaded straight to (``models.load_device`` says whether they
    fit); None or the CPU loads them on the CPU."""
    from diffusers import (AutoencoderKL, StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    scheduler = make_scheduler("default", read_scheduler_config(path))
    unet = _diffusers_component(UNet2DConditionModel, path, "unet", dtype, device)
    vae = _diffusers_component(AutoencoderKL, path, "vae", dtype, device)
    text_encoder = _transformers_component(CLIPTextModel, path, "text_encoder", dtype, device)
    tokenizer = CLIPTokenizer.from_pretrained(str(path), subfolder="tokenizer")
    if family == SD15:
        return StableDiffusionInpaintPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                              scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                              requires_safety_checker=False)
    return StableDiffusionXLInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        text_encoder_2=_transformers_component(CLIPTextModelWithProjection, path, "text_encoder_2", dtype, device),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(path), subfolder="tokenizer_2"),
        add_watermarker=False, **_pipeline_flags(path))


def _has_configs(path: Path, family: str) -> bool:
    names = ["model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
             "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"]
    if family == SDXL:
        names += ["text_encoder_2/config.json", "tokenizer_2/tokenizer_config.json"]
    return all((path / name).is_file() for name in names)


def config_source(kind: str) -> tuple[str, Path | None]:
    """Where the diffusers configuration of a single-file architecture comes from: (folder or repo id,
    local folder or None). Installed copies of known models of the family come first."""
    family, repo_id = SINGLE_FILE_TYPES[kind]
    from ..models.registry import specs_for

    names = [spec.key for spec in specs_for(family) if kind != "inpainting_v2"] + [repo_id.split("/")[1]]
    for directory in folder_dirs(DIFFUSERS_FOLDER):
        for name in names:
            candidate = directory / name
            if candidate.is_dir() and _has_configs(candidate, family):
                return str(candidate), candidate
    return repo_id, None


def load_single_file(path: Path, dtype):
    """The pipeline of an original-layout checkpoint (configuration: see ``config_source``)."""
    from diffusers import StableDiffusionInpaintPipeline, StableDiffusionXLInpaintPipeline

    kind = single_file_type(path)
    family, repo_id = SINGLE_FILE_TYPES[kind]
    config, local = config_source(kind)
    allowed, why = downloads_allowed()
    if local is None and not allowed:
        searched = ", ".join(str(d) for d in folder_dirs(DIFFUSERS_FOLDER))
        raise ModelNotFoundError(
            f"Checkpoint {path.name} ({kind}) needs the diffusers configuration of {repo_id} (model_index.json, "
            f"the */config.json files, scheduler/ and tokenizer files, about 2 MB, no weights) and {why}. Put a "
            f"diffusers copy of https://huggingface.co/{repo_id} (its config and tokenizer files are enough) in a "
            f"folder named {repo_id.split('/')[1]} in one of: {searched}; or allow downloads once.",
            choice=str(path), family=family, repo_id=repo_id)
    scheduler_base = read_scheduler_config(local) if local is not None else SchedulerConfig("DDIMScheduler", {})
    kwargs: dict[str, Any] = {"config": config, "torch_dtype": dtype, "local_files_only": local is not None,
                              "scheduler": make_scheduler("default", scheduler_base)}
    if family == SD15:
        cls = StableDiffusionInpaintPipeline
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    else:
        cls = StableDiffusionXLInpaintPipeline
        kwargs.update(add_watermarker=False)
    pipe = cls.from_single_file(str(path), **kwargs)
    if local is None:  # the configuration came from the hub: take the scheduler numbers from it too
        from huggingface_hub import hf_hub_download

        config_file = hf_hub_download(repo_id, "scheduler/scheduler_config.json")
        pipe.scheduler = make_scheduler("default", read_scheduler_config(Path(config_file).parent.parent))
    return pipe


def scheduler_base_for(path: Path, pipe) -> SchedulerConfig:
    """The scheduler numbers a loaded pipeline was trained with."""
    if path.is_dir():
        return read_scheduler_config(path)
    return SchedulerConfig(type(pipe.scheduler).__name__,
                           {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")})


__all__ = [
    "CHECKPOINTS_FOLDER", "DIFFUSERS_FOLDER", "FAMILIES", "InpaintModelError", "MODEL_DEFAULTS", "SCHEDULER_NAMES",
    "SD15", "SDXL", "SPECS", "SchedulerConfig", "config_source", "defaults_for", "folder_family", "load_folder",
    "load_single_file", "looks_like_inpaint_model", "make_scheduler", "model_family", "read_scheduler_config",
    "scheduler_base_for", "single_file_type",
]

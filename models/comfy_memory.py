"""Cooperation with ComfyUI's model management; inert outside ComfyUI.

Inside ComfyUI every loaded model is registered with ``comfy.model_management`` so that, when any
node needs GPU memory, ComfyUI can unload what is idle. We take part the way core's own
non-diffusion models do (upscalers, CLIP vision, background removal): each of our models is
wrapped in a ``comfy.model_patcher.ModelPatcher`` and loaded with
``model_management.load_models_gpu([patcher])`` before each use. That call makes room on the
device (unloading other models as needed) and moves our weights there; later, when ComfyUI frees
memory for another model (``free_memory``, ``unload_all_models``), it moves our weights back to
the offload device and drops the patcher from its list, and our next use loads it again.

Two details of ``ModelPatcher`` decide how we wrap:

* it assigns ``model.device``, which transformers and diffusers models expose as a read-only
  property, so the patcher gets a small holder module (with a plain ``device`` attribute) whose
  children are the real modules;
* with a partial budget it leaves modules that lack ComfyUI's cast-on-the-fly ops on the CPU, which
  would break a plain torch model mid-forward; we always load fully (``force_full_load=True``),
  after ComfyUI has made room.

"Inside ComfyUI" means ComfyUI has already imported ``comfy.model_management``. We never import
it ourselves: its import picks devices from ComfyUI's command line and fails on a machine with a
CUDA build of torch but no GPU unless ``--cpu`` was given.
"""

from __future__ import annotations

import logging
import sys
from types import ModuleType
from typing import Callable, Sequence

import torch

log = logging.getLogger(__name__)


def model_management() -> ModuleType | None:
    """``comfy.model_management`` when running inside ComfyUI, else None."""
    from .paths import attached_to_comfy

    return sys.modules.get("comfy.model_management") if attached_to_comfy() else None


def active() -> bool:
    return model_management() is not None


def forced_dtype() -> torch.dtype | None:
    """The dtype ComfyUI was told to use for everything (``--force-fp32`` / ``--force-fp16``), if any."""
    cli_args = sys.modules.get("comfy.cli_args")
    args = getattr(cli_args, "args", None)
    if args is None:
        return None
    if getattr(args, "force_fp32", False):
        return torch.float32
    if getattr(args, "force_fp16", False):
        return torch.float16
    return None


def offload_device() -> torch.device:
    """Where idle weights live: ComfyUI's offload device inside ComfyUI (CPU unless --gpu-only), else CPU."""
    mm = model_management()
    if mm is not None:
        return torch.device(mm.unet_offload_device())
    return torch.device("cpu")


def make_room(nbytes: int, device: torch.device | str) -> int:
    """Ask ComfyUI to unload idle models until ``nbytes`` (plus its reserve) are free on ``device``.

    Returns how many models ComfyUI unloaded; 0 outside ComfyUI or on the CPU.
    """
    mm = model_management()
    device = torch.device(device)
    if mm is None or device.type in ("cpu", "meta"):
        return 0
    unloaded = mm.free_memory(int(nbytes) + mm.extra_reserved_memory(), device)
    return len(unloaded or ())


class AgenticEditModel(torch.nn.Module):
    """One module for ComfyUI's patcher to manage, holding the real modules as children.
    (ComfyUI's log names models by class: "Requested to load AgenticEditModel".)"""

    def __init__(self, modules: Sequence[torch.nn.Module], device: torch.device, name: str):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)
        self.device = device   # a plain attribute: ModelPatcher writes it on every load/unload
        self.holder_name = name

    def __repr__(self) -> str:
        return f"AgenticEditModel({self.holder_name})"


class ComfyRegistration:
    """Our model as ComfyUI's model management sees it: a ModelPatcher it can load and unload."""

    def __init__(self, modules: Sequence[torch.nn.Module], load_device: torch.device,
                 offload_device: torch.device, size_bytes: int, name: str,
                 on_unload: Callable[[], None] | None = None):
        import comfy.model_patcher  # present: we only get here inside ComfyUI

        self.holder = AgenticEditModel(modules, offload_device, name)
        self.patcher = comfy.model_patcher.ModelPatcher(
            self.holder, load_device=load_device, offload_device=offload_device, size=max(int(size_bytes), 1))
        if on_unload is not None:
            # ComfyUI unloads models on its own (to make room for core's); the engine's device caches
            # (recorded CUDA graphs, kept embeddings) must go with the weights, not at the next call.
            _add_detach_callback(self.patcher, on_unload)

    def load(self) -> None:
        """Make room and put the weights on the load device (a no-op beyond bookkeeping when already there)."""
        model_management().load_models_gpu([self.patcher], force_full_load=True)

    def is_loaded(self) -> bool:
        """ComfyUI counts this model as loaded, completely (not partially unloaded)."""
        mm = model_management()
        if mm is None or not any(p is self.patcher for p in mm.loaded_models()):
            return False
        return self.patcher.loaded_size() >= self.patcher.model_size() and not self.holder.model_lowvram

    def unload(self) -> None:
        """Move the weights to the offload device through ComfyUI, so its bookkeeping stays right."""
        mm = model_management()
        if mm is None or not any(p is self.patcher for p in mm.loaded_models()):
            return
        mm.unload_model_and_clones(self.patcher, all_devices=True)


def _add_detach_callback(patcher, callback: Callable[[], None]) -> None:
    """Run ``callback`` after ComfyUI detaches (fully unloads) ``patcher``'s model. ComfyUI versions
    without patcher callbacks keep the old behaviour: the caches go at the engine's next call."""
    try:
        from comfy.patcher_extension import CallbacksMP
    except ImportError:
        return
    add = getattr(patcher, "add_callback", None)
    if callable(add):
        add(CallbacksMP.ON_DETACH, lambda _patcher, _unpatch_all: callback())

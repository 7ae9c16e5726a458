"""Model folders: where each kind of weights lives on disk.

Inside ComfyUI the folders are ComfyUI's own (``folder_paths``), so ``extra_model_paths.yaml`` and
``--models-directory`` apply to this pack's models as they do to core's. Outside ComfyUI (engine
tests, benchmarks, the command line) a models root with one sub-folder per key stands in for it:
``$AGENTIC_EDIT_MODELS_DIR`` (several roots separated by ``os.pathsep``; the first receives
downloads) or ``~/.cache/agentic-edit/models``.

"Inside ComfyUI" means ComfyUI has already imported ``folder_paths``: it always has by the time it
loads custom nodes. We never import it ourselves: a ComfyUI checkout that merely sits on
``sys.path`` must not silently redirect the models of a program that is not ComfyUI.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from types import ModuleType

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "AGENTIC_EDIT_MODELS_DIR"
DEFAULT_MODELS_ROOT = Path.home() / ".cache" / "agentic-edit" / "models"

# Folder keys this pack adds to ComfyUI (core has none of these). Keys core already has
# ("checkpoints", "diffusers", "clip_vision", "diffusion_models", "text_encoders", "vae", "loras",
# "controlnet", ...) are reused as they are.
PACK_FOLDERS = ("LLM", "sam2", "ipadapter", "fonts", "objectclear", "catvton")

# Outside ComfyUI, mirror the core keys that span several sub-folders (folder_paths.py), so a models
# root laid out like ComfyUI's is searched the same way.
_CORE_SUBFOLDERS = {
    "text_encoders": ("text_encoders", "clip"),
    "diffusion_models": ("diffusion_models", "unet"),
    "controlnet": ("controlnet", "t2i_adapter"),
}
_LEGACY_KEYS = {"unet": "diffusion_models", "clip": "text_encoders"}

_register_lock = threading.Lock()


# Set when the pack is loaded by ComfyUI (its extension's on_load calls register_comfy_folders).
# ComfyUI's modules being importable, or even imported by some other code in this process (a test
# that builds a node schema), does not make this process a ComfyUI server whose folders we serve.
_attached = False


def attach_to_comfy() -> bool:
    """Use ComfyUI's model folders and memory management from now on (when ComfyUI is loaded)."""
    global _attached
    _attached = "folder_paths" in sys.modules
    return _attached


def attached_to_comfy() -> bool:
    return _attached


def comfy_folder_paths() -> ModuleType | None:
    """ComfyUI's ``folder_paths`` module when running inside ComfyUI, else None."""
    return sys.modules.get("folder_paths") if _attached else None


def _register_one(folder_paths: ModuleType, key: str) -> None:
    default_dir = os.path.join(folder_paths.models_dir, key)
    known = folder_paths.folder_names_and_paths.get(folder_paths.map_legacy(key))
    if known is not None and default_dir in known[0]:
        return
    # Appended (is_default=False): folders the user listed in extra_model_paths.yaml stay first,
    # and the first folder is where downloads go.
    folder_paths.add_model_folder_path(key, default_dir)
    log.debug("registered ComfyUI model folder %r -> %s", key, default_dir)


def register_comfy_folders(extra_keys: tuple[str, ...] = ()) -> list[str]:
    """Register the pack's model-folder keys with ComfyUI (idempotent; a no-op outside ComfyUI).

    Also registers the folder of every spec registered so far. Returns the keys registered.
    """
    attach_to_comfy()
    folder_paths = comfy_folder_paths()
    if folder_paths is None:
        return []
    from .registry import all_specs

    keys = list(dict.fromkeys([*PACK_FOLDERS, *extra_keys, *(s.folder for s in all_specs())]))
    with _register_lock:
        for key in keys:
            _register_one(folder_paths, key)
    return keys


def _env_roots() -> list[Path]:
    value = os.environ.get(MODELS_DIR_ENV, "").strip()
    if not value:
        return [DEFAULT_MODELS_ROOT]
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def models_roots() -> list[Path]:
    """The models roots outside ComfyUI (inside it, ComfyUI's ``models_dir``)."""
    folder_paths = comfy_folder_paths()
    if folder_paths is not None:
        return [Path(folder_paths.models_dir)]
    return _env_roots()


def folder_dirs(key: str) -> list[Path]:
    """Every directory searched for models of folder ``key``, in priority order."""
    folder_paths = comfy_folder_paths()
    if folder_paths is not None:
        # A key first used after start-up (a spec registered late) is registered on demand.
        with _register_lock:
            _register_one(folder_paths, key)
        return [Path(p) for p in folder_paths.get_folder_paths(key)]
    key = _LEGACY_KEYS.get(key, key)
    subfolders = _CORE_SUBFOLDERS.get(key, (key,))
    return [root / sub for root in _env_roots() for sub in subfolders]


def download_dir(key: str) -> Path:
    """Where downloads for folder ``key`` go: its first (default) directory."""
    return folder_dirs(key)[0]

"""What the pack knows about each model it can load: one ``ModelSpec`` per choice.

Engines register their specs at import time. A spec says which ComfyUI model folder the weights
belong in, which files make a complete copy, and where to download them from; the resolver
(``resolve.py``) turns a spec into files on disk and writes the "put these files there" message
when they are missing.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import PurePosixPath

log = logging.getLogger(__name__)

# A spec whose key ends with one of these is a single weights file (``<folder>/<key>``), not a
# folder of files (``<folder>/<key>/config.json ...``).
WEIGHT_FILE_SUFFIXES = (".safetensors", ".sft", ".pt", ".pth", ".bin", ".ckpt", ".gguf", ".onnx")


@dataclass(frozen=True)
class ModelSpec:
    """One model choice.

    key:            the name shown in combos and saved in workflows, e.g. "Qwen2.5-VL-7B-Instruct";
                    also the sub-folder (or, for a single-file model, the file name) in ``folder``.
    family:         which engine loads it, e.g. "qwen2_5_vl", "sam2", "sd15_inpaint".
    folder:         ComfyUI model-folder key, e.g. "LLM", "sam2", "diffusers".
    repo_id:        Hugging Face repo to download from, or None (the user must provide the files).
    required_files: relative names or globs that must all match for a copy to be complete,
                    e.g. ("config.json", "*.safetensors"); empty for a single-file model.
    allow_patterns: what to download from the repo (None: the whole repo; a single-file model
                    downloads just its key).
    licence:        short licence note shown in the missing-model message.
    size_gb:        approximate download size, shown to the user.
    gated:          the repo needs an accepted licence and a token.
    notes:          anything else the user should know.
    """

    key: str
    family: str
    folder: str
    repo_id: str | None = None
    required_files: tuple[str, ...] = ()
    allow_patterns: tuple[str, ...] | None = None
    licence: str = ""
    size_gb: float | None = None
    gated: bool = False
    notes: str = ""

    def __post_init__(self):
        if not self.key or self.key != self.key.strip():
            raise ValueError(f"ModelSpec key {self.key!r}: must be a non-empty name without surrounding spaces")
        if "/" in self.key or "\\" in self.key:
            # The key is a file or folder name inside the model folder; a "/" would make it
            # indistinguishable from a repo id.
            raise ValueError(f"ModelSpec key {self.key!r}: must not contain '/' or '\\'")
        if not self.family or not self.folder:
            raise ValueError(f"ModelSpec {self.key!r}: family and folder are required")
        if self.repo_id is not None and self.repo_id.count("/") != 1:
            raise ValueError(f"ModelSpec {self.key!r}: repo_id {self.repo_id!r} must look like 'owner/name'")
        # Accept lists from callers but keep the frozen dataclass hashable.
        object.__setattr__(self, "required_files", tuple(self.required_files))
        if self.allow_patterns is not None:
            object.__setattr__(self, "allow_patterns", tuple(self.allow_patterns))

    @property
    def is_single_file(self) -> bool:
        return self.key.lower().endswith(WEIGHT_FILE_SUFFIXES)

    @property
    def repo_name(self) -> str | None:
        """The repo's last path component ("Qwen2.5-VL-7B-Instruct" for "Qwen/Qwen2.5-VL-7B-Instruct")."""
        return PurePosixPath(self.repo_id).name if self.repo_id else None

    @property
    def download_patterns(self) -> tuple[str, ...] | None:
        if self.allow_patterns is not None:
            return self.allow_patterns
        if self.is_single_file:
            return (self.key,)
        return None


_lock = threading.Lock()
_specs: dict[str, ModelSpec] = {}
# Folders a family also searches without a spec (e.g. an inpainting family that accepts any
# diffusers folder the user drops in).
_family_folders: dict[str, list[str]] = {}


def register_spec(spec: ModelSpec) -> ModelSpec:
    """Register ``spec`` (idempotent for an identical spec; a different spec under a taken key is an error)."""
    with _lock:
        existing = _specs.get(spec.key)
        if existing is not None and existing != spec:
            raise ValueError(f"model key {spec.key!r} is already registered with a different spec "
                             f"(family {existing.family!r}, folder {existing.folder!r})")
        _specs[spec.key] = spec
    return spec


def unregister_spec(key: str) -> None:
    """Forget a spec (tests register throwaway specs)."""
    with _lock:
        _specs.pop(key, None)


def register_family_folders(family: str, *folders: str) -> None:
    """Let ``family`` list and resolve names found in ``folders`` even where it has no spec."""
    with _lock:
        known = _family_folders.setdefault(family, [])
        for folder in folders:
            if folder not in known:
                known.append(folder)


def get_spec(key: str) -> ModelSpec | None:
    with _lock:
        return _specs.get(key)


def specs_for(family: str) -> list[ModelSpec]:
    """The family's specs, in registration order."""
    with _lock:
        return [spec for spec in _specs.values() if spec.family == family]


def all_specs() -> list[ModelSpec]:
    with _lock:
        return list(_specs.values())


def family_folders(family: str) -> list[str]:
    """Model-folder keys the family searches: its specs' folders first, then extra ones."""
    folders: list[str] = []
    for spec in specs_for(family):
        if spec.folder not in folders:
            folders.append(spec.folder)
    with _lock:
        for folder in _family_folders.get(family, ()):
            if folder not in folders:
                folders.append(folder)
    return folders

"""Tiny random-weight checkpoints of the real architectures the pack loads.

Each module in this package describes its architectures with ``MODELS = [TinyModel(...)]``; a
builder writes the checkpoint in the real on-disk format (``save_pretrained`` folders,
safetensors files) so that the pack's real loading code runs on it. Checkpoints are written into a
ComfyUI models-folder layout, under the same folder and file names the saved workflows use:
``<root>/<folder>/<name>``.

``ensure_models(root)`` builds what is missing (once per code version: a stamp file records the
hash of the builder sources) and is what the test fixtures call; ``python -m tests.tiny_models
--out DIR`` does the same from the command line.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pkgutil
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class TinyModel:
    name: str                      # file or folder name inside the models folder (as workflows name it)
    folder: str                    # ComfyUI models-folder key, e.g. "LLM", "sam2", "diffusers"
    build: Callable[[Path], None]  # writes the checkpoint at the given path (a folder or a file)
    description: str = ""


def all_models() -> list[TinyModel]:
    models: list[TinyModel] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        models.extend(getattr(module, "MODELS", ()))
    return models


def _source_hash(model: TinyModel) -> str:
    module = importlib.import_module(model.build.__module__)
    digest = hashlib.sha256(Path(module.__file__).read_bytes())
    # Modules a builder runs besides its own (``BUILD_HELPERS``, e.g. a training loop) are its source too.
    for helper in getattr(module, "BUILD_HELPERS", ()):
        digest.update(Path(importlib.import_module(helper, __name__).__file__).read_bytes())
    digest.update(model.name.encode())
    return digest.hexdigest()[:16]


def ensure_models(root: Path, only: list[str] | None = None) -> dict[str, Path]:
    """Build every tiny model (or those named in ``only``) under ``root``; return name -> path.

    Test sessions running at once share the cache: a file lock makes them take turns, and each
    model is built beside its target and moved into place, so nobody reads half a checkpoint."""
    import fcntl

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for model in all_models():
            if only and model.name not in only:
                continue
            built[model.name] = _ensure_one(root, model)
    return built


def _ensure_one(root: Path, model: TinyModel) -> Path:
    target = root / model.folder / model.name
    stamp = root / ".stamps" / f"{model.folder}__{model.name.replace('/', '__')}.json"
    wanted = _source_hash(model)
    if target.exists() and stamp.exists() and json.loads(stamp.read_text()).get("hash") == wanted:
        return target
    # Built under its own name (builders may look at the suffix) in a hidden folder, then moved.
    workdir = target.parent / f".building.{target.name}"
    _remove(workdir)
    workdir.mkdir(parents=True)
    staging = workdir / target.name
    model.build(staging)
    _remove(target)
    staging.rename(target)
    _remove(workdir)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"hash": wanted}))
    return target


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()

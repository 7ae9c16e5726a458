"""Components that two engines load from the same files, loaded once and handed to both.

SDXL inpainting, ObjectClear and SDXL text-to-image pipelines all carry CLIP ViT-L and
OpenCLIP ViT-bigG text encoders (1.5 GiB together). When two engines' folders hold the *same
files* (the same folder, or symlinks to one copy), loading them twice wastes the load time and,
while both are resident, the memory. An engine opts in by wrapping its component loader:

    from ..models.shared import shared_component

    text_encoder = shared_component(path / "text_encoder", dtype, lambda: CLIPTextModel.from_pretrained(...))

The key is the component folder's (or file's) resolved real path plus the dtype, and optionally a
``variant`` (e.g. "fp16" when the loader picks the fp16 files). The same key returns the same
module object; a different key loads anew. Nothing is shared across dtypes, and nothing by guess:
two copies of the same weights in two folders are two components, unless the engine passes an
explicit ``identity`` it knows to be the same (e.g. a repo id + revision + subfolder).

Lifetime: the cache holds weak references. The component lives as long as some engine's cached
model holds it (the store's ``LoadedModel``), so ``free()`` of both engines releases it. Device
moves need nothing special: the store moves tensors, and a tensor already where it should be is
not moved again; a model being offloaded leaves alone the modules it shares with a model in use.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from pathlib import Path
from typing import Callable, TypeVar

import torch

from . import stats

log = logging.getLogger(__name__)

T = TypeVar("T", bound=torch.nn.Module)
SharedKey = tuple[str, str, str]

_lock = threading.Lock()
_key_locks: dict[SharedKey, threading.Lock] = {}
_components: "weakref.WeakValueDictionary[SharedKey, torch.nn.Module]" = weakref.WeakValueDictionary()
_loads: dict[SharedKey, int] = {}


def component_key(path: str | os.PathLike, dtype: torch.dtype, variant: str | None = None,
                  identity: str | None = None) -> SharedKey:
    where = identity if identity is not None else os.path.realpath(Path(path).expanduser())
    return (where, str(dtype), variant or "")


def shared_component(path: str | os.PathLike, dtype: torch.dtype, load: Callable[[], T], *,
                     variant: str | None = None, identity: str | None = None) -> T:
    """The module loaded from ``path`` in ``dtype``: ``load()`` on first request, the same object after."""
    key = component_key(path, dtype, variant, identity)
    with _lock:
        found = _components.get(key)
        if found is not None:
            stats.add(shared_hits=1)
            return found  # type: ignore[return-value]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            found = _components.get(key)
        if found is not None:
            stats.add(shared_hits=1)
            return found  # type: ignore[return-value]
        module = load()
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"shared_component({path}): the loader returned {type(module).__name__}, not a torch module")
        with _lock:
            _components[key] = module
            _loads[key] = _loads.get(key, 0) + 1
        log.debug("loaded shared component %s (%s)", key[0], key[1])
        return module


def shared_loads() -> dict[SharedKey, int]:
    """How many times each shared component was loaded in this process (tests: 1 each)."""
    with _lock:
        return dict(_loads)


def live_components() -> list[SharedKey]:
    with _lock:
        return list(_components.keys())

"""Load each model once, keep it while it is useful, move it where the memory profile says.

``acquire`` resolves a choice, calls the engine's ``build`` once per (files, device, dtype) and
returns a ``LoadedModel``. ``LoadedModel.use()`` is the one way to run it: on entry the model's
torch modules are made resident on the compute device (room is made first: inside ComfyUI by its
model management, outside it by offloading our own idle models); on exit, under the ``low``
profile, they go back to the offload device (CPU).

``build`` may return an ``nn.Module``, a diffusers pipeline (anything with a ``components``
dict), a tuple/list/dict holding modules (``(model, processor)``), an object with a
``torch_modules()`` method, or a plain object whose attributes are modules. It may place the
weights on the CPU or directly on the compute device; ``use()`` moves them as needed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from typing import Any, Callable, Iterator

import torch

from . import comfy_memory
from .devices import MemoryProfile, effective_profile, free_memory_bytes, pick_device, pick_dtype
from .resolve import ResolvedModel, resolve

log = logging.getLogger(__name__)

Build = Callable[[ResolvedModel, torch.device, torch.dtype], Any]
CacheKey = tuple[str, str, str]

# Outside ComfyUI, before moving a model in, idle models of ours are offloaded until this much
# beyond the model's own size is free (activations of the forward pass).
ROOM_HEADROOM_BYTES = 1024**3


def torch_modules(obj: Any) -> list[torch.nn.Module]:
    """The distinct torch modules inside whatever ``build`` returned."""
    found: dict[int, torch.nn.Module] = {}

    def visit(item: Any, depth: int) -> None:
        if item is None or depth > 3:
            return
        if isinstance(item, torch.nn.Module):
            found.setdefault(id(item), item)
        elif callable(getattr(item, "torch_modules", None)):
            for module in item.torch_modules():
                visit(module, depth + 1)
        elif isinstance(getattr(item, "components", None), dict):  # diffusers DiffusionPipeline
            for value in item.components.values():
                visit(value, depth + 1)
        elif isinstance(item, (tuple, list, set)):
            for value in item:
                visit(value, depth + 1)
        elif isinstance(item, dict):
            for value in item.values():
                visit(value, depth + 1)
        elif depth == 0 and hasattr(item, "__dict__"):  # a small holder object (engine class)
            for value in vars(item).values():
                visit(value, depth + 1)

    visit(obj, 0)
    return list(found.values())


def module_bytes(modules: list[torch.nn.Module]) -> int:
    """Bytes of parameters and buffers, each shared tensor counted once."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _normalize_device(device: torch.device | str | None) -> torch.device:
    device = pick_device() if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())  # "cuda" and "cuda:0" are one device
    return device


class LoadedModel:
    """A loaded model: the engine's object, its torch modules, and where they are."""

    def __init__(self, key: CacheKey, resolved: ResolvedModel, family: str, obj: Any,
                 device: torch.device, dtype: torch.dtype):
        self.key = key
        self.resolved = resolved
        self.family = family
        self.obj = obj
        self.device = device
        self.dtype = dtype
        self.modules = torch_modules(obj)
        self.size_bytes = module_bytes(self.modules)
        self.offload_device = comfy_memory.offload_device()
        self.last_used = time.monotonic()
        self._lock = threading.RLock()
        self._users = 0
        self._released = False
        self._comfy: comfy_memory.ComfyRegistration | None = None
        if comfy_memory.active() and self.modules:
            self._comfy = comfy_memory.ComfyRegistration(
                self.modules, device, self.offload_device, self.size_bytes, name=resolved.path.name)

    def __repr__(self) -> str:
        return (f"LoadedModel({self.resolved.path.name!r}, family={self.family!r}, device={self.device}, "
                f"dtype={self.dtype}, {self.size_bytes / 2**20:.1f} MiB, resident={self.is_resident})")

    @property
    def comfy_registered(self) -> bool:
        return self._comfy is not None

    def _on_device(self) -> bool:
        for module in self.modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.device != self.device:
                    return False
        return True

    @property
    def is_resident(self) -> bool:
        """Every weight is on the compute device (inside ComfyUI: and ComfyUI counts it as loaded)."""
        if self._comfy is not None and not self._comfy.is_loaded():
            return False
        return self._on_device()

    def _move(self, device: torch.device) -> None:
        for module in self.modules:
            module.to(device)

    def _make_resident(self) -> None:
        if self._comfy is not None:
            # Makes room (ComfyUI unloads idle models), then loads ours; also repairs a partial unload.
            self._comfy.load()
            if not self._on_device():
                self._move(self.device)
            return
        if self._on_device():
            return
        _make_room_outside_comfy(self.size_bytes, self.device, keep=self)
        self._move(self.device)

    def offload(self) -> None:
        """Move the weights to the offload device (CPU) now."""
        with self._lock:
            if self._comfy is not None:
                self._comfy.unload()
            if self.offload_device != self.device:
                self._move(self.offload_device)
            _empty_device_cache(self.device)

    @contextlib.contextmanager
    def use(self) -> Iterator[Any]:
        """The engine's object with its weights on the compute device for the block."""
        with self._lock:
            self._make_resident()
            self._users += 1
            self.last_used = time.monotonic()
        try:
            yield self.obj
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0 and (self._released or self.should_offload()):
                    self.offload()

    def should_offload(self) -> bool:
        """What the memory profile says to do with this model after a use."""
        return effective_profile(self.size_bytes, self.device) is MemoryProfile.LOW

    def _release(self) -> None:
        """Dropped from the cache: give the device memory back unless a block is still using it."""
        with self._lock:
            self._released = True
            if self._users == 0:
                self.offload()
            if self._comfy is not None and self._users == 0:
                self._comfy = None  # ComfyUI only holds a weak reference to the patcher


_cache: dict[CacheKey, LoadedModel] = {}
_cache_lock = threading.Lock()
_key_locks: dict[CacheKey, threading.Lock] = {}


def acquire(choice: str, family: str, build: Build, dtype: torch.dtype | None = None,
            device: torch.device | str | None = None) -> LoadedModel:
    """The loaded model for ``choice``: built once per (files, device, dtype), then cached."""
    device = _normalize_device(device)
    dtype = pick_dtype(device) if dtype is None else dtype
    resolved = resolve(choice, family)
    key: CacheKey = (str(resolved.path), str(device), str(dtype))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            return hit
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # one build per key, even when the API server and the queue ask at once
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None:
            return hit
        log.info("loading %s model %s (%s, %s)", family, resolved.path, device, dtype)
        started = time.perf_counter()
        obj = build(resolved, device, dtype)
        loaded = LoadedModel(key, resolved, family, obj, device, dtype)
        if not loaded.modules:
            log.debug("%s: build returned no torch modules; nothing to move between devices", resolved.path)
        log.info("loaded %s in %.1fs (%.1f MiB)", resolved.path.name, time.perf_counter() - started,
                 loaded.size_bytes / 2**20)
        with _cache_lock:
            _cache[key] = loaded
        return loaded


def loaded_models(family: str | None = None) -> list[LoadedModel]:
    with _cache_lock:
        return [m for m in _cache.values() if family is None or m.family == family]


def free(family: str | None = None) -> int:
    """Drop cached models (all, or one family's); returns how many were dropped."""
    with _cache_lock:
        dropped = [m for m in _cache.values() if family is None or m.family == family]
        for model in dropped:
            del _cache[model.key]
            _key_locks.pop(model.key, None)
    count = len(dropped)
    devices = {m.device for m in dropped}
    for model in dropped:
        model._release()
    model = dropped = None  # no lingering reference keeps the weights alive
    gc.collect()  # the weights go when the last reference does; engines' objects may hold cycles
    for device in devices:
        _empty_device_cache(device)
    return count


def _empty_device_cache(device: torch.device) -> None:
    mm = comfy_memory.model_management()
    if mm is not None:
        mm.soft_empty_cache()
    elif device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _make_room_outside_comfy(nbytes: int, device: torch.device, keep: LoadedModel) -> None:
    """Offload our own idle models from ``device``, least recently used first, until ``nbytes`` fit."""
    free_bytes = free_memory_bytes(device)
    if free_bytes is None or device.type in ("cpu", "meta"):
        return
    wanted = nbytes + ROOM_HEADROOM_BYTES
    for other in sorted(loaded_models(), key=lambda m: m.last_used):
        if free_bytes >= wanted:
            return
        if other is keep or other.device != device or other._users > 0 or not other._on_device():
            continue
        log.info("offloading %s to make room for %.1f MiB", other.resolved.path.name, nbytes / 2**20)
        other.offload()
        free_bytes = free_memory_bytes(device) or 0

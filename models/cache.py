"""Load each model once, keep it while it is useful, move it where the memory profile says.

``acquire`` resolves a choice, calls the engine's ``build`` once per (files, device, dtype) and
returns a ``LoadedModel``. ``LoadedModel.use()`` is the one way to run it: on entry the model's
torch modules are made resident on the compute device (room is made first: inside ComfyUI by its
model management, outside it by offloading our own idle models); on exit, under the ``low``
profile, they go back to the offload device (CPU).

Moves outside ComfyUI go through ``offload.py``: each model keeps a host copy of its weights (pinned
when RAM allows), moving in is asynchronous copies and one synchronisation, moving out an unchanged
model is free, and a model too large for the memory it may use is made resident in part and
streamed (``offload.Streamer``). ``stats.py`` counts builds, moves, offloads and frees (benches
report the time spent; tests check that nothing is built twice). ``load_device`` tells a build
whether it may put the weights straight on the compute device.

``build`` may return an ``nn.Module``, a diffusers pipeline (anything with a ``components``
dict), a tuple/list/dict holding modules (``(model, processor)``), an object with a
``torch_modules()`` method, or a plain object whose attributes are modules. It may place the
weights on the CPU or directly on the compute device; ``use()`` moves them as needed.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
import time
from typing import Any, Callable, Iterator

import torch

from . import comfy_memory, offload, stats
from .devices import MemoryProfile, effective_profile, free_memory_bytes, memory_profile, pick_device, pick_dtype
from .resolve import ResolvedModel, resolve
from .sizes import estimate_weight_bytes

log = logging.getLogger(__name__)

Build = Callable[[ResolvedModel, torch.device, torch.dtype], Any]
CacheKey = tuple[str, str, str]

# Outside ComfyUI, before moving a model in, idle models of ours are offloaded until this much
# beyond the model's own size is free (activations of the forward pass).
ROOM_HEADROOM_BYTES = 1024**3
# Moving out trusts a tensor that still holds the device memory it was given, at the version it was
# given, to equal its host copy (no copy back). "0" copies every tensor back on every offload.
TRUST_CLEAN_ENV = "AGENTIC_EDIT_TRUST_CLEAN"

# The host copy of every tensor the store has moved out (shared tensors: one copy), by id(tensor).
_hosts: dict[int, offload.HostCopy] = {}
_hosts_lock = threading.Lock()


def _host_of(tensor: torch.Tensor) -> offload.HostCopy | None:
    host = _hosts.get(id(tensor))
    if host is None:
        return None
    view = host.views.get(id(tensor))
    if view is None or view.shape != tensor.shape or view.dtype != tensor.dtype or host._keep.get(id(tensor)) is not tensor:
        return None  # replaced by another shape or dtype since (a cast that stayed)
    return host


def _trust_clean() -> bool:
    return os.environ.get(TRUST_CLEAN_ENV, "").strip().lower() not in ("0", "false", "no", "off")


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
        self.device = _normalize_device(device)  # "cuda" and "cuda:0" must compare equal when moving weights
        self.dtype = dtype
        self.modules = torch_modules(obj)
        self.size_bytes = module_bytes(self.modules)
        self.offload_device = comfy_memory.offload_device()
        self.last_used = time.monotonic()
        self._lock = threading.RLock()
        self._users = 0
        self._released = False
        self._comfy: comfy_memory.ComfyRegistration | None = None
        self.streamer: offload.Streamer | None = None
        self.pin_decision: tuple[bool, str] | None = None   # the last host copy's (pinned, why)
        if comfy_memory.active() and self.modules:
            self._comfy = comfy_memory.ComfyRegistration(
                self.modules, device, self.offload_device, self.size_bytes, name=resolved.path.name,
                on_unload=self._release_device_caches)

    def _release_device_caches(self) -> None:
        release = getattr(self.obj, "release_device_caches", None)
        if callable(release):
            release()

    def __repr__(self) -> str:
        return (f"LoadedModel({self.resolved.path.name!r}, family={self.family!r}, device={self.device}, "
                f"dtype={self.dtype}, {self.size_bytes / 2**20:.1f} MiB, resident={self.is_resident})")

    @property
    def comfy_registered(self) -> bool:
        return self._comfy is not None

    def tensors(self) -> list[torch.Tensor]:
        return offload.model_tensors(self.modules)

    def _on_device(self) -> bool:
        return all(tensor.device == self.device for tensor in self.tensors())

    @property
    def is_resident(self) -> bool:
        """Every weight is on the compute device (inside ComfyUI: and ComfyUI counts it as loaded)."""
        if self._comfy is not None and not self._comfy.is_loaded():
            return False
        return self.streamer is None and self._on_device()

    @property
    def is_streaming(self) -> bool:
        return self.streamer is not None

    def _device_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors() if t.device == self.device)

    def _move(self, device: torch.device) -> None:
        """A plain move (ComfyUI's path and the --gpu-only offload device)."""
        for module in self.modules:
            module.to(device)

    def _ensure_host(self, tensors: list[torch.Tensor]) -> None:
        """Give every tensor in ``tensors`` a host copy (one new buffer for those that lack one)."""
        missing = [t for t in tensors if _host_of(t) is None]
        if not missing:
            return
        nbytes = sum(t.numel() * t.element_size() for t in missing)
        self.pin_decision = offload.should_pin(nbytes, self.device, self.offload_device)
        host = offload.capture(missing, self.pin_decision[0])
        log.info("%s: host copy of %.1f MiB, %s (%s)", self.resolved.path.name, nbytes / 2**20,
                 "pinned" if host.pinned else "pageable", self.pin_decision[1])
        with _hosts_lock:
            for tensor in missing:
                _hosts[id(tensor)] = host

    def _move_in_all(self) -> None:
        began = time.perf_counter()
        moved = offload.move_in(self.tensors(), self.device, _host_of)
        if moved.tensors:
            stats.add(moves_in=1, move_in_s=time.perf_counter() - began, move_in_bytes=moved.nbytes)

    def _make_resident(self) -> None:
        if self._comfy is not None:
            # Makes room (ComfyUI unloads idle models), then loads ours; also repairs a partial unload.
            self._comfy.load()
            if not self._on_device():
                self._move(self.device)
            return
        if self.streamer is None and self._on_device():
            return
        if self.device.type != "cuda":  # MPS and others: the plain move (host copies are a CUDA tool)
            self._move(self.device)
            return
        if self.streamer is not None:
            self.streamer.stop()
            self.streamer = None
        needed = self.size_bytes - self._device_bytes()
        free_bytes = _make_room_outside_comfy(needed, self.device, keep=self)
        if free_bytes is not None and needed + ROOM_HEADROOM_BYTES > free_bytes:
            self._stream(free_bytes)
        else:
            self._move_in_all()

    def _stream(self, free_bytes: int) -> None:
        """Partial residency: as many units as fit beside the headroom, the rest streamed per forward."""
        tensors = self.tensors()
        free_bytes += self._device_bytes()  # what this model holds now is given back first
        self._ensure_host(tensors)
        offload.move_out(tensors, _host_of, _trust_clean())   # start from nothing resident
        largest = max((sum(t.numel() * t.element_size() for t in offload.own_tensors(u))
                       for u in offload.units(self.modules)), default=0)
        budget = max(free_bytes - ROOM_HEADROOM_BYTES - 2 * largest, 0)
        began = time.perf_counter()
        self.streamer = offload.Streamer(_host_of, self.modules, self.device, budget)
        moved = self.streamer.start()
        stats.add(moves_in=1, move_in_s=time.perf_counter() - began, move_in_bytes=moved.nbytes)
        log.info("%s does not fit (%.1f GiB free, needs %.1f GiB): %.1f GiB resident, %.1f GiB streamed per use",
                 self.resolved.path.name, free_bytes / 2**30, self.size_bytes / 2**30,
                 self.streamer.resident_bytes / 2**30, self.streamer.streamed_bytes / 2**30)

    def offload(self) -> None:
        """Move the weights to the offload device (CPU) now. Tensors shared with a model that is in
        use stay where they are."""
        with self._lock:
            began = time.perf_counter()
            # Device memory the engine holds beside its weights (recorded CUDA graphs' pools, kept
            # embeddings) would stay on the GPU until its next call: the engine's object lets it go first.
            self._release_device_caches()
            if self.streamer is not None:
                self.streamer.stop()
                self.streamer = None
            copied = 0
            if self._comfy is not None:
                self._comfy.unload()
                if self.offload_device != self.device:
                    self._move(self.offload_device)
            elif self.offload_device != self.device:
                busy = _tensors_in_use(exclude=self)
                tensors = [t for t in self.tensors() if id(t) not in busy and t.device != self.offload_device]
                if tensors and self.offload_device.type == "cpu" and self.device.type == "cuda":
                    self._ensure_host(tensors)
                    copied = offload.move_out(tensors, _host_of, _trust_clean()).nbytes
                elif tensors:
                    self._move(self.offload_device)
            stats.add(offloads=1, offload_s=time.perf_counter() - began, offload_bytes=copied)
            # Give the freed blocks back to the driver under ``low`` (a small card others share) and
            # when the model is dropped; under ``auto``/``high`` the caching allocator keeps them for
            # the next move-in (the same sizes: no cudaMalloc per tensor), and it releases cached
            # blocks by itself when an allocation would not fit.
            if self._released or self._comfy is not None or memory_profile() is MemoryProfile.LOW:
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
        stats.count_build(key, time.perf_counter() - started, loaded.size_bytes)
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
    began = time.perf_counter()
    count = len(dropped)
    devices = {m.device for m in dropped}
    for model in dropped:
        model._release()
    model = dropped = None  # no lingering reference keeps the weights alive
    _purge_hosts()
    gc.collect()  # the weights go when the last reference does; engines' objects may hold cycles
    for device in devices:
        _empty_device_cache(device)
    if count:
        stats.add(frees=count, free_s=time.perf_counter() - began)
    return count


def _purge_hosts() -> None:
    """Drop host copies whose tensors no cached model holds any more (RAM, and pinned pages)."""
    live = {id(t) for m in loaded_models() for t in m.tensors()}
    with _hosts_lock:
        for key in [k for k in _hosts if k not in live]:
            del _hosts[key]


def _tensors_in_use(exclude: LoadedModel) -> set[int]:
    """ids of the tensors of models (other than ``exclude``) inside a ``use()`` block now."""
    busy: set[int] = set()
    for model in loaded_models():
        if model is not exclude and model._users > 0:
            busy.update(id(t) for t in model.tensors())
    return busy


def load_device(resolved: ResolvedModel, device: torch.device | str | None, dtype: torch.dtype) -> torch.device:
    """Where a build should put the weights: straight on the compute device when they fit there
    (after making room: offloading idle models of ours, or inside ComfyUI asking its model
    management), else on the CPU (the store then moves or streams them per use).

    Builds that can load straight to a device (transformers/diffusers ``device_map``, safetensors
    ``safe_open(device=...)``) call this. Where the size cannot be read from safetensors headers the
    answer is the compute device, as before.
    """
    device = _normalize_device(device)
    if device.type in ("cpu", "meta"):
        return device
    nbytes = estimate_weight_bytes(resolved.path, dtype)
    if nbytes is None:
        return device
    if comfy_memory.active():
        comfy_memory.make_room(nbytes, device)
        free_bytes = free_memory_bytes(device)
    else:
        free_bytes = _make_room_outside_comfy(nbytes, device, keep=None)
    if free_bytes is not None and nbytes + ROOM_HEADROOM_BYTES > free_bytes:
        log.info("%s (%.1f GiB) does not fit the %.1f GiB free on %s: loading on the CPU",
                 resolved.path.name, nbytes / 2**30, free_bytes / 2**30, device)
        return torch.device("cpu")
    return device


def _empty_device_cache(device: torch.device) -> None:
    mm = comfy_memory.model_management()
    if mm is not None:
        mm.soft_empty_cache()
    elif device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()


def _make_room_outside_comfy(nbytes: int, device: torch.device, keep: LoadedModel | None) -> int | None:
    """Offload our own idle models from ``device``, least recently used first, until ``nbytes``
    (plus headroom) fit. Returns the free bytes after, or None where they cannot be measured."""
    free_bytes = free_memory_bytes(device)
    if free_bytes is None or device.type in ("cpu", "meta"):
        return free_bytes
    wanted = nbytes + ROOM_HEADROOM_BYTES
    if free_bytes < wanted:
        gc.collect()  # activations kept alive only by reference cycles go first
        free_bytes = free_memory_bytes(device) or 0
    for other in sorted(loaded_models(), key=lambda m: m.last_used):
        if free_bytes >= wanted:
            break
        if other is keep or other.device != device or other._users > 0 or other._device_bytes() == 0:
            continue
        log.info("offloading %s to make room for %.1f MiB", other.resolved.path.name, nbytes / 2**20)
        other.offload()
        free_bytes = free_memory_bytes(device) or 0
    return free_bytes

"""Moving a model's weights between the CPU and the compute device, cheaply.

``module.to(device)`` copies each tensor synchronously through pageable memory and, on the way
back, allocates fresh CPU memory every time. Here a model keeps one **host copy**: a single flat
CPU buffer holding every parameter and buffer, page-locked (pinned, ``cudaHostRegister``) when
the machine has the RAM for it. Then:

* moving in is one asynchronous host-to-device copy per tensor from the pinned buffer, and one
  synchronisation at the end (pinned copies run at the link's full speed and overlap each other);
* moving out is free when the weights were not changed on the device (the tensor still holds the
  memory we gave it, at the version we gave it): each tensor points back at its host view and the
  device memory is released. Changed tensors (a VAE cast to fp32 and back, a fused LoRA) are
  copied back into their host view, asynchronously, then one synchronisation.

One flat buffer, not one pinned tensor per weight: PyTorch's pinned allocator rounds every
allocation up to a power of two, which can double the RAM a model takes.

Pinning is decided per model: only with a CUDA compute device and a CPU offload device, and only
when, after the copy, at least ``PIN_RESERVE_BYTES`` (or 15 % of RAM, the larger) of RAM would
stay available. Otherwise the host copy is pageable (still one buffer, still reused); with
``AGENTIC_EDIT_PIN_MEMORY=0`` it is pageable always. The host copy stays in RAM while the model is
on the device: that is what makes moving out free. It is dropped with the model.

**Partial residency (streaming)**: a model larger than the memory it may use (a 15.5 GiB Qwen2.5-VL
under a 12 GB cap) is made resident unit by unit (a unit: a module that owns tensors directly,
such as a Linear) in module order until the budget is used; every other unit is copied in by a
forward pre-hook just before it runs and let go by a forward hook right after. The first unit is
always resident, so ``next(model.parameters()).device`` names the compute device as libraries expect.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass
from typing import Callable, Iterable

import torch

from . import stats

log = logging.getLogger(__name__)

PIN_ENV = "AGENTIC_EDIT_PIN_MEMORY"
PIN_RESERVE_BYTES = 4 * 1024**3
PIN_RESERVE_SHARE = 0.15
ALIGN = 256  # bytes: every tensor's host view starts on a 256-byte boundary (DMA-friendly)


# ---- RAM and the pin decision -------------------------------------------------------------

def available_ram_bytes() -> int | None:
    """RAM available to new allocations (MemAvailable), or None where it cannot be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # psutil missing or unsupported
        pass
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def total_ram_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        return None


def pinning_supported() -> bool:
    return torch.cuda.is_available() and hasattr(torch.cuda, "cudart")


def should_pin(nbytes: int, compute: torch.device, offload: torch.device,
               available: int | None = None, total: int | None = None) -> tuple[bool, str]:
    """(pin the host copy?, why). ``available``/``total`` RAM default to the machine's."""
    setting = os.environ.get(PIN_ENV, "").strip().lower()
    if setting in ("0", "false", "no", "off"):
        return False, f"{PIN_ENV}={setting}"
    if compute.type != "cuda" or offload.type != "cpu":
        return False, f"pinned memory only helps CUDA <-> CPU moves ({compute} / {offload})"
    if available is None:
        available = available_ram_bytes()
    if total is None:
        total = total_ram_bytes()
    if available is None:
        return False, "available RAM unknown"
    reserve = max(PIN_RESERVE_BYTES, int(PIN_RESERVE_SHARE * total) if total else 0)
    if available - nbytes < reserve:
        return False, (f"RAM: {available / 2**30:.1f} GiB available, the copy needs {nbytes / 2**30:.1f} GiB "
                       f"and {reserve / 2**30:.1f} GiB must stay free")
    return True, "RAM allows"


def _register(buffer: torch.Tensor) -> bool:
    """Page-lock ``buffer``'s memory in place (cudaHostRegister); False when CUDA refuses."""
    try:
        code = torch.cuda.cudart().cudaHostRegister(buffer.data_ptr(), buffer.numel() * buffer.element_size(), 0)
    except Exception as exc:  # no CUDA runtime, old torch
        log.debug("cudaHostRegister unavailable: %s", exc)
        return False
    return int(getattr(code, "value", code)) == 0


def _unregister(ptr: int) -> None:
    try:
        torch.cuda.cudart().cudaHostUnregister(ptr)
    except Exception as exc:
        log.debug("cudaHostUnregister failed: %s", exc)


# ---- the tensors of a model ---------------------------------------------------------------

def model_tensors(modules: Iterable[torch.nn.Module]) -> list[torch.Tensor]:
    """Every parameter and buffer, each shared tensor once, in module order: per module, its
    ``parameters()`` then its ``buffers()``.

    The store asks this on every use (is everything still on the device?), so it walks the modules'
    own dicts instead of ``named_modules()``, whose name strings made the check ~3x slower (SDXL's
    four modules: 2,643 tensors).
    """
    seen: set[int] = set()
    out = []
    for module in modules:
        order = module_tree(module)
        for attribute in ("_parameters", "_buffers"):
            for child in order:
                for tensor in getattr(child, attribute).values():
                    if tensor is not None and id(tensor) not in seen:
                        seen.add(id(tensor))
                        out.append(tensor)
    return out


def module_tree(root: torch.nn.Module) -> list[torch.nn.Module]:
    """``root.modules()``: each module once, in the same order, without building names (~3x faster)."""
    seen: set[int] = set()
    order, stack = [], [root]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        order.append(module)
        stack.extend(child for child in reversed(module._modules.values()) if child is not None)
    return order


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _set(tensor: torch.Tensor, value: torch.Tensor) -> None:
    # Outside inference mode: a weight must not become an inference tensor because the first use
    # happened inside ``torch.inference_mode()``.
    with torch.inference_mode(False), torch.no_grad():
        tensor.data = value


class HostCopy:
    """One flat CPU buffer with a view for each of a model's tensors (see the module doc)."""

    def __init__(self, tensors: list[torch.Tensor], pin: bool):
        offsets, total = [], 0
        for tensor in tensors:
            offsets.append(total)
            total += -(-_nbytes(tensor) // ALIGN) * ALIGN
        with torch.inference_mode(False):
            self.buffer = torch.empty(max(total, 1), dtype=torch.uint8)
        self.pinned = bool(pin) and _register(self.buffer)
        if self.pinned:
            ptr = self.buffer.data_ptr()
            self._finalizer = weakref.finalize(self, _unregister, ptr)
        self.views: dict[int, torch.Tensor] = {}
        self._keep: dict[int, torch.Tensor] = {}   # the tensors themselves: ids stay valid
        for tensor, offset in zip(tensors, offsets):
            flat = self.buffer[offset:offset + _nbytes(tensor)]
            view = flat.view(tensor.dtype).view(tensor.shape) if tensor.numel() else torch.empty(
                tensor.shape, dtype=tensor.dtype)
            self.views[id(tensor)] = view
            self._keep[id(tensor)] = tensor
        self.nbytes = total
        # What each tensor held when it was last made resident: (data_ptr, version); None once offloaded.
        self.issued: dict[int, tuple[int, int] | None] = {}

    def covers(self, tensors: list[torch.Tensor]) -> bool:
        return all(id(t) in self.views and self.views[id(t)].shape == t.shape and self.views[id(t)].dtype == t.dtype
                   for t in tensors)

    def view(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.views[id(tensor)]


def capture(tensors: list[torch.Tensor], pin: bool) -> HostCopy:
    """A host copy holding ``tensors``' current values (copied asynchronously from a GPU into a
    pinned buffer, one synchronisation). CPU tensors are pointed at their views at once (their old
    memory is released); device tensors count as clean, so moving them out later copies nothing."""
    host = HostCopy(tensors, pin)
    devices = set()
    with torch.inference_mode(False), torch.no_grad():
        for tensor in tensors:
            host.view(tensor).copy_(tensor.data, non_blocking=host.pinned and tensor.device.type == "cuda")
            devices.add(tensor.device)
    for device in devices:
        _sync(device)
    for tensor in tensors:
        if tensor.device.type == "cpu":
            _set(tensor, host.view(tensor))
            host.issued[id(tensor)] = None
        else:
            host.issued[id(tensor)] = (tensor.data_ptr(), tensor._version)
    return host


@dataclass
class MoveResult:
    nbytes: int = 0           # bytes copied
    tensors: int = 0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


HostOf = Callable[[torch.Tensor], "HostCopy | None"]


def move_in(tensors: list[torch.Tensor], device: torch.device, host_of: HostOf, sync: bool = True) -> MoveResult:
    """Put ``tensors`` on ``device``: from their host views where they have a host copy
    (asynchronous when pinned), else with a plain copy. One synchronisation at the end unless
    ``sync=False`` (streaming: kernels on the same stream wait for the copy anyway, and the pinned
    source outlives it)."""
    result = MoveResult()
    with torch.inference_mode(False), torch.no_grad():
        for tensor in tensors:
            if tensor.device == device:
                continue
            host = host_of(tensor)
            source = tensor.data
            if host is not None and tensor.device.type == "cpu" and tensor.data_ptr() != host.view(tensor).data_ptr():
                host = None  # the tensor's CPU values are not the view's (replaced since): copy them plainly
            target = torch.empty(source.shape, dtype=source.dtype, device=device)
            target.copy_(source, non_blocking=bool(host is not None and host.pinned))
            tensor.data = target
            if host is not None:
                host.issued[id(tensor)] = (target.data_ptr(), tensor._version)
            result.nbytes += _nbytes(tensor)
            result.tensors += 1
    if result.tensors and sync:
        _sync(device)
    return result


def move_out(tensors: list[torch.Tensor], host_of: HostOf, trust_clean: bool = True) -> MoveResult:
    """Back to the host copies: tensors unchanged since ``move_in`` just point at their views again;
    changed ones are copied into their views first (asynchronously, one synchronisation). Every
    tensor must have a host copy that covers it."""
    result = MoveResult()
    dirty, devices = [], set()
    for tensor in tensors:
        host = host_of(tensor)
        view = host.view(tensor)
        if tensor.data_ptr() == view.data_ptr():
            continue
        issued = host.issued.get(id(tensor))
        clean = trust_clean and issued is not None and issued == (tensor.data_ptr(), tensor._version)
        if not clean:
            dirty.append((tensor, host))
    with torch.inference_mode(False), torch.no_grad():
        for tensor, host in dirty:
            host.view(tensor).copy_(tensor.data, non_blocking=host.pinned and tensor.device.type == "cuda")
            result.nbytes += _nbytes(tensor)
            devices.add(tensor.device)
    for device in devices:
        _sync(device)
    for tensor in tensors:
        host = host_of(tensor)
        if tensor.data_ptr() != host.view(tensor).data_ptr():
            _set(tensor, host.view(tensor))
            result.tensors += 1
        host.issued[id(tensor)] = None
    return result


# ---- partial residency ----------------------------------------------------------------------

def units(modules: Iterable[torch.nn.Module]) -> list[torch.nn.Module]:
    """Modules that own tensors directly, in module order, each once."""
    seen: set[int] = set()
    out = []
    for top in modules:
        for module in top.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            if any(t is not None for t in module._parameters.values()) or any(
                    t is not None for t in module._buffers.values()):
                out.append(module)
    return out


def own_tensors(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t for t in [*module._parameters.values(), *module._buffers.values()] if t is not None]


class Streamer:
    """Partial residency for one model: resident units up to a budget, hooks for the rest."""

    def __init__(self, host_of: HostOf, modules: list[torch.nn.Module], device: torch.device, budget: int):
        self.host_of, self.device = host_of, device
        self.resident: list[torch.nn.Module] = []
        self.streamed: list[torch.nn.Module] = []
        used, claimed = 0, set()
        for index, unit in enumerate(units(modules)):
            tensors = [t for t in own_tensors(unit) if id(t) not in claimed]
            claimed.update(id(t) for t in tensors)
            size = sum(_nbytes(t) for t in tensors)
            if index == 0 or used + size <= budget:
                self.resident.append(unit)
                used += size
            else:
                self.streamed.append(unit)
        self.resident_bytes = used
        self.streamed_bytes = sum(_nbytes(t) for u in self.streamed for t in own_tensors(u))
        self._handles: list = []

    def start(self) -> MoveResult:
        """Make the resident units resident and hook the streamed ones."""
        result = move_in([t for u in self.resident for t in own_tensors(u)], self.device, self.host_of)
        for unit in self.streamed:
            self._handles.append(unit.register_forward_pre_hook(self._bring))
            self._handles.append(unit.register_forward_hook(self._release))
        return result

    def _bring(self, module, args):
        moved = move_in(own_tensors(module), self.device, self.host_of, sync=False)
        stats.add(streamed_bytes=moved.nbytes)

    def _release(self, module, args, output):
        # Weights do not change in a forward pass: pointing back at the host views is enough. The
        # device memory returns to the caching allocator, ordered after the kernels that read it.
        for tensor in own_tensors(module):
            host = self.host_of(tensor)
            if tensor.device.type != "cpu" and host is not None:
                _set(tensor, host.view(tensor))
                host.issued[id(tensor)] = None

    def stop(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

"""Which device and dtype models run on, and how hard the store holds on to GPU memory.

Memory profiles:

* ``high``: a model stays on the compute device after use (fastest; needs the memory);
* ``low``: a model goes back to the CPU after each use, so a 12 GB card runs the whole stack one
  model at a time;
* ``auto`` (the default): ``high`` on CPU, and inside ComfyUI (whose model management evicts our
  models when another model needs the memory, see ``comfy_memory.py``); elsewhere a model stays
  resident only while the device keeps ample free memory beside it.

The profile comes from ``set_memory_profile()`` (a node or a program sets it) or else the
``AGENTIC_EDIT_MEMORY_PROFILE`` environment variable.
"""

from __future__ import annotations

import logging
import os
from enum import Enum

import torch

from . import comfy_memory

log = logging.getLogger(__name__)

PROFILE_ENV = "AGENTIC_EDIT_MEMORY_PROFILE"
# Under ``auto``, a model stays resident when, with it loaded, the device still has this much free
# memory, and at least as much again as the model itself: room for activations and the next model.
AUTO_MIN_FREE_BYTES = 2 * 1024**3

DEFAULT_SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)


class MemoryProfile(str, Enum):
    AUTO = "auto"
    HIGH = "high"
    LOW = "low"


_override: MemoryProfile | None = None


def set_memory_profile(profile: MemoryProfile | str | None) -> None:
    """Set the profile for this process; None goes back to the environment variable."""
    global _override
    _override = None if profile is None else _parse_profile(profile, source="set_memory_profile")


def _parse_profile(value: MemoryProfile | str, source: str) -> MemoryProfile:
    try:
        return MemoryProfile(str(getattr(value, "value", value)).strip().lower())
    except ValueError:
        raise ValueError(f"{source}: unknown memory profile {value!r}; use one of "
                         f"{', '.join(p.value for p in MemoryProfile)}") from None


def memory_profile() -> MemoryProfile:
    """The configured profile (may be ``AUTO``; ``effective_profile`` decides what auto means now)."""
    if _override is not None:
        return _override
    value = os.environ.get(PROFILE_ENV, "").strip()
    if not value:
        return MemoryProfile.AUTO
    try:
        return _parse_profile(value, source=PROFILE_ENV)
    except ValueError as exc:
        log.warning("%s; using auto", exc)
        return MemoryProfile.AUTO


_fractions: dict[int, float] = {}   # set through set_memory_fraction (torch without a getter)


def set_memory_fraction(fraction: float, device: torch.device | str | int = 0) -> None:
    """``torch.cuda.set_per_process_memory_fraction`` that the store can read back on any torch
    version (the getter is recent); a program that caps memory should call this one."""
    index = torch.device(device).index if not isinstance(device, int) else device
    index = 0 if index is None else index
    torch.cuda.set_per_process_memory_fraction(float(fraction), index)
    _fractions[index] = float(fraction)


def device_cap_bytes(device: torch.device | str | int) -> int | None:
    """The most this process may hold on a CUDA device: its total memory times the per-process
    fraction (``torch.cuda.set_per_process_memory_fraction``, 1.0 unless set); None elsewhere."""
    if not isinstance(device, int):
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            return None
        device = device.index if device.index is not None else torch.cuda.current_device()
    index = device
    total = torch.cuda.get_device_properties(index).total_memory
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    fraction = float(getter(index)) if getter is not None else _fractions.get(index, 1.0)
    return int(total * min(max(fraction, 0.0), 1.0))


def cuda_free_bytes(device: torch.device | str) -> int:
    """What this process can still allocate on a CUDA device: the driver's free memory plus the
    caching allocator's reserved-but-unused blocks, and never more than the per-process cap
    (``set_per_process_memory_fraction``) minus what this process has allocated."""
    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    driver_free, _ = torch.cuda.mem_get_info(index)
    allocated = torch.cuda.memory_allocated(index)
    reserved = torch.cuda.memory_reserved(index)
    free = driver_free + max(reserved - allocated, 0)
    cap = device_cap_bytes(index)
    if cap is not None:
        free = min(free, cap - allocated)
    return max(int(free), 0)


def free_memory_bytes(device: torch.device | str) -> int | None:
    """Free memory on ``device`` in bytes, or None where it cannot be measured. On CUDA outside
    ComfyUI it respects the per-process memory fraction (see ``cuda_free_bytes``)."""
    device = torch.device(device)
    mm = comfy_memory.model_management()
    if mm is not None and device.type != "meta":
        return int(mm.get_free_memory(device))
    if device.type == "cuda" and torch.cuda.is_available():
        return cuda_free_bytes(device)
    if device.type == "mps" and hasattr(torch, "mps"):
        try:
            return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
        except (AttributeError, RuntimeError):
            return None
    return None


def effective_profile(model_bytes: int, device: torch.device | str) -> MemoryProfile:
    """``HIGH`` or ``LOW`` for a model of ``model_bytes`` resident on ``device`` right now."""
    profile = memory_profile()
    if profile is not MemoryProfile.AUTO:
        return profile
    device = torch.device(device)
    if device.type in ("cpu", "meta"):
        return MemoryProfile.HIGH  # nothing to gain: the offload device is the compute device
    if comfy_memory.active():
        return MemoryProfile.HIGH  # ComfyUI evicts our models on demand
    free = free_memory_bytes(device)
    if free is None:
        return MemoryProfile.LOW
    return MemoryProfile.HIGH if free >= max(AUTO_MIN_FREE_BYTES, model_bytes) else MemoryProfile.LOW


def pick_device() -> torch.device:
    """ComfyUI's compute device inside ComfyUI; else CUDA, then Apple MPS, then CPU."""
    mm = comfy_memory.model_management()
    if mm is not None:
        return torch.device(mm.get_torch_device())
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device | str, supported: tuple[torch.dtype, ...] = DEFAULT_SUPPORTED_DTYPES) -> torch.dtype:
    """The compute dtype for a model that runs in any of ``supported``.

    CUDA: bf16 where the card has it, else fp16; MPS: fp16; CPU: fp32. Inside ComfyUI its
    ``--force-fp32`` / ``--force-fp16`` flags win.
    """
    if not supported:
        raise ValueError("pick_dtype: 'supported' must name at least one dtype")
    device = torch.device(device)
    forced = comfy_memory.forced_dtype()
    if forced is not None and forced in supported and device.type != "cpu":
        return forced
    if device.type == "cuda":
        if torch.bfloat16 in supported and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if torch.float16 in supported:
            return torch.float16
    elif device.type == "mps":
        if torch.float16 in supported:
            return torch.float16
    if torch.float32 in supported:
        return torch.float32
    return supported[0]

"""Which fused kernel PyTorch's ``scaled_dot_product_attention`` runs: cuDNN's first on Hopper.

Why: CatVTON's UNet (SD-1.5, person over garment at 1024x768) spends most of its step in the
first level's self-attention: 24 576 tokens, 8 heads of 40 channels, five layers per step. On an
H100 (bench/bench_catvton.py ``--probe``, bench/results/catvton_h100_2026-11-24_sdpa.json, fp16)
one such call takes 5.4-5.7 ms in cuDNN's Hopper kernel, 9.4 ms in FlashAttention-2 (no 40-wide
kernel: it runs its 64-wide one without overlapping the softmax) and 18.6 ms in the memory-efficient
kernel: 27 vs 47 vs 93 ms of a ~70 ms step. PyTorch 2.11 with cuDNN 9.19 already picks cuDNN
there by itself (measured: same kernel, same step time with and without this module); older
releases put FlashAttention-2 first on every GPU. This module makes the fast choice hold whatever
PyTorch's default is, and lets a user override it.

``preferred_attention(device)`` (a context manager) puts one backend first in SDPA's priority
order for the block; every other backend stays enabled behind it, so a call cuDNN cannot take
(head dim over its limit, a mask layout it refuses) falls back to PyTorch's usual choice. The
backends give the same function up to fp16/bf16 rounding (a different summation order).

``AGENTIC_EDIT_SDPA`` chooses:

* ``auto`` (default): cuDNN first on CUDA devices of compute capability 9.x (H100/H200) when cuDNN
  is there; elsewhere PyTorch's own order, unchanged (not measured on other chips);
* ``torch`` (or ``0``/``off``): PyTorch's own order everywhere;
* ``cudnn``, ``flash``, ``efficient``, ``math``: that backend first, on any device.

The SDPA flags are process-wide in PyTorch (not per thread): the block changes the order for any
other thread that runs attention meanwhile (ComfyUI runs one prompt at a time), and restores it on
exit. With ``torch.compile`` the order in force when the UNet is first traced is baked into the
compiled code; the CUDA graphs of ``engines/unet_graph.py`` record whichever kernel ran.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from typing import Iterator

import torch

log = logging.getLogger(__name__)

ENV = "AGENTIC_EDIT_SDPA"
AUTO = "auto"
_TORCH_ORDER = ("torch", "default", "0", "off", "false", "no")
BACKENDS = ("cudnn", "flash", "efficient", "math")
# Compute capabilities where cuDNN's attention is put first by ``auto`` (measured: H100).
CUDNN_FIRST_MAJOR = (9,)
_warned: set[str] = set()


def _backend(name: str):
    from torch.nn.attention import SDPBackend

    return {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


def setting() -> str:
    """``AGENTIC_EDIT_SDPA`` read: ``auto``, ``torch`` or a backend name (an unknown value is ``auto``)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("", AUTO):
        return AUTO
    if value in _TORCH_ORDER:
        return "torch"
    if value in BACKENDS:
        return value
    if value not in _warned:
        _warned.add(value)
        log.warning("%s=%r is not one of auto, torch, %s; using auto", ENV, value, ", ".join(BACKENDS))
    return AUTO


def can_set_priority() -> bool:
    """Whether this PyTorch's ``sdpa_kernel`` takes a priority order (PyTorch 2.6 and later)."""
    try:
        from torch.nn.attention import sdpa_kernel
    except ImportError:
        return False
    return "set_priority" in inspect.signature(sdpa_kernel).parameters and hasattr(torch._C, "_set_sdp_priority_order")


def preferred_backend(device) -> str | None:
    """The backend ``preferred_attention`` puts first on ``device``, or None to leave PyTorch's order."""
    choice = setting()
    if choice == "torch":
        return None
    if choice != AUTO:
        return choice
    device = torch.device(device) if device is not None else None
    if device is None or device.type != "cuda" or not torch.cuda.is_available():
        return None
    if not torch.backends.cudnn.is_available():
        return None
    major, _ = torch.cuda.get_device_capability(device)
    return "cudnn" if major in CUDNN_FIRST_MAJOR else None


def _enabled() -> dict[str, bool]:
    flags = torch.backends.cuda
    return {"cudnn": flags.cudnn_sdp_enabled(), "flash": flags.flash_sdp_enabled(),
            "efficient": flags.mem_efficient_sdp_enabled(), "math": flags.math_sdp_enabled()}


@contextlib.contextmanager
def preferred_attention(device) -> Iterator[str | None]:
    """For the block, SDPA tries ``preferred_backend(device)`` first, then the backends enabled
    before, in the order they had. Yields the backend put first, or None when the order is left
    alone (``auto`` also leaves it when the preferred backend was switched off globally)."""
    name = preferred_backend(device)
    enabled = _enabled()
    if name is None or not can_set_priority() or (setting() == AUTO and not enabled[name]):
        yield None
        return
    from torch.nn.attention import sdpa_kernel

    by_value = {int(_backend(n)): n for n in BACKENDS}
    current = [by_value[v] for v in torch._C._get_sdp_priority_order() if v in by_value]
    order = [name] + [n for n in current if n != name and enabled[n]]
    with sdpa_kernel([_backend(n) for n in order], set_priority=True):
        yield name


__all__ = ["AUTO", "BACKENDS", "ENV", "can_set_priority", "preferred_attention", "preferred_backend", "setting"]

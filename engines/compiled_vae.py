"""Compile a diffusers VAE's encoder and decoder for the length of a call (``AGENTIC_EDIT_COMPILE=1``).

Why: after the UNet's steps are graphed and compiled, the VAE round trip is the next cost of an
SDXL inpaint. Its convolutions run at 1024² with GroupNorm and SiLU between them, which eager
PyTorch runs as separate passes over ~1 GB of activations. Inductor fuses them. Measured on an
H100 (bench/bench_diffusion_parts.py, 2026-11-24): one encode + one decode of the SDXL VAE at
1024² in bf16 took 140 ms eager and 70 ms compiled; the compile cost ~64 s once per size.

How: ``compiled_vae(vae)`` (a context manager) routes ``vae.encoder.forward`` and
``vae.decoder.forward`` through ``torch.compile`` (inductor, default mode, ``dynamic=False``: one
program per size, as the UNet's) and puts the plain forwards back on exit, so other users of the
same VAE are not affected. The compiled functions are kept per module and reused by later calls.
It does nothing (the VAE runs eagerly) unless compile is on, the VAE is on CUDA, and nothing inside
the encoder or decoder is hooked (the store's streaming and accelerate's offloading move weights
inside the forward, which a compiled program would not see). A VAE that upcasts fp16 to fp32 on
every call (``force_upcast``) is left eager too: its weights change dtype between the two.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import weakref
from typing import Callable, Iterator

import torch

from .compiled_forward import compile_setting

log = logging.getLogger(__name__)

_compiled: "weakref.WeakKeyDictionary[torch.nn.Module, Callable]" = weakref.WeakKeyDictionary()


def why_not_compiled(vae, enabled: bool | None = None) -> str | None:
    """None when ``compiled_vae`` would compile ``vae``'s encoder and decoder, else the reason."""
    if enabled is False or (enabled is None and not compile_setting()):
        return "compile is off (AGENTIC_EDIT_COMPILE)" if enabled is None else "turned off by the caller"
    parts = [getattr(vae, name, None) for name in ("encoder", "decoder")]
    if not all(isinstance(part, torch.nn.Module) for part in parts):
        return f"{type(vae).__name__} has no encoder and decoder modules"
    for part in parts:
        if "forward" in part.__dict__:
            return "its forward is already wrapped"
        for module in part.modules():
            if module is not part and (module._forward_pre_hooks or module._forward_hooks or hasattr(module, "_hf_hook")):
                return "a module inside it is hooked (weights are moved during the forward)"
    parameter = next(vae.parameters(), None)
    if parameter is not None and parameter.dtype == torch.float16 and \
            getattr(getattr(vae, "config", None), "force_upcast", False):
        return "the VAE upcasts fp16 to fp32 on every call"
    if parameter is None or parameter.device.type != "cuda":
        return "the VAE is not on a CUDA device"
    return None


@contextlib.contextmanager
def compiled_vae(vae, enabled: bool | None = None) -> Iterator[bool]:
    """Within the block, ``vae``'s encoder and decoder run compiled when ``why_not_compiled`` allows it;
    yields whether they do."""
    reason = why_not_compiled(vae, enabled)
    if reason is not None:
        if enabled is not False and compile_setting():
            log.info("VAE runs eagerly: %s", reason)
        yield False
        return
    parts = [vae.encoder, vae.decoder]
    for part in parts:
        program = _compiled.get(part)
        if program is None:
            # The class's forward, compiled once per module; the module comes in as its first argument.
            program = _compiled[part] = torch.compile(type(part).forward, dynamic=False)
        part.forward = functools.partial(program, part)
    try:
        yield True
    finally:
        for part in parts:
            part.__dict__.pop("forward", None)


__all__ = ["compiled_vae", "why_not_compiled"]

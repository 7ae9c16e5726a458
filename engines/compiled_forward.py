"""What ``AGENTIC_EDIT_COMPILE=1`` turns on, and the UNet forward it compiles.

``compile_setting()`` is read by every engine that compiles (the UNet graph runner, the VAE in
``compiled_vae``, the grounding model's decode step). ``layout_keyed_forward`` is the UNet forward
that ``unet_graph``'s runner compiles: it takes the weights' layout as a keyword the trace reads, so
dynamo guards it. Without it, a UNet whose weights changed memory layout or dtype after its compile
(``unet.to(memory_format=torch.channels_last)``) would reuse the old program, whose stride assertions
then fail: dynamo does not guard the weights' strides, and a fresh ``torch.compile`` of the same
function shares the code object's cache.
"""

from __future__ import annotations

import os

import torch

from ..models.offload import model_tensors

COMPILE_ENV = "AGENTIC_EDIT_COMPILE"


def compile_setting() -> bool:
    """``AGENTIC_EDIT_COMPILE=1``: the UNet's forward is ``torch.compile``d (inductor, default mode)
    before its steps are recorded, so the graphs replay fused kernels (and ``compiled_vae`` compiles
    the VAE). Off by default: the compile costs minutes once per UNet and shape (ComfyUI users pay it
    at their first run), for a shorter step after."""
    return os.environ.get(COMPILE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def weight_layout(weights: list[torch.Tensor]) -> int:
    """What a compiled forward assumes about the weights without guarding it: dtypes, shapes and strides
    (inductor asserts them at run time; a UNet turned channels_last after the compile would fail)."""
    return hash(tuple((t.dtype, tuple(t.shape), t.stride()) for t in weights))


def weights_of(module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``module``, each once (what a compiled forward reads)."""
    return model_tensors([module])


def layout_keyed_forward(unet, *args, weight_layout_key: int, **kwargs):
    """What ``AGENTIC_EDIT_COMPILE`` compiles: the UNet's forward plus a plain number that dynamo
    specialises on, so weights of a new dtype or memory layout get a program of their own instead of
    one whose stride assertions fail (dynamo does not guard the weights' strides)."""
    # The trace must read the key: dynamo guards only the arguments a trace reads.
    if weight_layout_key is None:
        raise ValueError("weight_layout_key: pass weight_layout() of the UNet's weights")
    return type(unet).forward(unet, *args, **kwargs)


__all__ = ["COMPILE_ENV", "compile_setting", "layout_keyed_forward", "weight_layout", "weights_of"]

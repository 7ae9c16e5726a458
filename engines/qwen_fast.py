"""Speed path for an already loaded ``Qwen2_5_VLForConditionalGeneration``; outputs stay those of the bare model.

Two independent switches (shared/research/gpu-baseline.md section b has the H100 anchors):

* ``enable_batched_window_attention(model)``: the vision tower's windowed attention as one call per
  layer. With SDPA, transformers runs it as a Python loop of one SDPA call per window (about 100
  windows x 28 windowed blocks for a 1024x1024 image) plus a ``.tolist()`` sync in every block, which
  makes the 0.7 B-parameter encoder host-bound (210 ms of a 240 ms prefill on an H100).
* ``fast_generate(model, inputs, max_new_tokens)``: ``generate`` with a static KV cache kept per
  model (same memory every call, so CUDA graphs stay valid) and ``torch.compile`` (CUDA graphs) of
  the one-token decode step, which eager ``generate`` runs launch-bound at about a quarter of the
  weight-read speed. ``fast_generation_config`` is the generation config it uses.

How the attention hook works. ``Qwen2_5_VLVisionAttention.forward`` hands the packed sequence and its
``cu_seqlens`` to the attention function only when the vision config names an implementation whose
name contains "flash" (``transformers.utils.generic.is_flash_attention_requested``: the contract for
varlen kernels, hub kernels included); any other implementation gets the per-window loop. So the
function here is registered with ``transformers.AttentionInterface`` under a name containing "flash"
and set on the vision config only; the language model keeps its own implementation. No private
function is patched; ``_check_supported`` refuses a transformers whose vision attention lost that branch.

Inside, windows of equal length are stacked into one batch (a 1024x1024 image has 3 lengths: inner
windows, edge windows and the corner one) and each batch is one unmasked SDPA call,
so every window goes through the same kernel, on the same numbers, as in the bare loop. On CUDA in
half precision ``backend="varlen"`` (the default there) instead makes one call to torch's
variable-length flash attention over all windows. The window layout is read from the device once per
forward (not once per block) and its index tensors are cached per layout.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

# The names must contain "flash": that is what makes the vision attention pass cu_seqlens (see above).
GROUPED = "agentic_edit_flash_compatible_grouped_sdpa"
VARLEN = "agentic_edit_flash_compatible_varlen"
BACKENDS = ("auto", "grouped", "varlen")
DEFAULT_CACHE_BUCKET = 256      # static cache lengths are rounded up to this, so new prompts rarely recompile
_LAYOUT_CACHE_SIZE = 16


class UnsupportedModelError(ValueError):
    """The model (or the installed transformers) does not have the structure the speed path relies on."""


# ---- window layout --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Group:
    """``count`` windows of ``length`` tokens; ``index`` gathers their tokens (None: all, in order)."""

    length: int
    count: int
    index: torch.Tensor | None


@dataclass(frozen=True)
class _Layout:
    groups: tuple[_Group, ...]
    total: int
    max_length: int


_LAYOUTS: "OrderedDict[tuple, _Layout]" = OrderedDict()     # by (device, boundaries): index tensors built once
_LAYOUT_OF_TENSOR: dict[int, tuple[weakref.ref, _Layout]] = {}  # by cu_seqlens object: one device read per forward


def _build_layout(bounds: tuple[int, ...], device: torch.device) -> _Layout:
    starts_by_length: dict[int, list[int]] = {}
    for start, end in zip(bounds[:-1], bounds[1:]):
        if end > start:
            starts_by_length.setdefault(end - start, []).append(start)
    total = bounds[-1] - bounds[0]
    if len(starts_by_length) == 1 and bounds[0] == 0:
        (length, starts), = starts_by_length.items()
        return _Layout((_Group(length, len(starts), None),), total, length)
    groups = []
    for length, starts in starts_by_length.items():
        offsets = torch.tensor(starts, dtype=torch.long)[:, None] + torch.arange(length)[None, :]
        groups.append(_Group(length, len(starts), offsets.reshape(-1).to(device)))
    return _Layout(tuple(groups), total, max(starts_by_length))


def _layout_for(cu_seqlens: torch.Tensor) -> _Layout:
    """The layout of ``cu_seqlens``; the vision tower passes the same tensor to every block of a
    kind, so the device is read once per tensor object (weakly referenced, so a freed tensor's id
    can never return a stale layout)."""
    key = id(cu_seqlens)
    hit = _LAYOUT_OF_TENSOR.get(key)
    if hit is not None and hit[0]() is cu_seqlens:
        return hit[1]
    bounds = tuple(int(b) for b in cu_seqlens.tolist())   # the one host sync per forward and kind
    cache_key = (str(cu_seqlens.device), bounds)
    layout = _LAYOUTS.get(cache_key)
    if layout is None:
        layout = _build_layout(bounds, cu_seqlens.device)
        _LAYOUTS[cache_key] = layout
        while len(_LAYOUTS) > _LAYOUT_CACHE_SIZE:
            _LAYOUTS.popitem(last=False)
    else:
        _LAYOUTS.move_to_end(cache_key)
    _LAYOUT_OF_TENSOR[key] = (weakref.ref(cu_seqlens, lambda _ref, k=key: _LAYOUT_OF_TENSOR.pop(k, None)), layout)
    return layout


# ---- the attention functions ----------------------------------------------------------------------

def _grouped_sdpa(query, key, value, layout: _Layout, scale: float | None) -> torch.Tensor:
    """[1, H, S, D] in (the vision tower's layout) -> [1, S, H, D] out; one SDPA call per window length."""
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))           # [S, H, D] views
    heads, dim = q.shape[1], q.shape[2]
    if q.shape[0] != layout.total:
        raise ValueError(f"packed attention: {q.shape[0]} tokens but cu_seqlens covers {layout.total}")
    out = None
    for group in layout.groups:
        if group.index is None:
            parts = (t.reshape(group.count, group.length, heads, dim) for t in (q, k, v))
        else:
            parts = (t.index_select(0, group.index).view(group.count, group.length, heads, dim) for t in (q, k, v))
        gq, gk, gv = (t.transpose(1, 2) for t in parts)                     # [n, H, L, D]
        result = F.scaled_dot_product_attention(gq, gk, gv, scale=scale).transpose(1, 2)   # [n, L, H, D]
        if group.index is None:
            return result.reshape(1, layout.total, heads, dim)
        if out is None:
            out = q.new_empty(q.shape)
        out.index_copy_(0, group.index, result.reshape(-1, heads, dim))
    return out.unsqueeze(0)


def _varlen_kernel():
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def _varlen_usable(query: torch.Tensor) -> bool:
    dim = query.shape[-1]
    return (query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and dim % 8 == 0 and dim <= 256
            and _varlen_kernel() is not None)


def _varlen(query, key, value, cu_seqlens, max_length, scale):
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [S, H, D] packed
    cu = cu_seqlens.to(torch.int32)
    out = _varlen_kernel()(q, k, v, cu, cu, max_length, max_length, scale=scale)
    return out.unsqueeze(0)


def _packed_attention(module, query, key, value, attention_mask=None, scaling=None, dropout=0.0,
                      cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q=None, max_length_k=None,
                      is_causal=False, _backend="grouped", **kwargs):
    """An ``AttentionInterface`` function for bidirectional packed sequences (the vision tower)."""
    if cu_seq_lens_q is None or attention_mask is not None or is_causal or (dropout and module.training):
        # Not a packed bidirectional call (someone set this name on another model): plain SDPA.
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    if cu_seq_lens_k is not None and cu_seq_lens_k is not cu_seq_lens_q and not torch.equal(cu_seq_lens_k, cu_seq_lens_q):
        raise ValueError("packed attention: queries and keys must share their sequence boundaries")
    if _backend == "varlen" and _varlen_usable(query):
        max_length = max_length_q if isinstance(max_length_q, int) else _layout_for(cu_seq_lens_q).max_length
        return _varlen(query, key, value, cu_seq_lens_q, max_length, scaling), None
    return _grouped_sdpa(query, key, value, _layout_for(cu_seq_lens_q), scaling), None


def _grouped_attention(module, query, key, value, attention_mask=None, **kwargs):
    return _packed_attention(module, query, key, value, attention_mask, _backend="grouped", **kwargs)


def _varlen_attention(module, query, key, value, attention_mask=None, **kwargs):
    return _packed_attention(module, query, key, value, attention_mask, _backend="varlen", **kwargs)


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(GROUPED, _grouped_attention)
    AttentionInterface.register(VARLEN, _varlen_attention)


# ---- switching it on and off ----------------------------------------------------------------------

_ORIGINAL_IMPLEMENTATION: "weakref.WeakKeyDictionary[torch.nn.Module, str | None]" = weakref.WeakKeyDictionary()


def _vision_tower(model) -> torch.nn.Module:
    visual = getattr(getattr(model, "model", None), "visual", None) or getattr(model, "visual", None)
    if visual is None or not hasattr(visual, "blocks"):
        raise UnsupportedModelError(
            f"{type(model).__name__} has no Qwen2.5-VL vision tower (expected model.model.visual with blocks); "
            "the batched window attention is for Qwen2_5_VLForConditionalGeneration")
    return visual


def _check_supported(visual) -> list:
    """The vision attention modules, after checking they still pass cu_seqlens to flash-like functions."""
    attentions = [block.attn for block in visual.blocks]
    cls = type(attentions[0])
    try:
        source = inspect.getsource(cls.forward)
    except (OSError, TypeError):
        source = ""
    if "cu_seq_lens_q" not in source or "is_flash_attention_requested" not in source:
        import transformers

        raise UnsupportedModelError(
            f"{cls.__module__}.{cls.__name__} in transformers {transformers.__version__} does not hand cu_seqlens "
            "to flash-style attention functions; the batched window attention cannot be enabled (the model "
            "still works, at the bare speed)")
    return attentions


def _vision_configs(model, attentions) -> list:
    configs = {id(a.config): a.config for a in attentions}
    vision_config = getattr(getattr(model, "config", None), "vision_config", None)
    if vision_config is not None:
        configs.setdefault(id(vision_config), vision_config)
    return list(configs.values())


def enable_batched_window_attention(model, backend: str = "auto") -> str:
    """Run ``model``'s vision attention as one call per layer (per window length). Returns the
    implementation name now set on the vision config. ``backend``: "grouped" (one SDPA call per
    window length, any device and dtype), "varlen" (torch's variable-length flash attention, one
    call per layer; CUDA fp16/bf16 only, elsewhere it runs as "grouped"), "auto" (grouped: as fast on an H100 and exact). Undo with ``disable_batched_window_attention``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    visual = _vision_tower(model)
    attentions = _check_supported(visual)
    if backend == "auto":
        # Grouped SDPA: measured on an H100 (bench/RESULTS.md) as fast as varlen and bit-exact,
        # while torch 2.11's varlen kernel changed the logits beyond bf16 tolerance.
        backend = "grouped"
    name = VARLEN if backend == "varlen" else GROUPED
    _register()
    configs = _vision_configs(model, attentions)
    if visual not in _ORIGINAL_IMPLEMENTATION:
        _ORIGINAL_IMPLEMENTATION[visual] = attentions[0].config._attn_implementation
    for config in configs:
        config._attn_implementation = name
    log.info("Qwen2.5-VL vision attention: %s (was %s)", name, _ORIGINAL_IMPLEMENTATION[visual])
    return name


def disable_batched_window_attention(model) -> None:
    """Give the vision tower back the attention implementation it had before enabling."""
    visual = _vision_tower(model)
    if visual not in _ORIGINAL_IMPLEMENTATION:
        return
    original = _ORIGINAL_IMPLEMENTATION.pop(visual)
    for config in _vision_configs(model, [block.attn for block in visual.blocks]):
        config._attn_implementation = original


def batched_window_attention_enabled(model) -> bool:
    visual = _vision_tower(model)
    return visual.blocks[0].attn.config._attn_implementation in (GROUPED, VARLEN)


# ---- decoding ------------------------------------------------------------------------------------

@dataclass
class _CacheSlot:
    """The model's reusable static KV cache and what it was built for."""

    cache: Any
    length: int
    batch_size: int
    device: torch.device
    dtype: torch.dtype
    lock: threading.Lock


_STATIC_CACHES: "weakref.WeakKeyDictionary[torch.nn.Module, _CacheSlot]" = weakref.WeakKeyDictionary()
_SLOTS_LOCK = threading.Lock()


def _round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def _slot_for(model, batch_size: int, tokens: int, cache_bucket: int) -> _CacheSlot:
    """One static cache per model, reused (reset) by every call that fits in it.

    transformers builds a new StaticCache in every ``generate`` call. Its tensors are marked as
    static addresses for CUDA graphs, so new addresses make the compiled decode step re-record its
    graph on every call, and after 128 re-records torch stops using CUDA graphs for it altogether.
    Reusing one cache keeps the addresses. Its length is rounded up to ``cache_bucket`` tokens and
    only ever grows, because the compiled step is specialised to it."""
    from transformers import StaticCache

    param = next(model.parameters())
    length = _round_up(tokens, cache_bucket)
    with _SLOTS_LOCK:
        slot = _STATIC_CACHES.get(model)
        if (slot is None or slot.length < length or slot.batch_size != batch_size or slot.device != param.device
                or slot.dtype != param.dtype):
            if slot is not None and slot.batch_size == batch_size:
                length = max(length, slot.length)
            lock = slot.lock if slot is not None else threading.Lock()
            slot = _CacheSlot(StaticCache(config=model.config, max_cache_len=length), length, batch_size,
                              param.device, param.dtype, lock)
            _STATIC_CACHES[model] = slot
    return slot


def release_static_cache(model) -> None:
    """Drop the static KV cache ``fast_generate`` keeps for ``model`` (its memory, e.g. before offloading)."""
    with _SLOTS_LOCK:
        _STATIC_CACHES.pop(model, None)


def fast_generation_config(model, max_new_tokens: int, *, generation_config=None, compile: bool = True,
                           compile_mode: str | None = "reduce-overhead", compile_backend: str = "inductor",
                           **overrides):
    """A copy of ``generation_config`` (default: the model's) for decoding into a caller-supplied
    static cache (``fast_generate`` supplies it) with, when ``compile``, a ``torch.compile``d decode
    step: transformers compiles the one-token step itself (never the prefill) when the cache is
    static. ``overrides`` are further settings (``do_sample=False``, ``min_new_tokens=...``)."""
    from transformers import CompileConfig

    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens: expected a whole number of at least 1, got {max_new_tokens!r}")
    config = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
    unknown = config.update(**overrides)
    if unknown:
        raise ValueError(f"not generation settings: {', '.join(sorted(unknown))}")
    config.max_new_tokens = max_new_tokens
    config.cache_implementation = None          # the cache is passed in, not built by generate
    config.disable_compile = not compile
    config.compile_config = None
    if compile:
        config.compile_config = CompileConfig(fullgraph=False, mode=compile_mode, backend=compile_backend)
        # transformers compiles only on accelerators unless told otherwise; off-GPU (tests) say so.
        if next(model.parameters()).device.type not in ("cuda", "xpu"):
            config.compile_config._compile_all_devices = True
    return config


def fast_generate(model, inputs: Mapping[str, Any], max_new_tokens: int, *, compile: bool = True,
                  generation_config=None, cache_bucket: int = DEFAULT_CACHE_BUCKET,
                  compile_mode: str | None = "reduce-overhead", compile_backend: str = "inductor",
                  **generate_kwargs) -> torch.Tensor:
    """``model.generate(**inputs)`` with a static KV cache kept for this model and, when
    ``compile``, a compiled decode step; returns the token ids (prompt included), as ``generate``
    does. Keyword arguments that are generation settings (``do_sample``, ``min_new_tokens``) go
    into the config, the rest (``stopping_criteria``, ``streamer``) to ``generate``. Calls on one
    model run one at a time (they share its cache)."""
    if "input_ids" not in inputs:
        raise ValueError("inputs: expected the processor's output, with input_ids")
    if not isinstance(cache_bucket, int) or isinstance(cache_bucket, bool) or cache_bucket < 1:
        raise ValueError(f"cache_bucket: expected a whole number of at least 1, got {cache_bucket!r}")
    settings = {k: v for k, v in generate_kwargs.items() if _is_generation_setting(k)}
    passthrough = {k: v for k, v in generate_kwargs.items() if k not in settings}
    config = fast_generation_config(model, max_new_tokens, generation_config=generation_config, compile=compile,
                                    compile_mode=compile_mode, compile_backend=compile_backend, **settings)
    batch_size, prompt_length = inputs["input_ids"].shape
    slot = _slot_for(model, batch_size, prompt_length + max_new_tokens, cache_bucket)
    with slot.lock, torch.inference_mode():
        slot.cache.reset()
        return model.generate(**inputs, generation_config=config, past_key_values=slot.cache, **passthrough)


@functools.lru_cache(maxsize=None)
def _is_generation_setting(name: str) -> bool:
    from transformers import GenerationConfig

    return hasattr(GenerationConfig(), name)


__all__ = [
    "BACKENDS", "DEFAULT_CACHE_BUCKET", "GROUPED", "UnsupportedModelError", "VARLEN",
    "batched_window_attention_enabled", "disable_batched_window_attention", "enable_batched_window_attention",
    "fast_generate", "fast_generation_config", "release_static_cache",
]

"""Replay a diffusers UNet's denoising step as a CUDA graph: the same kernels, launched as one.

Why: on a GPU the SD-1.5 and SDXL UNet steps are bound by the host, not the GPU. Eager PyTorch
enqueues over a thousand small kernels per step, one Python call at a time. On the H100 baseline
machine (shared/research/gpu-baseline.md sections a and e) the SDXL inpainting step (1024², CFG
batch 2, fp16) took 69-122 ms eager and 43.5 ms replayed as a CUDA graph (compute floor 17.9 ms);
the SD-1.5 inpainting step at 512² took 38.4 ms for 2.1 ms of compute. ``torch.compile`` reaches
the same SDXL time but compiled for 132 s; a capture costs about one eager step.

How:

* ``graphed_unet(unet)`` (a context manager) routes ``unet.forward`` through the UNet's
  ``UNetGraphRunner`` for the block; the pipeline's code is not touched. It is a no-op unless the
  UNet is on CUDA and ``AGENTIC_EDIT_CUDA_GRAPHS`` is not ``0`` (default: on), so CPU and MPS run
  eagerly.
* The runner keys every call by what fixes the recorded kernels: the shape, dtype and device of
  each tensor argument (latents with the mask channels, timestep, prompt embeddings, SDXL's added
  conditions, IP-Adapter image embeddings), the values of the other arguments, and the autocast
  state. The first ``WARMUP_CALLS`` calls of a key run eagerly (lazy initialisation and cuDNN's
  algorithm search happen outside the capture); the next one records the forward into a graph with
  static input buffers. From then on a call copies its inputs into those buffers, replays, and
  returns a copy of the static output: a scheduler may keep a model output across steps (PNDM
  does), and the next replay overwrites the static one.
* A graph reads the weights at the addresses they had at capture and bakes in Python numbers such
  as IP-Adapter scales. On entry the context compares a signature of the weights' addresses, the
  attention processors (IP-Adapter switching swaps them) and FreeU's factors with the one the graphs
  were recorded under, and drops the graphs when it changed. Other forward-time settings changed in
  place need ``release_graphs(unet)``.
* Eager instead, with the reason kept in ``runner.stats``: gradients enabled, training mode,
  accelerate hooks (CPU offload moves weights inside forward), PEFT adapters (LoRA scales are
  Python numbers), arguments that are neither tensors nor plain values, tensors off the UNet's
  device. A failed capture is logged once per UNet and its key runs eagerly from then on.
* At most ``MAX_GRAPHS`` graphs per UNet, least recently used dropped first: each holds its step's
  activations (about 0.5 GiB for SDXL at 1024², batch 2, fp16). The model store drops them when it
  offloads the model (``InpaintModel.release_device_caches``).
* ``AGENTIC_EDIT_COMPILE=1`` (opt-in): the forward is ``torch.compile``d (inductor, default mode)
  and the compiled kernels are what the graph records. Measured on an H100 (bench/bench_inpaint.py,
  2026-11-24): SDXL 1024² 30 steps 1602 -> 1344 ms for the pipeline, ~35 ms a step instead of ~44,
  output within fp16 rounding of eager (rel err 6e-4); the compile costs ~2 minutes once per shape.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import numbers
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterator

import torch

from ..models.offload import module_tree
from .compiled_forward import COMPILE_ENV, compile_setting, layout_keyed_forward, weight_layout, weights_of

log = logging.getLogger(__name__)

ENV = "AGENTIC_EDIT_CUDA_GRAPHS"
WARMUP_CALLS = 1    # eager calls of a new key before its capture
MAX_GRAPHS = 2      # graphs kept per UNet
_MAX_SEEN_KEYS = 64
_ON = ("", "1", "true", "yes", "on", "auto")
_OFF = ("0", "false", "no", "off")


def cuda_graphs_setting() -> bool:
    """``AGENTIC_EDIT_CUDA_GRAPHS``: on unless set to 0/false/no/off (an unknown value counts as on)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in _OFF:
        return False
    if value not in _ON:
        log.warning("%s=%r is not one of 1/0, true/false, yes/no, on/off; CUDA graphs stay on", ENV, value)
    return True


def unet_device(unet) -> torch.device | None:
    parameter = next(unet.parameters(), None)
    return None if parameter is None else parameter.device


def why_not_graphed(unet, enabled: bool | None = None) -> str | None:
    """None when ``graphed_unet`` would replay ``unet``'s steps as CUDA graphs, else the reason."""
    if not isinstance(unet, torch.nn.Module):
        return f"the UNet is a {type(unet).__name__}, not a torch module"
    if enabled is False or (enabled is None and not cuda_graphs_setting()):
        return f"turned off ({ENV}=0)" if enabled is None else "turned off by the caller"
    forward = unet.__dict__.get("forward")
    if (forward is not None and not isinstance(forward, UNetGraphRunner)) or hasattr(unet, "_hf_hook"):
        return "its forward is wrapped by hooks (accelerate offloading moves weights during the step)"
    if getattr(unet, "_hf_peft_config_loaded", False):
        return "PEFT adapters (LoRA) are loaded: a graph would freeze their scales"
    if unet.training:
        return "the UNet is in training mode"
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in _forward_signature(unet).parameters.values()):
        return "its forward takes *args/**kwargs"
    device = unet_device(unet)
    if device is None or device.type != "cuda":
        return f"the UNet is on {device}: CUDA graphs need a CUDA device"
    return None


def _forward_signature(unet) -> inspect.Signature:
    return inspect.signature(type(unet).forward.__get__(unet))


# ---- call keys ------------------------------------------------------------------------------------

class _NotGraphable(Exception):
    """A call the runner leaves to eager execution; the message says why."""


def _describe(value: Any, where: str, device: torch.device) -> Hashable:
    """A hashable description of an argument: tensor metadata, plain values, nested containers."""
    if isinstance(value, torch.Tensor):
        if value.device != device:
            raise _NotGraphable(f"{where} is on {value.device}, the UNet on {device}")
        return ("tensor", tuple(value.shape), value.dtype, value.requires_grad)
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("value", type(value).__name__, value)
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_describe(v, f"{where}[{i}]", device) for i, v in enumerate(value)))
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return ("dict", tuple((k, _describe(value[k], f"{where}[{k!r}]", device)) for k in sorted(value)))
    raise _NotGraphable(f"{where} is a {type(value).__name__}")


def _tensors(value: Any, out: list | None = None) -> list[torch.Tensor]:
    """The tensors inside an argument, in ``_describe``'s order."""
    out = [] if out is None else out
    if isinstance(value, torch.Tensor):
        out.append(value)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _tensors(item, out)
    elif isinstance(value, dict):
        for key in sorted(value):
            _tensors(value[key], out)
    return out


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    return value


def timestep_tensor(timestep: Any, device: torch.device) -> torch.Tensor:
    """The timestep as a tensor on ``device``, made the way the UNet makes it from a number
    (``get_time_embed``: float -> float64, int -> int64, shape [1]), so the graph sees a buffer."""
    if isinstance(timestep, torch.Tensor):
        return timestep if timestep.device == device else timestep.to(device)
    if isinstance(timestep, bool) or not isinstance(timestep, numbers.Number):
        raise _NotGraphable(f"timestep is a {type(timestep).__name__}")
    dtype = torch.float64 if isinstance(timestep, float) else torch.int64
    return torch.tensor([timestep], dtype=dtype, device=device)


def step_key(arguments: dict[str, Any], device: torch.device) -> tuple:
    """What fixes the recorded kernels of a call: every argument's description (tensors by shape,
    dtype and device; other values by value) and the autocast state. ``arguments``: the forward's
    parameters by name, timestep already a tensor. Raises ``_NotGraphable``."""
    described = tuple((name, _describe(arguments[name], name, device)) for name in sorted(arguments))
    autocast = (torch.is_autocast_enabled(device.type),
                torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None)
    return (str(device), described, autocast)


def unet_signature(unet, weights: list[torch.Tensor] | None = None) -> int:
    """What a recorded graph depends on beyond its inputs: where the weights are, which attention
    processors run (and their scales), FreeU's factors. Checked on every graphed call, so it walks the
    modules once without names (diffusers' ``attn_processors`` builds a name for each)."""
    weights = tuple(t.data_ptr() for t in (weights if weights is not None else weights_of(unet)))
    processors = tuple((id(p), repr(getattr(p, "scale", None)))
                       for p in (m.get_processor() for m in module_tree(unet) if hasattr(type(m), "get_processor")))
    freeu = tuple(tuple(getattr(block, k, None) for k in ("s1", "s2", "b1", "b2"))
                  for block in getattr(unet, "up_blocks", ()))
    config = getattr(unet, "config", {})
    return hash((weights, processors, freeu, str(config.get("encoder_hid_dim_type", None))))


# ---- graphs -----------------------------------------------------------------------------------------

class CudaGraph:
    """``torch.cuda.CUDAGraph`` behind the two calls ``CapturedStep`` needs."""

    def __init__(self, device: torch.device):
        self.device = device
        self.graph = torch.cuda.CUDAGraph()

    def capture(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        # thread_local: CUDA work of other threads (ComfyUI's server) does not break the capture.
        with torch.cuda.device(self.device), torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            return fn()

    def replay(self) -> None:
        with torch.cuda.device(self.device):
            self.graph.replay()


class CapturedStep:
    """One recorded forward: static copies of the first call's arguments, and the graph's output."""

    def __init__(self, forward: Callable[..., Any], arguments: dict[str, Any], graph):
        # Plain tensors (not inference tensors), so later in-place copies work in any grad mode.
        with torch.inference_mode(False), torch.no_grad():
            self.arguments = _map_tensors(arguments, lambda t: t.detach().clone())
        self.inputs = _tensors(self.arguments)
        self.graph = graph
        with torch.no_grad():
            self.output = graph.capture(lambda: forward(**self.arguments, return_dict=False)[0])

    def run(self, arguments: dict[str, Any]) -> torch.Tensor:
        with torch.no_grad():
            for static, tensor in zip(self.inputs, _tensors(arguments)):
                if static is not tensor:
                    static.copy_(tensor)
            self.graph.replay()
            return self.output.clone()


@dataclass
class GraphStats:
    captures: int = 0
    replays: int = 0
    eager_calls: int = 0
    failures: int = 0
    capture_seconds: float = 0.0      # host time spent recording graphs (the one-time cost per key)
    compile_seconds: float = 0.0      # the first compiled call (AGENTIC_EDIT_COMPILE=1), compile included
    last_eager_reason: str = ""


class UNetGraphRunner:
    """Runs a UNet's forward eagerly or from recorded CUDA graphs (see the module doc).

    Called like ``unet.forward``. ``graph_factory(device)`` makes a graph object with
    ``capture(fn) -> output`` and ``replay()`` (default: ``CudaGraph``)."""

    def __init__(self, unet, *, max_graphs: int = MAX_GRAPHS, warmup_calls: int = WARMUP_CALLS,
                 graph_factory: Callable[[torch.device], Any] | None = None):
        if max_graphs < 1 or warmup_calls < 0:
            raise ValueError(f"max_graphs must be >= 1 and warmup_calls >= 0, got {max_graphs}, {warmup_calls}")
        self._unet = weakref.ref(unet)   # the UNet holds its runner; no cycle through the runner
        self.max_graphs, self.warmup_calls = max_graphs, warmup_calls
        self._graph_factory = graph_factory
        self._signature = inspect.signature(type(unet).forward)
        self._graphs: OrderedDict[tuple, CapturedStep] = OrderedDict()
        self._seen: OrderedDict[tuple, int] = OrderedDict()
        self._failed: set[tuple] = set()
        self._recorded_under: int | None = None
        self._warned = False
        self._lock = threading.RLock()
        self._compiled: Callable[..., Any] | None = None           # torch.compile of layout_keyed_forward
        self._compiled_forward: Callable[..., Any] | None = None   # it, bound to the weights' layout key
        self.stats = GraphStats()

    def _forward(self, unet) -> Callable[..., Any]:
        """The function a step runs and records: ``type(unet).forward``, or its compiled form when
        ``AGENTIC_EDIT_COMPILE`` is on for a CUDA UNet (compiled once, on the first call)."""
        forward = type(unet).forward
        device = unet_device(unet)
        if not compile_setting() or device is None or device.type != "cuda":
            return forward
        if self._compiled is None:
            # dynamic=False: one specialised program per shape, as the graphs are.
            self._compiled = torch.compile(layout_keyed_forward, dynamic=False)
        if self._compiled_forward is None:
            self._compiled_forward = functools.partial(self._compiled,
                                                       weight_layout_key=weight_layout(weights_of(unet)))
        return self._compiled_forward

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def keys(self) -> list[tuple]:
        return list(self._graphs)

    def clear(self) -> None:
        """Drop every graph (their memory goes back to the allocator) and the warm-up counts."""
        with self._lock:
            self._graphs.clear()
            self._seen.clear()
            self._failed.clear()

    def refresh(self) -> bool:
        """Drop the graphs if the weights moved or the attention processors changed since they were
        recorded; True when they were dropped."""
        unet = self._unet()
        if unet is None:
            return False
        weights = weights_of(unet)
        signature = unet_signature(unet, weights)
        with self._lock:
            stale = self._recorded_under is not None and signature != self._recorded_under and bool(self._graphs)
            if stale:
                log.info("UNet weights or attention processors changed: dropping %d CUDA graph(s)", len(self._graphs))
                self.clear()
            self._recorded_under = signature
            compiled = self._compiled_forward
            if compiled is not None and weight_layout(weights) != compiled.keywords["weight_layout_key"]:
                log.info("UNet weights changed dtype or memory layout: its forward compiles again")
                self._compiled_forward = None
                self.stats.compile_seconds = 0.0
            return stale

    def __call__(self, *args, **kwargs):
        unet = self._unet()
        if unet is None:
            raise RuntimeError("the UNet of this graph runner no longer exists")
        forward = self._forward(unet)
        with self._lock:
            try:
                arguments, return_dict, key = self._prepare(unet, args, kwargs)
            except _NotGraphable as exc:
                return self._eager(forward, unet, args, kwargs, str(exc))
            step = self._graphs.get(key)
            if step is None:
                if key in self._failed:
                    return self._eager(forward, unet, args, kwargs, "its capture failed before")
                seen = self._seen.pop(key, 0) + 1
                self._seen[key] = seen
                while len(self._seen) > _MAX_SEEN_KEYS:
                    self._seen.popitem(last=False)
                if seen <= self.warmup_calls:
                    # Called exactly as the capture will call it (every argument by name, the timestep
                    # as a tensor): a compiled forward then meets the same guards at capture and does
                    # not recompile inside it.
                    output = self._eager(forward, unet, (), dict(arguments, return_dict=False),
                                         "warm-up call of a new shape")[0]
                    return self._wrap(output, return_dict)
                step = self._capture(unet, forward, arguments, key)
                if step is None:
                    return self._eager(forward, unet, args, kwargs, "its capture failed")
            else:
                self._graphs.move_to_end(key)
            self.stats.replays += 1
            output = step.run(arguments)
        return self._wrap(output, return_dict)

    @staticmethod
    def _wrap(output, return_dict: bool):
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=output)
        return (output,)

    # ---- internals --------------------------------------------------------------------------------

    def _prepare(self, unet, args, kwargs) -> tuple[dict[str, Any], bool, tuple]:
        if torch.is_grad_enabled():
            raise _NotGraphable("gradients are enabled")
        bound = self._signature.bind(unet, *args, **kwargs)
        bound.apply_defaults()  # an argument left out and the same one passed as its default: one key
        arguments = dict(bound.arguments)
        arguments.pop("self", None)
        return_dict = bool(arguments.pop("return_dict", True))
        device = unet_device(unet)
        if "timestep" in arguments:
            arguments["timestep"] = timestep_tensor(arguments["timestep"], device)
        return arguments, return_dict, step_key(arguments, device)

    def _eager(self, forward, unet, args, kwargs, reason: str):
        self.stats.eager_calls += 1
        self.stats.last_eager_reason = reason
        began = time.perf_counter()
        try:
            return forward(unet, *args, **kwargs)
        finally:
            if forward is self._compiled_forward and forward is not None and not self.stats.compile_seconds:
                # The first compiled call pays the compile: the one-time cost, reported apart.
                self.stats.compile_seconds = time.perf_counter() - began

    def _capture(self, unet, forward, arguments: dict[str, Any], key: tuple) -> CapturedStep | None:
        while len(self._graphs) >= self.max_graphs:  # free the oldest graph's memory before recording
            self._graphs.popitem(last=False)
        factory = self._graph_factory or CudaGraph
        began = time.perf_counter()
        try:
            step = CapturedStep(lambda **kw: forward(unet, **kw), arguments, factory(unet_device(unet)))
        except Exception as exc:  # an op that cannot be captured, out of memory, a driver refusal
            self._failed.add(key)
            self.stats.failures += 1
            if not self._warned:
                self._warned = True
                log.warning("CUDA graph capture of the UNet step failed (%s: %s); this shape runs eagerly",
                            type(exc).__name__, exc)
            else:
                log.debug("CUDA graph capture failed again (%s)", exc)
            return None
        elapsed = time.perf_counter() - began
        self.stats.captures += 1
        self.stats.capture_seconds += elapsed
        log.info("recorded the UNet step as a CUDA graph in %.2f s (%s)", elapsed, _shape_summary(arguments))
        self._graphs[key] = step
        return step


def _shape_summary(arguments: dict[str, Any]) -> str:
    shapes = [f"{name} {tuple(value.shape)}" for name, value in arguments.items() if isinstance(value, torch.Tensor)]
    return ", ".join(shapes)


# ---- one runner per UNet, and the context manager ----------------------------------------------------

_RUNNERS: "weakref.WeakKeyDictionary[torch.nn.Module, UNetGraphRunner]" = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.Lock()


def runner_for(unet) -> UNetGraphRunner:
    """The UNet's runner (made on first use; it lives as long as the UNet)."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(unet)
        if runner is None:
            runner = _RUNNERS[unet] = UNetGraphRunner(unet)
        return runner


def release_graphs(unet) -> None:
    """Drop ``unet``'s recorded graphs now (for example before offloading it to make room)."""
    with _RUNNERS_LOCK:
        runner = _RUNNERS.get(unet)
    if runner is not None:
        runner.clear()


@contextlib.contextmanager
def graphed_unet(unet, enabled: bool | None = None) -> Iterator[UNetGraphRunner | None]:
    """For the block, ``unet``'s forward replays recorded CUDA graphs where it can (see the module
    doc). Yields the runner, or None when the UNet runs eagerly (``why_not_graphed`` says why).
    ``enabled``: None follows ``AGENTIC_EDIT_CUDA_GRAPHS``; False turns graphs off for the block."""
    reason = why_not_graphed(unet, enabled)
    if reason is not None:
        log.debug("UNet steps run eagerly: %s", reason)
        yield None
        return
    runner = runner_for(unet)
    if unet.__dict__.get("forward") is runner:  # already inside a graphed_unet block
        yield runner
        return
    runner.refresh()
    unet.forward = runner  # an instance attribute: nn.Module.__call__ (and its hooks) call it
    try:
        yield runner
    finally:
        if unet.__dict__.get("forward") is runner:
            del unet.__dict__["forward"]


# COMPILE_ENV and compile_setting live in compiled_forward; named here too, where the graphs' settings are.
__all__ = ["COMPILE_ENV", "ENV", "MAX_GRAPHS", "WARMUP_CALLS", "CapturedStep", "CudaGraph", "GraphStats",
           "UNetGraphRunner", "compile_setting", "cuda_graphs_setting", "graphed_unet", "release_graphs", "runner_for", "step_key", "timestep_tensor",
           "unet_signature", "why_not_graphed"]

"""Replay fixed-shape model calls (SAM-2's image encoder and mask decoder) as CUDA graphs.

Why: SAM-2's calls are bound by the host, not the GPU. The large image encoder enqueues several
hundred small kernels for a 1024x1024 image (25.9 ms bare against a 2.4 ms compute floor on the
H100 baseline, shared/research/gpu-baseline.md), and one prompt through the mask decoder is a few
hundred more launches for well under a millisecond of GPU work. A replayed graph launches them all
at once: the same kernels, so the same bits.

``CallGraphs`` is the small, model-agnostic part of ``engines/unet_graph.py``'s runner: a call is
``fn(*inputs) -> tensor or tuple of tensors``, keyed by the caller (what fixes its kernels besides
the inputs' shapes and dtypes, e.g. "box prompt, single mask") and by the weights' addresses. The
first ``warmup_calls`` calls of a key run eagerly (lazy initialisation, cuDNN/cuBLAS set-up stay
out of the capture); the next records a graph with static copies of the inputs; later calls copy
their inputs in and replay. The outputs returned are the graph's own static tensors: a caller that
keeps them past the next call of the same key must clone them. A failed capture is logged once and
its key runs eagerly from then on. ``clear()`` gives the graphs' memory back (the store calls it
through the engine when it offloads the model).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable, Sequence

import torch

from .unet_graph import CudaGraph, cuda_graphs_setting

log = logging.getLogger(__name__)

WARMUP_CALLS = 1


class _Recorded:
    """One captured call: static inputs, the graph, its static outputs."""

    def __init__(self, fn: Callable[..., Any], inputs: Sequence[torch.Tensor], graph):
        with torch.inference_mode(False), torch.no_grad():
            self.inputs = [t.detach().clone() for t in inputs]
        self.graph = graph
        with torch.no_grad():
            self.outputs = graph.capture(lambda: fn(*self.inputs))

    def run(self, inputs: Sequence[torch.Tensor]):
        with torch.no_grad():
            for static, tensor in zip(self.inputs, inputs):
                if static is not tensor:
                    static.copy_(tensor)
            self.graph.replay()
        return self.outputs


class CallGraphs:
    """Graphs of one model's calls (see the module doc). ``weights``: the model's parameters and
    buffers, whose addresses a recorded graph reads; ``graph_factory(device)`` makes an object with
    ``capture(fn) -> outputs`` and ``replay()`` (default ``unet_graph.CudaGraph``)."""

    def __init__(self, weights: Callable[[], Sequence[torch.Tensor]], *, max_graphs: int = 4,
                 warmup_calls: int = WARMUP_CALLS, graph_factory: Callable[[torch.device], Any] | None = None,
                 name: str = "model"):
        self._weights = weights
        self._tensors: list[torch.Tensor] | None = None
        self.max_graphs, self.warmup_calls, self.name = max_graphs, warmup_calls, name
        self._graph_factory = graph_factory
        self._graphs: OrderedDict[tuple, _Recorded] = OrderedDict()
        self._seen: dict[tuple, int] = {}
        self._failed: set[tuple] = set()
        self._recorded_under: tuple | None = None
        self._warned = False
        self._lock = threading.RLock()
        self.captures = self.replays = self.eager_calls = 0
        self.capture_seconds = 0.0

    @property
    def graph_count(self) -> int:
        return len(self._graphs)

    def clear(self) -> None:
        """Drop every graph (their memory pools go back to the allocator) and the warm-up counts."""
        with self._lock:
            self._graphs.clear()
            self._seen.clear()
            self._failed.clear()
            self._recorded_under = None

    def enabled_for(self, device: torch.device) -> bool:
        return device.type == "cuda" and cuda_graphs_setting() and not torch.is_grad_enabled()

    def _signature(self) -> tuple:
        # The weight tensors themselves stay the same objects when the store moves a model
        # (Module.to swaps their data), so the list is taken once and only the addresses are read.
        if self._tensors is None:
            self._tensors = list(self._weights())
        return tuple(t.data_ptr() for t in self._tensors)

    def check_weights(self) -> None:
        """Drop the graphs when the weights moved since they were recorded (call once per use)."""
        signature = self._signature()
        with self._lock:
            if self._recorded_under is not None and signature != self._recorded_under and self._graphs:
                log.info("%s weights moved: dropping %d CUDA graph(s)", self.name, len(self._graphs))
                self.clear()
            self._recorded_under = signature

    def __call__(self, key: Hashable, fn: Callable[..., Any], *inputs: torch.Tensor):
        device = inputs[0].device
        if not self.enabled_for(device):
            self.eager_calls += 1
            return fn(*inputs)
        full_key = (key, tuple((tuple(t.shape), t.dtype, t.device) for t in inputs))
        with self._lock:
            recorded = self._graphs.get(full_key)
            if recorded is None:
                seen = self._seen.get(full_key, 0) + 1
                self._seen[full_key] = seen
                if full_key in self._failed or seen <= self.warmup_calls:
                    self.eager_calls += 1
                    return fn(*inputs)
                recorded = self._capture(full_key, fn, inputs, device)
                if recorded is None:
                    self.eager_calls += 1
                    return fn(*inputs)
            else:
                self._graphs.move_to_end(full_key)
            self.replays += 1
            return recorded.run(inputs)

    def _capture(self, key: tuple, fn, inputs, device) -> _Recorded | None:
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        began = time.perf_counter()
        try:
            recorded = _Recorded(fn, inputs, (self._graph_factory or CudaGraph)(device))
        except Exception as exc:  # an op that cannot be captured, out of memory, a driver refusal
            self._failed.add(key)
            if not self._warned:
                self._warned = True
                log.warning("CUDA graph capture of a %s call failed (%s: %s); it runs eagerly",
                            self.name, type(exc).__name__, exc)
            return None
        self.captures += 1
        self.capture_seconds += time.perf_counter() - began
        self._graphs[key] = recorded
        return recorded


__all__ = ["CallGraphs", "WARMUP_CALLS"]

"""Euclidean distance transforms that need to be exact only up to a limit, run in strips on threads.

Growing, shrinking and feathering a mask read a pixel's distance to the nearest pixel on the other
side only up to the radius; beyond it the answer is just "too far". The nearest such pixel of a pixel
within the limit lies at most ``limit`` rows away, so the transform can run on horizontal strips
padded by ``ceil(limit) + 1`` rows: each strip is exact up to the limit (ties give the same distance,
so the values are bit-identical to one transform of the whole array), and beyond it every value
still exceeds the limit, because a strip only sees a subset of the zeros. scipy's transform releases
the GIL for most of its work, so the strips run in parallel. On a large or speckled mask this is
what a grow or feather spends its time on (~0.1 s per 1024² transform on one core).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage

MIN_PIXELS_TO_SPLIT = 512 * 512   # below this, one transform is faster than the threads' overhead
MAX_WORKERS = 8

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_WORKERS))


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_workers(), thread_name_prefix="agentic-edit-distance")
        return _pool


def _transform(array: np.ndarray) -> np.ndarray:
    if array.all():   # no zero to measure to: every distance is beyond any limit
        return np.full(array.shape, np.inf)
    return ndimage.distance_transform_edt(array)


def distance_to_zeros(array: np.ndarray, limit: float) -> np.ndarray:
    """``ndimage.distance_transform_edt(array)`` wherever that is at most ``limit``; elsewhere a value
    above ``limit`` (not necessarily the distance). ``array`` is boolean; its False pixels are the zeros."""
    array = np.asarray(array, dtype=bool)
    height = array.shape[0]
    pad = math.ceil(limit) + 1
    # Each strip should be several times taller than its padding, or the padding is most of the work.
    strips = min(_workers(), height // (4 * pad)) if array.size >= MIN_PIXELS_TO_SPLIT else 1
    if strips < 2:
        return _transform(array)
    out = np.empty(array.shape, dtype=np.float64)
    edges = np.linspace(0, height, strips + 1).astype(int)

    def run(top: int, bottom: int) -> None:
        low, high = max(0, top - pad), min(height, bottom + pad)
        out[top:bottom] = _transform(array[low:high])[top - low:bottom - low]

    for future in [_executor().submit(run, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]:
        future.result()
    return out


__all__ = ["MIN_PIXELS_TO_SPLIT", "distance_to_zeros"]

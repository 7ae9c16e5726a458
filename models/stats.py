"""What the model store did in this process: builds, moves, offloads, frees, and how long each took.

Benches read ``snapshot()`` before and after a chain and report the difference (time spent
loading, moving and freeing models); tests read ``build_counts()`` to check that no model was
built twice in one run. Counting is cheap (a lock and a few additions per event) and always on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterator

_lock = threading.Lock()


@dataclass
class StoreStats:
    builds: int = 0                 # engine build functions called (models loaded from files)
    build_s: float = 0.0
    build_bytes: int = 0
    moves_in: int = 0               # whole models made resident on the compute device
    move_in_s: float = 0.0
    move_in_bytes: int = 0
    offloads: int = 0               # whole models moved to the offload device
    offload_s: float = 0.0
    offload_bytes: int = 0          # bytes actually copied back (a clean pinned copy costs nothing)
    frees: int = 0                  # models dropped from the cache
    free_s: float = 0.0
    streamed_bytes: int = 0         # bytes copied in by partial (streamed) residency
    shared_hits: int = 0            # shared components handed out again instead of loaded again
    empty_cache_calls: int = 0
    per_key_builds: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["per_key_builds"] = {"|".join(k) if isinstance(k, tuple) else str(k): v
                                 for k, v in self.per_key_builds.items()}
        return out


_stats = StoreStats()


def add(**amounts) -> None:
    with _lock:
        for name, value in amounts.items():
            setattr(_stats, name, getattr(_stats, name) + value)


def count_build(key, seconds: float, nbytes: int) -> None:
    with _lock:
        _stats.builds += 1
        _stats.build_s += seconds
        _stats.build_bytes += nbytes
        _stats.per_key_builds[key] += 1


def snapshot() -> StoreStats:
    """A copy of the counters now."""
    with _lock:
        copy = StoreStats(**{k: v for k, v in asdict(_stats).items() if k != "per_key_builds"})
        copy.per_key_builds = Counter(_stats.per_key_builds)
        return copy


def difference(after: StoreStats, before: StoreStats) -> dict:
    """``after - before`` as a plain dict (per-key builds: only keys built in between)."""
    out = {}
    for name, value in asdict(after).items():
        if name == "per_key_builds":
            continue
        out[name] = value - getattr(before, name)
    delta = after.per_key_builds - before.per_key_builds
    out["per_key_builds"] = {"|".join(k) if isinstance(k, tuple) else str(k): v for k, v in delta.items()}
    return out


def build_counts() -> dict:
    """How many times each cache key (files, device, dtype) was built in this process."""
    with _lock:
        return dict(_stats.per_key_builds)


def reset() -> None:
    global _stats
    with _lock:
        _stats = StoreStats()


@contextlib.contextmanager
def timed(kind: str, nbytes: int = 0) -> Iterator[None]:
    """Add the block's wall time to ``<kind>_s`` and one to the counter ``kind`` (moves_in, offloads, frees)."""
    began = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - began
        counter = {"move_in": "moves_in", "offload": "offloads", "free": "frees"}[kind]
        with _lock:
            setattr(_stats, counter, getattr(_stats, counter) + 1)
            setattr(_stats, f"{kind}_s", getattr(_stats, f"{kind}_s") + seconds)
            if kind in ("move_in", "offload"):
                setattr(_stats, f"{kind}_bytes", getattr(_stats, f"{kind}_bytes") + nbytes)

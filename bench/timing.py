"""Timing and reporting shared by the benches: median CUDA-event times, peak memory, a markdown table."""

from __future__ import annotations

import datetime
import gc
import statistics
import sys
import time

import torch


class Clock:
    """Median wall time of a call: CUDA events on a GPU (after warm-up), perf_counter on the CPU."""

    def __init__(self, device: torch.device, warmup: int, iters: int):
        self.device, self.warmup, self.iters = device, warmup, iters

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def warm(self, fn, times: int) -> None:
        for _ in range(times):
            fn()
        self.sync()

    def measure(self, fn, warmup: int | None = None, iters: int | None = None) -> dict:
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
        for _ in range(self.warmup if warmup is None else warmup):
            result = fn()
        self.sync()
        times = []
        for _ in range(self.iters if iters is None else iters):
            if self.device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                result = fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                began = time.perf_counter()
                result = fn()
                times.append((time.perf_counter() - began) * 1000)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**30 if self.device.type == "cuda" else None
        return {"ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "n": len(times),
                "peak_gib": peak, "result": result}


def rel_error(ours: torch.Tensor, bare: torch.Tensor) -> float:
    ours, bare = ours.float(), bare.float()
    return float((ours - bare).norm() / bare.norm().clamp_min(1e-30))


def markdown(rows: list[dict], first_call: bool = False) -> str:
    """The benches' table; ``first_call`` adds a column for each row's ``first_call_ms``."""
    fmt = lambda v, p=1: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    first = ("first call ms | ", "---|") if first_call else ("", "")
    lines = [f"| measurement | ours = | bare ms | ours ms | ours/bare | {first[0]}predicted ours ms | "
             "peak GiB bare / ours | check |", f"|---|---|---|---|---|{first[1]}---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | FAILED | | | | {'| ' if first_call else ''}| | {r['error'][:200]} |")
            continue
        first_value = f"{fmt(r.get('first_call_ms'))} | " if first_call else ""
        lines.append(f"| {r['name']} | {r.get('variant', '')} | {fmt(r['bare_ms'], 2)} | {fmt(r.get('ours_ms'), 2)} | "
                     f"{fmt(r.get('ratio'), 3)} | {first_value}{fmt(r.get('predicted_ours_ms'))} | "
                     f"{fmt(r.get('bare_peak_gib'), 2)} / {fmt(r.get('ours_peak_gib'), 2)} | {r.get('check', '')} |")
    return "\n".join(lines)


def write_report(target, report: dict) -> None:
    """Write a bench's report (all numbers, environment, checks) as JSON at ``target``."""
    import json
    from pathlib import Path

    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text(json.dumps(report, indent=1, default=str))


def environment(device) -> dict:
    import transformers

    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
           "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 2), cuda=torch.version.cuda,
                   sms=props.multi_processor_count)
    return env

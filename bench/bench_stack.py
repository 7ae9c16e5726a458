"""The whole stack on one GPU: two chains through the engines and the model store, against a bare script.

Chains (bench/stack_chains.py): edit = ground (Qwen2.5-VL-7B) -> segment (SAM-2.1-large) -> SDXL
inpaint 1024x1024, 30 steps; remove_text = SDXL removal -> draw text. Full-size random weights are
written to a local models root first, in the real folder layouts (bench/stack_models.py), and the
engines load them through the resolver, as a user's install would.

Parts (each one command on the GPU machine; ~2-6 min on an H100 apiece):

* ``warm``: bare (everything preloaded with plain library calls) then ours (profile ``high``): a
  first run, then ``--iters`` warm runs; plus the diffusion compute floor (UNet FLOPs of one
  step x 30 + VAE, over the measured bf16 matmul rate). Bare runs SDXL in fp16 with diffusers' fp32
  VAE round trip; ours at the engine's own dtype (bf16 on a card that has it; ``--ours-fp16``: fp16).
* ``cold``: disk read bandwidth, then ours and bare from a dropped page cache (first run: loads
  included), profile ``high``.
* ``caps``: ours under ``high`` (no cap), ``auto`` under a 24 GB cap and ``low`` under 12 GB
  (``torch.cuda.set_per_process_memory_fraction``), both chains, first + warm runs.

    python3 bench/bench_stack.py --parts warm      # also: --parts cold, --parts caps (or a comma list)
    python3 bench/bench_stack.py --tiny            # tiny configs on the CPU: checks the whole script

Prints a markdown table; writes $OUT/bench_stack.json when OUT is set (or --json PATH). The models
root defaults to /tmp/agentic-stack-models (``--models-root``; written once, reused while the
machine lives).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.pack import import_pack  # noqa: E402

import_pack()
from agentic_edit.models import free, set_memory_profile  # noqa: E402
from agentic_edit.models.devices import set_memory_fraction  # noqa: E402
from bench import stack_chains as chains  # noqa: E402
from bench import stack_models as weights  # noqa: E402
from bench.stack_report import PREDICTED, floor_report, table  # noqa: E402
from bench.timing import environment, write_report  # noqa: E402

PARTS = ("warm", "cold", "caps")
CAPS = {"auto": 24, "low": 12}   # profile -> GB cap


def set_cap(device: torch.device, gib: float | None) -> str:
    """Cap this process's CUDA memory (None lifts it). On the CPU there is nothing to cap."""
    if device.type != "cuda":
        return "none (CPU)"
    gc.collect()
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = 1.0 if gib is None else min(gib * 2**30 / total, 1.0)
    set_memory_fraction(fraction, device)   # torch's setter, readable by the store on any torch version
    return f"{fraction * total / 2**30:.1f} GiB ({fraction:.3f} of {total / 2**30:.1f})"


def reset_store(device: torch.device) -> None:
    free()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_ours(chain: str, inputs, s, device, iters: int, label: str, rows: list, extra: dict | None = None) -> None:
    """First run (loads, moves, graph capture included) then ``iters`` warm runs."""
    fn = chains.OURS[chain]
    first = chains.timed_run(lambda t: fn(inputs, s, t), device)
    warm = [chains.timed_run(lambda t: fn(inputs, s, t), device) for _ in range(iters)]
    rows.append(dict(chain=chain, side="ours", profile=label, first=first, warm=chains.summarize(warm),
                     **(extra or {})))
    print(table(rows[-1:]), flush=True)


def part_warm(root, s, inputs, device, iters, report) -> list[dict]:
    rows: list[dict] = []
    set_memory_profile("high")
    began = time.perf_counter()
    bare = chains.Bare(root, device, s)
    load_s = time.perf_counter() - began
    bare_gib = bare.weights_bytes() / 2**30
    for chain in ("edit", "remove_text"):
        fn = chains.BARE[chain]
        first = chains.timed_run(lambda t: fn(bare, inputs, s, t), device)
        warm = [chains.timed_run(lambda t: fn(bare, inputs, s, t), device) for _ in range(iters)]
        rows.append(dict(chain=chain, side="bare", profile="preloaded", first=first, warm=chains.summarize(warm),
                         bare_load_s=load_s, bare_weights_gib=bare_gib))
        print(table(rows[-1:]), flush=True)
    report["floor"] = floor_report(bare.pipe, s.side, s.steps, device)
    bare = None  # the bare models go before ours load
    reset_store(device)
    for chain in ("edit", "remove_text"):
        run_ours(chain, inputs, s, device, iters, "high", rows)
    return rows


def part_cold(root, s, inputs, device, iters, report) -> list[dict]:
    rows: list[dict] = []
    files = [f for folder in weights.folders(root).values() for f in weights.weight_files(folder)]
    report["disk"] = weights.disk_read_bandwidth(files)
    report["disk"]["weights_bytes"] = sum(f.stat().st_size for f in files)
    print(json.dumps({"disk": report["disk"]}), flush=True)
    set_memory_profile("high")
    reset_store(device)
    how = weights.drop_page_cache(files)
    first = chains.timed_run(lambda t: chains.ours_edit(inputs, s, t), device)
    second = chains.timed_run(lambda t: chains.ours_remove_text(inputs, s, t), device)
    rows.append(dict(chain="edit", side="ours", profile="high, cold", first=first, warm={}, cache_drop=how))
    rows.append(dict(chain="remove_text", side="ours", profile="high, after edit", first=second, warm={}))
    reset_store(device)
    how = weights.drop_page_cache(files)
    began = time.perf_counter()
    bare = chains.Bare(root, device, s)
    load_s = time.perf_counter() - began
    run = chains.timed_run(lambda t: chains.bare_edit(bare, inputs, s, t), device)
    run["load_s"] = load_s
    run["total_s"] += load_s
    rows.append(dict(chain="edit", side="bare", profile="cold (load + run)", first=run, warm={}, cache_drop=how))
    bare = None  # the bare models go before ours load
    reset_store(device)
    # The first cold row also paid the process's first CUDA work (context, library handles, kernel
    # loading, cuDNN tuning) that bare then found done: load ours cold once more, after bare, so the
    # two loads are compared with the same runtime state.
    how = weights.drop_page_cache(files)
    again = chains.timed_run(lambda t: chains.ours_edit(inputs, s, t), device)
    rows.append(dict(chain="edit", side="ours", profile="high, cold, after bare (runtime warm)", first=again,
                     warm={}, cache_drop=how))
    reset_store(device)
    print(table(rows), flush=True)
    return rows


def part_caps(root, s, inputs, device, iters, report, low_iters: int) -> list[dict]:
    """All three profiles with the engines' own dtype choice (SDXL in bf16 on a card that has it: no
    fp32 VAE round trip, whose 1024² decode alone would pass 12 GB beside the fp16 weights)."""
    rows: list[dict] = []
    s = dataclasses.replace(s, ours_sdxl_dtype=None)
    reset_store(device)
    set_memory_profile("high")
    for chain in ("edit", "remove_text"):
        run_ours(chain, inputs, s, device, iters, "high", rows)
    for profile, gib in CAPS.items():
        reset_store(device)
        cap = set_cap(device, gib)
        set_memory_profile(profile)
        for chain in ("edit", "remove_text"):
            try:
                run_ours(chain, inputs, s, device, iters if profile == "auto" else low_iters, f"{profile}@{gib}GB",
                         rows, {"cap": cap})
            except torch.OutOfMemoryError as exc:
                rows.append(dict(chain=chain, side="ours", profile=f"{profile}@{gib}GB", cap=cap,
                                 error=f"OutOfMemoryError: {str(exc)[:300]}"))
                print(table(rows[-1:]), flush=True)
                reset_store(device)
    set_cap(device, None)
    set_memory_profile(None)
    reset_store(device)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (checks the script, not speed)")
    parser.add_argument("--parts", default="warm", help="comma list of warm, cold, caps")
    parser.add_argument("--iters", type=int, default=None, help="warm runs per chain (median)")
    parser.add_argument("--low-iters", type=int, default=1, help="warm runs per chain under low@12GB (slow)")
    parser.add_argument("--compile", choices=("on", "off"), default="off",
                        help="AGENTIC_EDIT_COMPILE for the grounding decode step (off: the pack's default)")
    parser.add_argument("--ours-fp16", action="store_true",
                        help="run our SDXL in fp16 as the bare script does (default: the engine's own choice, bf16 "
                             "on a card that has it; the rows before 2026-11-24's second run used fp16)")
    parser.add_argument("--models-root", default=None, help="where the full-size random weights are written")
    parser.add_argument("--json", default=None, help="where to write the JSON (default $OUT/bench_stack.json)")
    args = parser.parse_args(argv)

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; use {', '.join(PARTS)}")
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda:0")
    if device.type == "cpu" and not args.tiny:
        parser.error("no GPU here: run with --tiny to check the script on the CPU")
    if args.tiny:
        torch.set_num_threads(1)
    os.environ["AGENTIC_EDIT_COMPILE"] = "1" if args.compile == "on" else "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    root = Path(args.models_root or ("/tmp/agentic-stack-models-tiny" if args.tiny else "/tmp/agentic-stack-models"))
    os.environ["AGENTIC_EDIT_MODELS_DIR"] = str(root)
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    s = chains.Settings(side=128, steps=3, tokens=8, sdxl_dtype=torch.float32, ours_sdxl_dtype=torch.float32,
                        max_pixels=140 * 140) if args.tiny \
        else chains.Settings()
    if args.ours_fp16 and not args.tiny:
        s = dataclasses.replace(s, ours_sdxl_dtype=torch.float16)
    iters = args.iters if args.iters is not None else (1 if args.tiny else 3)
    inputs = chains.Inputs.make(s.side)

    rows: list[dict] = []
    report = {"environment": dict(environment(device), diffusers=diffusers.__version__, compile=args.compile),
              "settings": {k: str(v) for k, v in vars(s).items()}, "predicted": {"|".join(k): v for k, v in PREDICTED.items()}, "rows": rows}
    print(json.dumps(report["environment"]), flush=True)
    target = args.json or (os.path.join(os.environ["OUT"], "bench_stack.json") if os.environ.get("OUT") else None)
    began = time.perf_counter()
    report["models"] = weights.ensure_models(root, args.tiny, device)
    print(f"models ready in {time.perf_counter() - began:.0f} s: "
          f"{json.dumps({k: round(v['disk_bytes'] / 1e9, 2) for k, v in report['models'].items()})} GB", flush=True)

    for part in parts:
        began = time.perf_counter()
        try:
            if part == "warm":
                rows.extend(part_warm(root, s, inputs, device, iters, report))
            elif part == "cold":
                rows.extend(part_cold(root, s, inputs, device, iters, report))
            else:
                rows.extend(part_caps(root, s, inputs, device, iters, report, args.low_iters))
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rows.append(dict(chain=part, side="?", profile="?", error=f"{type(exc).__name__}: {exc}"))
            reset_store(device)
        report.setdefault("part_seconds", {})[part] = time.perf_counter() - began
        print(f"{part}: {time.perf_counter() - began:.0f} s\n{table(rows, report)}", flush=True)
        if target:
            write_report(target, report)
    if target:
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

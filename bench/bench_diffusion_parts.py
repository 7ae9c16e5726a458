"""Where one SDXL inpaint call's time goes, against its compute floor (issue 12's "diffusion part").

The stack's edit call (1024x1024, full image, 30 steps, CFG, strength 1) through the pack's engine on
full-size random weights built on the GPU (bench_inpaint.build_pipeline; no disk), for each dtype asked:

* ``warm``: the median wall time of ``--iters`` warm calls (nothing else running);
* ``parts``: one call with a CUDA sync around the text encoders, the VAE encoder, the UNet loop (the
  first step's start to the last step's end) and the VAE decoder, read from forward hooks; what is
  left is the host's own work before, between and after them (image and mask preparation, the
  pipeline's set-up, the copy back and the paste);
* ``host``: the top host functions of one call under cProfile (cumulative seconds);
* and the floor: FLOPs of what the call runs (one CFG UNet step x steps, one VAE encode, one decode)
  over the measured bf16 matmul rate (stack_report.floor_report).

``--trace`` also writes a torch.profiler Chrome trace of one call to $OUT.

Run on the GPU machine:  python3 bench/bench_diffusion_parts.py --dtypes fp16,bf16 [--compile on]
On the CPU (checks the script):  python3 bench/bench_diffusion_parts.py --tiny
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.pack import import_pack  # noqa: E402

import_pack()
from bench.bench_inpaint import BenchEngine, build_pipeline, scene  # noqa: E402
from bench.stack_report import floor_report  # noqa: E402
from bench.timing import environment, rel_error, write_report  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PROMPT = "a red brick wall with ivy"
HOOKED = ("text_encoder", "text_encoder_2", "vae.encoder", "unet", "vae.decoder")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call(engine, image, mask, side: int, steps: int):
    return engine.inpaint(image, mask, PROMPT, steps=steps, guidance=8.0, strength=1.0, seed=1234, mode="full",
                          mask_grow=4.0, feather=8.0, resolution=side)


class PartClock:
    """Forward hooks that sync and stamp the start and end of each hooked module's calls."""

    def __init__(self, pipe, device):
        self.device, self.stamps, self.handles = device, [], []
        for name in HOOKED:
            module = pipe
            for attr in name.split("."):
                module = getattr(module, attr)
            self.handles.append(module.register_forward_pre_hook(lambda *_, n=name: self._stamp(n, "start")))
            self.handles.append(module.register_forward_hook(lambda *_, n=name: self._stamp(n, "end")))

    def _stamp(self, name, edge):
        sync(self.device)
        self.stamps.append((name, edge, time.perf_counter()))

    def remove(self):
        for handle in self.handles:
            handle.remove()

    def parts(self, began: float, ended: float) -> dict:
        """Seconds per hooked module (the UNet from its first start to its last end) and the host's rest."""
        spans: dict[str, float] = {}
        first = {}
        for name, edge, at in self.stamps:
            if edge == "start":
                first.setdefault(name, at)
                opened = at
            elif name == "unet":
                spans["unet loop"] = at - first["unet"]
            else:
                spans[name] = spans.get(name, 0.0) + at - opened
        spans["host (the rest)"] = (ended - began) - sum(spans.values())
        spans["total"] = ended - began
        return spans


def vae_variants(pipe, side: int, device, iters: int, compile_too: bool) -> dict:
    """Median ms of one VAE encode + one decode at ``side``² for: fp32, the pipeline's own VAE as it
    runs (fp32 when it upcasts), bf16, bf16 channels_last, and bf16 compiled (inductor, default mode);
    each with its output's relative error against fp32's."""
    import copy

    from bench.timing import Clock

    clock = Clock(device, warmup=2, iters=iters)
    image = torch.rand(1, 3, side, side, device=device) * 2 - 1
    own = torch.float32 if pipe.vae.config.force_upcast and pipe.vae.dtype == torch.float16 else pipe.vae.dtype
    # fp32 first: every variant's error is against it (bf16's own rounding is the yardstick).
    variants = {"fp32": (copy.deepcopy(pipe.vae).float(), torch.float32, None),
                f"own ({str(own).replace('torch.', '')})": (pipe.vae, own, None)}
    if device.type == "cuda":
        bf16 = copy.deepcopy(pipe.vae).to(torch.bfloat16)
        variants["bf16"] = (bf16, torch.bfloat16, None)
        variants["bf16 channels_last"] = (copy.deepcopy(bf16).to(memory_format=torch.channels_last),
                                          torch.bfloat16, torch.channels_last)
        if compile_too:
            variants["bf16 compiled"] = (bf16, torch.bfloat16, "compile")
    out, reference = {}, None
    for label, (vae, dtype, how) in variants.items():
        vae = vae.to(dtype)
        encoder, decoder = vae.encode, vae.decode
        if how == "compile":
            encoder, decoder = torch.compile(vae.encode), torch.compile(vae.decode)
        x = image.to(dtype).contiguous(memory_format=torch.channels_last) if how is torch.channels_last \
            else image.to(dtype)

        def round_trip():
            with torch.inference_mode():
                return decoder(encoder(x).latent_dist.mean).sample

        began = time.perf_counter()
        round_trip()
        sync(device)
        first_s = time.perf_counter() - began
        timed = clock.measure(round_trip)
        result = timed["result"].float()
        reference = result if reference is None else reference
        out[label] = {"ms": timed["ms"], "first_s": first_s, "peak_gib": timed["peak_gib"],
                      "rel_err_vs_fp32": rel_error(result, reference)}
    if pipe.vae.config.force_upcast:
        pipe.vae.to(torch.float16)
    return out


def host_profile(fn, top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def measure_dtype(name: str, args, device, report: dict) -> dict:
    dtype = DTYPES[name]
    side, steps = (128, 3) if args.tiny else (1024, args.steps)
    pipe = build_pipeline("sdxl", args.tiny, device, dtype)
    engine = BenchEngine(pipe, "sdxl", device, dtype)
    if dtype != torch.float16:   # as engines/inpaint.build_inpaint_model does for its own loads
        pipe.vae.register_to_config(force_upcast=False)
    image, mask = scene(side, 0.08)
    run = lambda: call(engine, image, mask, side, steps)  # noqa: E731
    began = time.perf_counter()
    run()
    sync(device)
    first_s = time.perf_counter() - began
    run()
    times = []
    for _ in range(args.iters):
        sync(device)
        began = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - began)
    clock = PartClock(pipe, device)
    began = time.perf_counter()
    run()
    sync(device)
    parts = clock.parts(began, time.perf_counter())
    clock.remove()
    row = {"dtype": name, "vae_dtype": str(pipe.vae.dtype), "force_upcast": bool(pipe.vae.config.force_upcast),
           "first_s": first_s, "warm_s": statistics.median(times), "warm_all_s": times, "parts_s": parts,
           "host_profile": host_profile(lambda: (run(), sync(device)), args.top),
           "floor": floor_report(pipe, side, steps, device),
           "vae_ms": vae_variants(pipe, side, device, args.iters, compile_too=args.vae_compile),
           "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
    row["warm_over_floor"] = row["warm_s"] / row["floor"]["floor_s"]
    if args.trace and os.environ.get("OUT"):
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run()
            sync(device)
        prof.export_chrome_trace(os.path.join(os.environ["OUT"], f"diffusion_parts_{name}.json"))
        row["kernels"] = prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
    return row   # the models go with this frame; main() empties the cache before the next dtype


def table(rows: list[dict]) -> str:
    lines = ["| dtype (VAE) | warm s | floor s | x floor | " + " | ".join(rows[0]["parts_s"]) + " |",
             "|---" * (4 + len(rows[0]["parts_s"])) + "|"]
    for r in rows:
        lines.append(f"| {r['dtype']} ({r['vae_dtype'].replace('torch.', '')}{', upcast' if r['force_upcast'] else ''})"
                     f" | {r['warm_s']:.3f} | {r['floor']['floor_s']:.3f} | {r['warm_over_floor']:.2f} | "
                     + " | ".join(f"{v:.3f}" for v in r["parts_s"].values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (checks the script, not speed)")
    parser.add_argument("--dtypes", default="fp16,bf16", help=f"comma list of {', '.join(DTYPES)}")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--top", type=int, default=25, help="host functions listed")
    parser.add_argument("--compile", choices=("on", "off"), default="off", help="AGENTIC_EDIT_COMPILE for the UNet")
    parser.add_argument("--vae-compile", action="store_true", help="also time a compiled bf16 VAE (~1 min)")
    parser.add_argument("--trace", action="store_true", help="write a torch.profiler trace per dtype to $OUT")
    parser.add_argument("--json", default=None, help="where to write the JSON (default $OUT/diffusion_parts.json)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.dtypes.split(",") if n.strip()]
    if not names or set(names) - set(DTYPES):
        parser.error(f"--dtypes: use a comma list of {', '.join(DTYPES)}")
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda:0")
    if device.type == "cpu" and not args.tiny:
        parser.error("no GPU here: run with --tiny to check the script on the CPU")
    if args.tiny:
        names, args.iters = ["fp32"], 1
    os.environ["AGENTIC_EDIT_COMPILE"] = "1" if args.compile == "on" else "0"
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    report = {"environment": dict(environment(device), diffusers=diffusers.__version__, compile=args.compile),
              "rows": []}
    for name in names:
        row = measure_dtype(name, args, device, report)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        report["rows"].append(row)
        print(table([row]), flush=True)
        print(row["host_profile"], flush=True)
        print({k: {kk: round(vv, 3) for kk, vv in v.items() if vv is not None} for k, v in row["vae_ms"].items()},
              flush=True)
        if "kernels" in row:
            print(row["kernels"], flush=True)
    print(table(report["rows"]), flush=True)
    target = args.json or (os.path.join(os.environ["OUT"], "diffusion_parts.json") if os.environ.get("OUT") else None)
    if target:
        write_report(target, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

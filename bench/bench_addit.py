"""Add-it bench: FLUX.1-dev at 1024x1024, full-size random bf16 weights built straight on the GPU.

Parts (``--parts``, comma list; each fits well under 10 minutes on an H100):

* ``step``: time per transformer step, one process, one transformer:
  - bare FLUX step, 4096 image + 512 text tokens (diffusers' own processors; anchor 184.6 ms);
  - bare FLUX step with the image tokens doubled, 8192 + 512 (anchor 383.9 ms): what Add-it's two
    streams would cost as one sequence;
  - ours, two streams batched, extension off (our processors, plain attention);
  - ours, extension on in all 57 blocks (the first steps of a run) -- the goal: <= 1.1x the doubled step;
  - ours, extension on + the subject map recorded (the blend step), and one automatic-gamma probe.
* ``high``: a whole 30-step Add-it run (``AdditRun``: inversion, structure transfer, extended attention,
  automatic gamma, blend, decodes) with everything resident: T5-XXL, CLIP-L, the transformer, the VAE.
  Peak allocated / reserved GiB and seconds.
* ``low``: the same run as the ``low`` profile does it, with ``torch.cuda.set_per_process_memory_fraction``
  capping the process at 24 GiB: T5-XXL encodes on the GPU and goes back to the CPU; the transformer's
  57 blocks stream from pinned CPU memory (``BlockStreamer``) while the embedders and the VAE stay.
  Peak GiB (goal <= 24) and seconds per step.

Models are the published configs (below) with random weights: the transformer and T5-XXL are built on
the meta device and materialised on the GPU in bf16 (seconds, no 47 GB fp32 copy); the tokenizers are the
tiny local ones with T5 padding to 512 tokens, so every tensor has its real shape. The model store is
bypassed (objects are built here); everything else is the engine's code.

    python3 bench/bench_addit.py --parts step          # on the GPU machine, from the repository root
    python3 bench/bench_addit.py --parts high
    python3 bench/bench_addit.py --parts low
    python3 bench/bench_addit.py --tiny                # tiny configs on the CPU: checks the script itself

Prints a markdown table; writes $OUT/bench_addit.json when OUT is set (or --json PATH).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.pack import import_pack  # noqa: E402

import_pack()
from agentic_edit.engines import addit_attention as attention  # noqa: E402
from agentic_edit.engines.addit import AdditEngine  # noqa: E402
from agentic_edit.engines.addit_loader import BlockStreamer, FluxCore, FluxText  # noqa: E402
from agentic_edit.engines.addit_run import AdditRun, image_ids  # noqa: E402
from agentic_edit.models.devices import set_memory_fraction  # noqa: E402
from bench.timing import Clock, environment, write_report  # noqa: E402
from tests.tiny_models.flux import (FLUX_SCHEDULER, tiny_flux_vae, tiny_t5_tokenizer,  # noqa: E402
                                    tiny_transformer_config)
from tests.tiny_models.sd_inpaint import tiny_text_config, tiny_tokenizer  # noqa: E402

# black-forest-labs/FLUX.1-dev transformer/config.json, vae/config.json; google/t5-v1_1-xxl; CLIP ViT-L/14 text.
FLUX_TRANSFORMER = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                        num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                        guidance_embeds=True, axes_dims_rope=(16, 56, 56))
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
                use_quant_conv=False, use_post_quant_conv=False)
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              relative_attention_num_buckets=32, feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, hidden_act="quick_gelu", max_position_embeddings=77, bos_token_id=0,
              eos_token_id=1, pad_token_id=1)
TINY_T5 = dict(T5_XXL, vocab_size=140, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
               relative_attention_num_buckets=8)
ANCHORS_MS = {"bare": 184.6, "bare doubled": 383.9}   # shared/research/gpu-baseline.md (d), H100
GIB24 = 24 * 2**30            # a "24 GB" card (RTX 3090/4090: 24 GiB)
CONTEXT_BYTES = 2**29         # what the CUDA context takes outside the allocator (~0.5 GiB)
SOURCE, TARGET, SUBJECT = "a living room with a sofa", "a living room with a dog on the sofa", "dog"


# ---- building -------------------------------------------------------------------------------------------

def materialise(build, device, dtype):
    """``build()`` on the meta device, then real ``dtype`` storage on ``device`` with random values."""
    with torch.device("meta"):
        module = build()
    module = module.to(dtype).to_empty(device=device).eval().requires_grad_(False)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 1 and "norm" in name:
                p.fill_(1.0)
            elif p.ndim == 1:
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=generator)
    return module


def build_transformer(tiny, device, dtype):
    from diffusers import FluxTransformer2DModel

    config = tiny_transformer_config() if tiny else FLUX_TRANSFORMER
    return materialise(lambda: FluxTransformer2DModel(**config), device, dtype)


def build_vae(tiny, device, dtype):
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = tiny_flux_vae() if tiny else AutoencoderKL(**FLUX_VAE)
    return vae.to(device, dtype).eval().requires_grad_(False)


def build_text(tiny, device, dtype) -> FluxText:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    t5 = materialise(lambda: T5EncoderModel(T5Config(**(TINY_T5 if tiny else T5_XXL))), device, dtype)
    clip_config = tiny_text_config() if tiny else CLIPTextConfig(**CLIP_L)
    torch.manual_seed(0)
    clip = CLIPTextModel(clip_config).to(device, dtype).eval().requires_grad_(False)
    tokenizer_2 = tiny_t5_tokenizer()
    if not tiny:
        tokenizer_2.model_max_length = 512   # FLUX.1-dev pads T5 to 512 tokens
    return FluxText(clip, tiny_tokenizer(), t5, tokenizer_2)


def settings(tiny: bool, steps: int) -> dict:
    """What ``AdditEngine._settings`` makes of the paper's defaults (checked and scaled to ``steps``)."""
    side = 64 if tiny else 1024
    rgb = scene(side)
    return AdditEngine("FLUX.1-dev")._settings(rgb, TARGET, SUBJECT, SOURCE, 0, steps, None, None, None, None, None,
                                               None, None, None, None, None, "off")


def scene(side: int) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side] / side
    noise = np.random.default_rng(7).random((side, side, 3)) * 0.15
    return np.clip(np.stack([xx, yy, 1 - 0.5 * (xx + yy)], -1) * 0.85 + noise, 0, 1).astype(np.float32)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peaks(device) -> dict:
    if device.type != "cuda":
        return {"peak_gib": None, "peak_reserved_gib": None}
    return {"peak_gib": torch.cuda.max_memory_allocated(device) / 2**30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved(device) / 2**30}


# ---- part: step ------------------------------------------------------------------------------------------

def step_rows(tiny, device, dtype, clock) -> list[dict]:
    transformer = build_transformer(tiny, device, dtype)
    c = transformer.config
    grid = 4 if tiny else 64
    text = 32 if tiny else 512
    g = torch.Generator(device).manual_seed(1)

    def inputs(batch, grid_w):
        return dict(hidden_states=torch.randn(batch, grid * grid_w, c.in_channels, generator=g, device=device).to(dtype),
                    encoder_hidden_states=torch.randn(batch, text, c.joint_attention_dim, generator=g,
                                                      device=device).to(dtype),
                    pooled_projections=torch.randn(batch, c.pooled_projection_dim, generator=g, device=device).to(dtype),
                    timestep=torch.full((batch,), 0.7, device=device, dtype=dtype),
                    guidance=torch.tensor([1.0, 3.5][:batch], device=device, dtype=dtype) if batch == 2 else
                    torch.full((1,), 3.5, device=device, dtype=dtype),
                    txt_ids=torch.zeros(text, 3, device=device, dtype=dtype),
                    img_ids=image_ids(grid, grid_w, device, dtype), return_dict=False)

    single, doubled, two = inputs(1, grid), inputs(1, 2 * grid), inputs(2, grid)
    state = attention.AdditState(text_len=text, subject_tokens=[9, 10])
    rows = []

    def timed(name, call, anchor=None, check=""):
        with torch.no_grad():
            out = clock.measure(call)
        rows.append({"name": name, "ms": out["ms"], "min_ms": out["min_ms"], "max_ms": out["max_ms"], "n": out["n"],
                     "peak_gib": out["peak_gib"], "anchor_ms": anchor, "check": check})
        print(json.dumps(rows[-1]), flush=True)
        return out

    attention.uninstall(transformer)
    timed(f"bare FLUX step, {grid * grid}+{text} tokens", lambda: transformer(**single)[0], ANCHORS_MS["bare"])
    timed(f"bare FLUX step, doubled image tokens {2 * grid * grid}+{text}", lambda: transformer(**doubled)[0],
          ANCHORS_MS["bare doubled"])
    attention.install(transformer, state)
    timed(f"Add-it, 2 streams of {grid * grid}+{text}, extension off", lambda: transformer(**two)[0])
    state.extend = {attention.DOUBLE, attention.SINGLE}
    state.gamma = 1.05
    timed("Add-it, 2 streams, extension on (all blocks)", lambda: transformer(**two)[0])

    def recording():
        state.reset_records()
        state.record_subject = True
        try:
            return transformer(**two)[0]
        finally:
            state.record_subject = False

    def probing():
        state.reset_records()
        state.record_mass = True
        try:
            return transformer(**two)[0]
        finally:
            state.record_mass = False

    timed("Add-it, extension on + subject map (blend step)", recording)
    timed("Add-it, one automatic-gamma probe (mass ratio)", probing)
    attention.uninstall(transformer)
    doubled_ms = rows[1]["ms"]
    for r in rows[2:]:
        r["vs_doubled"] = r["ms"] / doubled_ms
    rows[3]["check"] = f"{rows[3]['vs_doubled']:.3f}x the doubled step (goal <= 1.1)"
    return rows  # the transformer goes with this frame


# ---- parts: high / low -------------------------------------------------------------------------------------

def run_row(profile, tiny, device, dtype, steps) -> dict:
    """A whole Add-it run as the engine does it under ``profile``; peak memory and seconds."""
    s = settings(tiny, steps)
    rgb = scene(s["size"][0])
    transformer = build_transformer(tiny, device, dtype)
    vae = build_vae(tiny, device, dtype)
    core = FluxCore(transformer, vae, dict(FLUX_SCHEDULER))
    capped = False
    if profile == "low":
        core.streamer = BlockStreamer([*transformer.transformer_blocks, *transformer.single_transformer_blocks],
                                      device)
        reset_peak(device)
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            set_memory_fraction(min(1.0, GIB24 / total), device)
            capped = True
    reset_peak(device)
    began = time.perf_counter()
    text = build_text(tiny, device, dtype)
    build_s = time.perf_counter() - began
    try:
        began = time.perf_counter()
        with torch.no_grad():
            embeds, pooled = text.encode([s["source_prompt"], s["target_prompt"]], device, dtype)
        tokens = text.subject_positions(s["target_prompt"], *s["subject_span"])
        if profile == "low":   # what the store does after the text encoders' use() under `low`
            for module in text.torch_modules():
                module.to("cpu")
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        sync(device)
        encode_s = time.perf_counter() - began
        ticks = []
        run = AdditRun(core, s, embeds, pooled, tokens, True, lambda d, t: ticks.append(time.perf_counter()),
                       device, dtype)
        began = time.perf_counter()
        image, mask, notes = run.execute(rgb, None)
        sync(device)
        run_s = time.perf_counter() - began
        if core.streamer is not None:
            core.streamer.release()
        memory = peaks(device)
    finally:
        if capped:
            set_memory_fraction(1.0, device)
    gaps = np.diff(ticks[-(s["steps"] - s["st_step"]):]) * 1000 if len(ticks) > 2 else np.array([0.0])
    row = {"name": f"whole Add-it run, {profile} profile ({s['size'][0]}x{s['size'][1]}, {s['steps']} steps)",
           "run_s": run_s, "encode_s": encode_s, "text_build_s": build_s, "transformer_passes": run.total,
           "ms_per_denoise_step": float(np.median(gaps)), "gamma": run.gamma, **memory,
           "capped_24gib": capped, "finite": bool(np.isfinite(image).all()), "notes": notes}
    if profile == "low" and memory["peak_gib"] is not None:
        fits = memory["peak_reserved_gib"] * 2**30 <= GIB24 - CONTEXT_BYTES
        row["check"] = (f"peak {memory['peak_gib']:.2f} GiB allocated, {memory['peak_reserved_gib']:.2f} reserved "
                        f"(cap 24 GiB; with ~0.5 GiB of CUDA context a 24 GB card: {'fits' if fits else 'DOES NOT FIT'})")
    print(json.dumps({k: v for k, v in row.items() if k != "notes"}), flush=True)
    del core, transformer, vae, text, run
    reset_peak(device)
    return row


def markdown_table(rows: list[dict]) -> str:
    fmt = lambda v, p=1: "–" if v is None else f"{v:.{p}f}"  # noqa: E731
    lines = ["| measurement | ms (median) | anchor ms | vs doubled | peak GiB | check |", "|---|---|---|---|---|---|"]
    for r in rows:
        if "ms" in r:
            lines.append(f"| {r['name']} | {fmt(r['ms'], 1)} | {fmt(r.get('anchor_ms'))} | {fmt(r.get('vs_doubled'), 3)}"
                         f" | {fmt(r['peak_gib'], 2)} | {r.get('check', '')} |")
        else:
            lines.append(f"| {r['name']} | {fmt(r['ms_per_denoise_step'], 1)} per step, {fmt(r['run_s'], 1)} s run "
                         f"({r['transformer_passes']} passes) + {fmt(r['encode_s'], 2)} s encode | | | "
                         f"{fmt(r['peak_gib'], 2)} / {fmt(r['peak_reserved_gib'], 2)} reserved | "
                         f"{r.get('check', 'gamma %.3f' % r['gamma'])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (checks the script, not speed)")
    parser.add_argument("--parts", default="step,high,low", help="comma list of step, high, low")
    parser.add_argument("--steps", type=int, default=30, help="denoising steps of the whole runs")
    parser.add_argument("--iters", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--json", default=None, help="where to write the JSON (default $OUT/bench_addit.json)")
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.tiny:
        parser.error("no GPU here: run with --tiny to check the script on the CPU")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.tiny:
        torch.set_num_threads(1)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(parts) - {"step", "high", "low"}
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; use step, high, low")
    import diffusers

    clock = Clock(device, warmup=args.warmup if args.warmup is not None else (1 if args.tiny else 2),
                  iters=args.iters if args.iters is not None else (2 if args.tiny else 6))
    report = {"environment": dict(environment(device), diffusers=diffusers.__version__), "rows": []}
    print(json.dumps(report["environment"]), flush=True)
    for part in parts:
        try:
            if part == "step":
                report["rows"] += step_rows(args.tiny, device, dtype, clock)
            else:
                report["rows"].append(run_row(part, args.tiny, device, dtype, args.steps))
        except Exception as exc:  # one failed part must not lose the others' numbers
            import traceback

            traceback.print_exc()
            report["rows"].append({"name": part, "error": f"{type(exc).__name__}: {exc}"})
    table = markdown_table([r for r in report["rows"] if "error" not in r])
    print(table)
    for r in report["rows"]:
        if "error" in r:
            print(f"FAILED {r['name']}: {r['error']}")
    report["table"] = table
    target = args.json or (os.path.join(os.environ["OUT"], "bench_addit.json") if os.environ.get("OUT") else None)
    if target:
        write_report(target, report)
        print(f"wrote {target}")
    return 1 if any("error" in r for r in report["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())

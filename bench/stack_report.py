"""bench_stack.py's predictions, its table, and the diffusion compute floor."""

from __future__ import annotations

import statistics

import torch

# Written before the first GPU run (H100, seconds; see bench/SWAPPING.md for the reasoning).
# Anchors: Qwen 64-token generate 1.56-2.28 s bare eager, ~2.0 s ours (batched window attention, eager
# decode ~31 ms/token); SAM-2 bf16 set_image + predict 0.03-0.06 s; SDXL 30 steps 2.2-3.2 s bare eager,
# 1.70 s ours (graphed UNet); swaps: pinned H2D at 25-45 GB/s, moving out an unchanged model is free.
PREDICTED = {
    ("edit", "bare", "preloaded"): 4.8, ("remove_text", "bare", "preloaded"): 2.6,
    ("edit", "ours", "high"): 3.9, ("remove_text", "ours", "high"): 1.8,
    ("edit", "ours", "auto@24GB"): 4.4, ("remove_text", "ours", "auto@24GB"): 1.8,
    ("edit", "ours", "low@12GB"): 18.0, ("remove_text", "ours", "low@12GB"): 2.3,
}
PREDICTED_PEAK_GIB = {"high": 27.5, "auto@24GB": 17.0, "low@12GB": 11.5}
SDXL_STEP_FLOPS_ANCHOR = 13.52e12


def predicted(row: dict) -> float | None:
    return PREDICTED.get((row.get("chain"), row.get("side"), row.get("profile")))


def _f(value, digits=2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict], report: dict | None = None) -> str:
    lines = ["| chain | side | profile | first s | warm s (median) | predicted s | per engine (warm) | load / move in / "
             "offload / free s (first; warm) | GB moved in (warm) | peak alloc / reserved GiB | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    high = {r["chain"]: r["warm"].get("total_s") for r in rows if r.get("side") == "ours" and r.get("profile") == "high"
            and r.get("warm")}
    bare = {r["chain"]: r["warm"].get("total_s") for r in rows if r.get("side") == "bare" and r.get("warm")}
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['chain']} | {r['side']} | {r['profile']} | FAILED | | | | | | | {r['error'][:200]} |")
            continue
        first, warm = r.get("first", {}), r.get("warm", {})
        shown = warm if warm else first
        parts = ", ".join(f"{k} {v:.2f}" for k, v in shown.get("parts_s", {}).items())
        swaps = (f"{_f(first.get('load_s'))} / {_f(first.get('move_in_s'))} / {_f(first.get('offload_s'))} / "
                 f"{_f(first.get('free_s'))}; {_f(warm.get('load_s'))} / {_f(warm.get('move_in_s'))} / "
                 f"{_f(warm.get('offload_s'))} / {_f(warm.get('free_s'))}")
        notes = []
        total = warm.get("total_s")
        if r.get("side") == "ours" and total and bare.get(r["chain"]):
            notes.append(f"{total / bare[r['chain']]:.2f} x bare")
        if r.get("side") == "ours" and r.get("profile") != "high" and total and high.get(r["chain"]):
            notes.append(f"{total / high[r['chain']]:.2f} x high")
        if r.get("bare_load_s") is not None:
            notes.append(f"bare load {r['bare_load_s']:.1f} s, {r['bare_weights_gib']:.1f} GiB resident")
        if first.get("builds") is not None and r.get("side") == "ours":
            notes.append(f"builds first/warm {first['builds']}/{warm.get('builds', '–')}")
        if warm.get("offload_copied_gb"):
            notes.append(f"copied back {warm['offload_copied_gb']:.2f} GB/run")
        if warm.get("streamed_gb"):
            notes.append(f"streamed {warm['streamed_gb']:.1f} GB/run")
        info = shown.get("info") or {}
        if info.get("mask_fallback"):
            notes.append("fallback mask")
        if "tokens" in info:
            notes.append(f"{info['tokens']} tokens")
        if r.get("cap"):
            notes.append(f"cap {r['cap']}")
        if r.get("cache_drop"):
            notes.append(f"page cache: {r['cache_drop']}")
        lines.append(
            f"| {r['chain']} | {r['side']} | {r['profile']} | {_f(first.get('total_s'))} | {_f(total)} | "
            f"{_f(predicted(r), 1)} | {parts} | {swaps} | {_f(warm.get('move_in_gb'), 1)} | "
            f"{_f(shown.get('peak_alloc_gib'))} / {_f(shown.get('peak_reserved_gib'))} | {'; '.join(notes)} |")
    if report and report.get("floor"):
        floor = report["floor"]
        ours = [r["warm"]["parts_s"].get("inpaint") for r in rows
                if r.get("chain") == "edit" and r.get("side") == "ours" and r.get("profile") == "high" and r.get("warm")]
        ratio = f", ours inpaint {ours[0]:.2f} s = {ours[0] / floor['floor_s']:.2f} x floor" if ours and ours[0] else ""
        lines.append(f"\nDiffusion floor: {floor['step_tflops']:.2f} TFLOP/step x {floor['steps']} + VAE "
                     f"{floor['vae_tflops']:.2f} TFLOP at {floor['matmul_tflops_s']:.0f} TFLOP/s (measured "
                     f"{floor['matmul_dtype']} matmul) = {floor['floor_s']:.3f} s{ratio}.")
    if report and report.get("disk"):
        disk = report["disk"]
        lines.append(f"\nDisk read: {_f(disk.get('gb_s'))} GB/s ({disk['bytes'] / 1e9:.1f} GB, cache drop: "
                     f"{disk['cache_drop']}); all weights {disk.get('weights_bytes', 0) / 1e9:.1f} GB -> "
                     f"{(disk.get('weights_bytes', 0) / 1e9) / disk['gb_s'] if disk.get('gb_s') else 0:.1f} s at that rate.")
    return "\n".join(lines)


# ---- the compute floor ----------------------------------------------------------------------------------

def matmul_rate(device: torch.device) -> tuple[float, str]:
    """Measured dense matmul rate in FLOP/s: bf16 8192^3 on a GPU (3 rotating inputs, median of 20)."""
    if device.type != "cuda":
        n, dtype, iters = 256, torch.float32, 3
    else:
        n, dtype, iters = 8192, torch.bfloat16, 20
    pairs = [(torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype))
             for _ in range(3)]
    times = []
    for i in range(iters + 3):
        a, b = pairs[i % 3]
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            a @ b
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            import time

            began = time.perf_counter()
            a @ b
            seconds = time.perf_counter() - began
        if i >= 3:
            times.append(seconds)
    return 2 * n**3 / statistics.median(times), str(dtype).replace("torch.", "")


def floor_report(pipe, side: int, steps: int, device: torch.device) -> dict:
    """FLOPs of what one strength-1 call of a 9-channel inpainting pipeline runs (``steps`` CFG UNet
    steps, one VAE encode of the masked image, one decode), counted with FlopCounterMode on the real
    modules, over the measured matmul rate. (Before 2026-11-24 (second run) two encodes were counted,
    as the baseline file's note on diffusers' default strength 0.9999 says; at strength 1 the
    pipeline encodes once: ~5 ms of floor less.)"""
    from torch.utils.flop_counter import FlopCounterMode

    unet, vae = pipe.unet, pipe.vae
    latent = side // 8
    dtype = unet.dtype
    with torch.inference_mode():
        sample = torch.randn(2, unet.config.in_channels, latent, latent, device=device, dtype=dtype)
        text = torch.randn(2, 77, unet.config.cross_attention_dim, device=device, dtype=dtype)
        pooled = pipe.text_encoder_2.config.projection_dim
        cond = {"text_embeds": torch.randn(2, pooled, device=device, dtype=dtype),
                "time_ids": torch.tensor([[side, side, 0, 0, side, side]] * 2, device=device, dtype=dtype)}
        with FlopCounterMode(display=False) as unet_counter:
            unet(sample, torch.tensor(500, device=device), encoder_hidden_states=text, added_cond_kwargs=cond)
        image = torch.randn(1, 3, side, side, device=device, dtype=vae.dtype)
        with FlopCounterMode(display=False) as vae_counter:
            vae.decode(vae.encode(image).latent_dist.mean)
    rate, rate_dtype = matmul_rate(device)
    step, vae_flops = unet_counter.get_total_flops(), vae_counter.get_total_flops()
    total = step * steps + vae_flops
    return {"step_tflops": step / 1e12, "vae_tflops": vae_flops / 1e12, "steps": steps,
            "matmul_tflops_s": rate / 1e12, "matmul_dtype": rate_dtype, "floor_s": total / rate,
            "unet_floor_s": step * steps / rate, "vae_floor_s": vae_flops / rate,
            "anchor_step_tflops": SDXL_STEP_FLOPS_ANCHOR / 1e12}

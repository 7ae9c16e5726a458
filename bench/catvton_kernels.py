"""Where a CatVTON UNet step's GPU time goes: SDPA backends timed alone, and a kernel profile.

Used by bench/bench_catvton.py (``--probe``, ``--profile``). Both run the UNet eagerly on the
person-over-garment frame the bench times (batch 2 for guidance).

* ``sdpa_probe``: the self-attention shapes one step meets (read by hooks on every ``attn1``),
  each timed per SDPA backend in the processor's layout (``[B, N, H*d]`` viewed as
  ``[B, H, N, d]``), with the backend PyTorch picks (``torch._fused_sdp_choice``) under its own
  order and under ``engines/sdpa_choice.py``'s, and the error of each against float32 on two heads.
* ``kernel_profiles``: ``torch.profiler`` over one eager step per SDPA order, GPU kernels summed
  by name and sorted into kinds (attention, convolution, matrix products, norms, copies and
  layout changes, other elementwise).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections import Counter, defaultdict

import torch

from agentic_edit.engines import sdpa_choice

BACKENDS = ("torch order", "flash", "efficient", "cudnn", "preferred")
_CHOICE_NAMES = {0: "math", 1: "flash", 2: "efficient", 3: "cudnn", 4: "overrideable"}


def _frame(unet, masked, device):
    """The UNet input the bench's loop makes: [2, 9, 2h, w] (random: speed does not depend on values)."""
    height, width = masked.shape[-2:]
    dtype = next(unet.parameters()).dtype
    generator = torch.Generator(device="cpu").manual_seed(11)
    x = torch.randn((2, unet.config.in_channels, 2 * height, width), generator=generator).to(device, dtype)
    return x, torch.tensor([500], device=device)


def attention_shapes(unet, masked, device) -> Counter:
    """(batch, tokens, channels, heads) of every self-attention call in one step, with counts."""
    shapes: Counter = Counter()

    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        shapes[(*hidden.shape, module.heads)] += 1

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True)
               for name, m in unet.named_modules() if name.endswith("attn1")]
    try:
        x, t = _frame(unet, masked, device)
        with torch.no_grad():
            unet(x, t, encoder_hidden_states=None, return_dict=False)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def _time_ms(fn, device, warmup: int = 3, iters: int = 10) -> float:
    for _ in range(warmup):
        fn()
    if device.type != "cuda":
        times = []
        for _ in range(iters):
            began = time.perf_counter()
            fn()
            times.append((time.perf_counter() - began) * 1000)
        return statistics.median(times)
    torch.cuda.synchronize(device)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _backend_context(name: str, device):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if name == "torch order":
        return contextlib.nullcontext()
    if name == "preferred":
        return sdpa_choice.preferred_attention(device)
    return sdpa_kernel({"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                        "cudnn": SDPBackend.CUDNN_ATTENTION}[name])


def _choice(q, k, v, device, name: str) -> str:
    try:
        with _backend_context(name, device):
            return _CHOICE_NAMES.get(int(torch._fused_sdp_choice(q, k, v)), "?")
    except Exception as exc:  # noqa: BLE001 - a private function; report, do not fail the bench
        return f"? ({type(exc).__name__})"


def sdpa_probe(unet, masked, dtype, device, clock=None) -> list[dict]:
    """One row per (shape, backend): median ms per call, TFLOP/s, ms per step, error vs float32."""
    import torch.nn.functional as F

    rows = []
    for (batch, tokens, channels, heads), count in sorted(attention_shapes(unet, masked, device).items(),
                                                          key=lambda kv: -kv[0][1]):
        dim = channels // heads
        generator = torch.Generator(device="cpu").manual_seed(tokens)
        q, k, v = (torch.randn((batch, tokens, channels), generator=generator).to(device, dtype)
                   .view(batch, tokens, heads, dim).transpose(1, 2) for _ in range(3))
        # float32 reference on two heads of the first sample (the full float32 scores would not fit).
        qr, kr, vr = (t[:1, :2].float() for t in (q, k, v))
        reference = torch.softmax(qr @ kr.transpose(-1, -2) * dim ** -0.5, dim=-1) @ vr
        flops = 4 * batch * heads * tokens * tokens * dim
        picked = {"torch order": _choice(q, k, v, device, "torch order"),
                  "preferred": _choice(q, k, v, device, "preferred")}
        for name in BACKENDS:
            row = dict(shape=[batch, heads, tokens, dim], calls_per_step=count, backend=name,
                       picked=picked.get(name, name))
            try:
                with _backend_context(name, device):
                    out = F.scaled_dot_product_attention(q, k, v)
                    ms = _time_ms(lambda: F.scaled_dot_product_attention(q, k, v), device)
                error = float((out[:1, :2].float() - reference).norm() / reference.norm())
                row.update(ms=ms, tflops=flops / ms / 1e9, ms_per_step=ms * count, rel_error_fp32=error)
            except Exception as exc:  # noqa: BLE001 - a backend that cannot take this shape
                row.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
            rows.append(row)
    return rows


def probe_table(rows: list[dict]) -> str:
    lines = ["| B,H,N,d | calls/step | backend | runs | ms/call | TFLOP/s | ms/step | rel err vs fp32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        shape = ",".join(str(v) for v in r["shape"])
        if "error" in r:
            lines.append(f"| {shape} | {r['calls_per_step']} | {r['backend']} | – | – | – | – | {r['error']} |")
        else:
            lines.append(f"| {shape} | {r['calls_per_step']} | {r['backend']} | {r['picked']} | {r['ms']:.3f} | "
                         f"{r['tflops']:.0f} | {r['ms_per_step']:.2f} | {r['rel_error_fp32']:.1e} |")
    return "\n".join(lines)


# ---- kernel profile --------------------------------------------------------------------------------

def kernel_kind(name: str) -> str:
    n = name.lower()
    if any(s in n for s in ("flash", "fmha", "sdpa", "attention", "attn")):
        return "attention"
    if any(s in n for s in ("nchwtonhwc", "nhwctonchw", "transpose", "copy", "cat_")):
        return "copies and layout"
    if "norm" in n:
        return "norms"
    if any(s in n for s in ("conv", "fprop", "implicit", "dgrad", "winograd")):
        return "convolution"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "matmul")):
        return "matrix products"
    if any(s in n for s in ("elementwise", "vectorized", "unrolled", "reduce")):
        return "elementwise"
    return "other"


def profile_call(fn, device, top: int = 14) -> dict:
    """GPU kernels of one ``fn()`` (after one unprofiled call): total ms, ms by kind, the top kernels."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CUDA if device.type == "cuda" else ProfilerActivity.CPU
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    with profile(activities=[activity]) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    kernels = []
    for event in prof.key_averages():
        us = event.self_cpu_time_total
        if device.type == "cuda":
            us = getattr(event, "self_device_time_total", None)
            us = getattr(event, "self_cuda_time_total", 0) if us is None else us
        if us and us > 0:
            kernels.append((event.key, us / 1000, event.count))
    kernels.sort(key=lambda k: -k[1])
    kinds: dict[str, float] = defaultdict(float)
    for name, ms, _ in kernels:
        kinds[kernel_kind(name)] += ms
    return {"total_ms": sum(k[1] for k in kernels), "by_kind": dict(kinds),
            "top": [{"kernel": n[:140], "ms": ms, "calls": c} for n, ms, c in kernels[:top]]}


def kernel_profiles(unet, masked, device, top: int = 14) -> dict:
    """Per SDPA order (``torch``, ``auto``): total GPU ms of one eager step, by kind, and the top kernels."""
    x, t = _frame(unet, masked, device)
    result = {}
    saved = os.environ.get(sdpa_choice.ENV)
    try:
        for setting in ("torch", "auto"):
            os.environ[sdpa_choice.ENV] = setting
            try:
                with torch.no_grad(), sdpa_choice.preferred_attention(device):
                    result[setting] = profile_call(
                        lambda: unet(x, t, encoder_hidden_states=None, return_dict=False), device, top)
            except Exception as exc:  # noqa: BLE001 - the profiler is optional
                result[setting] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if saved is None:
            os.environ.pop(sdpa_choice.ENV, None)
        else:
            os.environ[sdpa_choice.ENV] = saved
    return result


def eager_profile(unet, masked, device, label: str, top: int = 14) -> dict:
    """The kernels of one eager step of ``unet`` as it is now (SDPA in the engine's order)."""
    x, t = _frame(unet, masked, device)
    try:
        with torch.no_grad(), sdpa_choice.preferred_attention(device):
            return {label: profile_call(lambda: unet(x, t, encoder_hidden_states=None, return_dict=False),
                                        device, top)}
    except Exception as exc:  # noqa: BLE001 - the profiler is optional
        return {label: {"error": f"{type(exc).__name__}: {exc}"}}


def compiled_profile(unet, runner, masked, device, top: int = 14) -> dict:
    """The kernels of one call of the runner's compiled forward, called exactly as its graph was
    recorded (arguments by name, timestep as a tensor), so no recompile: what the graph replays."""
    x, t = _frame(unet, masked, device)
    arguments, _, _ = runner._prepare(unet, (x, t), {"encoder_hidden_states": None, "return_dict": False})
    forward = runner._forward(unet)
    try:
        with torch.no_grad(), sdpa_choice.preferred_attention(device):
            return {"compiled": profile_call(lambda: forward(unet, **arguments, return_dict=False), device, top)}
    except Exception as exc:  # noqa: BLE001 - the profiler is optional
        return {"compiled": {"error": f"{type(exc).__name__}: {exc}"}}


def profile_table(profiles: dict) -> str:
    lines = []
    for setting, p in profiles.items():
        if "error" in p:
            lines.append(f"profile {setting}: {p['error']}")
            continue
        kinds = ", ".join(f"{k} {v:.1f}" for k, v in sorted(p["by_kind"].items(), key=lambda kv: -kv[1]))
        lines.append(f"profile, SDPA {setting}: one eager step, kernels {p['total_ms']:.1f} ms: {kinds}")
        lines += [f"  {k['ms']:8.2f} ms {k['calls']:4d}x  {k['kernel']}" for k in p["top"]]
    return "\n".join(lines)


__all__ = ["attention_shapes", "compiled_profile", "eager_profile", "kernel_kind", "kernel_profiles", "profile_call",
           "probe_table", "profile_table", "sdpa_probe"]

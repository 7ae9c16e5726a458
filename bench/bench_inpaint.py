"""Inpainting bench: SDXL-inpaint and SD-1.5-inpaint, bare diffusers against the pack's engine with
the UNet step replayed as a CUDA graph (engines/unet_graph.py), and crop-and-stitch against full image.

Pipelines are built at full size from the published configs (written out below) with random
weights, in fp16, straight on the GPU; the tokenizers are tiny local files padded to 77 tokens, so
every tensor has its real shape. Rows, per model, in one process on the same pipeline object:

* ``bare``: ``pipe(...)`` exactly as a diffusers user calls it (eager UNet);
* ``pipe + graphed UNet``: the same call inside ``graphed_unet(pipe.unet)``; its first call, which
  records the graph, is timed apart ("one-time") and must not recur for the same shapes;
* ``engine, full``: ``InpaintEngine.inpaint(mode="full")``, the pack's whole code path (mask grow
  and feather, crop planning, the pipeline with graphs, paste back), same seed and same inputs;
* crop-and-stitch of a ~5% mask on a 2048x2048 image (SDXL, works at ~1024²) against the full image
  at 2048², both through the engine, plus the bare pipeline at 2048² for reference.

Checks: relative error of the final image (and of the latents) against bare, and that every pixel
outside the paste mask is bit-identical to the input.

    python3 bench/bench_inpaint.py                     # on the GPU machine, from the repository root
    python3 bench/bench_inpaint.py --parts sdxl,crop   # or --parts sd15: split a long run
    python3 bench/bench_inpaint.py --tiny              # tiny configs on the CPU: checks the script itself

Prints a markdown table; writes $OUT/bench_inpaint.json when OUT is set (or --json PATH).
"""

from __future__ import annotations

import argparse
import functools
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
from agentic_edit.engines import crop_stitch, mask_ops, unet_graph  # noqa: E402
from agentic_edit.engines.inpaint import InpaintEngine, InpaintModel  # noqa: E402
from agentic_edit.engines.inpaint_loader import SchedulerConfig, defaults_for  # noqa: E402
from agentic_edit.engines.ip_adapter import IPAdapterSlot  # noqa: E402
from agentic_edit.models import LoadedModel, ResolvedModel, set_memory_profile  # noqa: E402
from bench.timing import Clock, environment, markdown, rel_error, write_report  # noqa: E402
from tests.tiny_models.sd_inpaint import SD15_SCHEDULER, tiny_tokenizer, tiny_vocab_size  # noqa: E402

# diffusers/stable-diffusion-xl-1.0-inpainting-0.1 unet/config.json (= SDXL base 1.0 with in_channels 9).
SDXL_UNET = dict(
    in_channels=9, out_channels=4, sample_size=128, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5)
# stable-diffusion-v1-5/stable-diffusion-inpainting unet/config.json.
SD15_UNET = dict(
    in_channels=9, out_channels=4, sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, attention_head_dim=8, cross_attention_dim=768,
    norm_num_groups=32, norm_eps=1e-5)
VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
SDXL_VAE = dict(VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True)  # SDXL's VAE overflows in fp16
SD15_VAE = dict(VAE, sample_size=512, scaling_factor=0.18215)
# Text encoders: CLIP ViT-L/14 (SD-1.5, SDXL's first) and OpenCLIP ViT-bigG/14 (SDXL's second). Token ids
# follow the tiny tokenizer (start 0, end and pad 1); the vocabulary keeps its real size.
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, hidden_act="quick_gelu")
BIGG = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
            projection_dim=1280, hidden_act="gelu")
SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")

# The same structures with every width shrunk, for --tiny (sample 16 x VAE factor 8 = 128 px native).
_TINY_UNET = dict(layers_per_block=1, norm_num_groups=8, sample_size=16)
TINY = {
    "sdxl": dict(unet=dict(SDXL_UNET, **_TINY_UNET, block_out_channels=(16, 32, 32), transformer_layers_per_block=(1, 1, 2),
                           attention_head_dim=(2, 4, 4), cross_attention_dim=64, addition_time_embed_dim=8,
                           projection_class_embeddings_input_dim=6 * 8 + 32),
                 text=[dict(CLIP_L, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                            projection_dim=32)] * 2),
    "sd15": dict(unet=dict(SD15_UNET, **_TINY_UNET, block_out_channels=(16, 32, 32, 32), attention_head_dim=4,
                           cross_attention_dim=32),
                 text=[dict(CLIP_L, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                            projection_dim=32)]),
    "vae": dict(block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=8),
}
MODELS = {  # family, store key, working side, steps, guidance (the family's default)
    "sdxl": dict(family="sdxl_inpaint", key="stable-diffusion-xl-1.0-inpainting-0.1", side=1024, steps=30, guidance=8.0),
    "sd15": dict(family="sd15_inpaint", key="stable-diffusion-inpainting", side=512, steps=50, guidance=7.5),
}
CROP_SIDE, CROP_MASK_SHARE = 2048, 0.05
PROMPT, SEED, MASK_GROW, FEATHER = "a red brick wall with ivy", 1234, 4.0, 8.0
FP16_TOLERANCE = 1e-2   # relative error accepted as "equal within fp16" for a 30-50 step run
# What an H100 should show for "ours" (ms), written before the first GPU run. Anchors: SDXL UNet step 69-122 ms
# eager, 43.5 ms as a graph; SDXL VAE fp32 encode/decode 73/126 ms; CLIP-L 7.5 + bigG 18 ms; SD-1.5 step 38.4 ms
# eager (2.1 ms of compute). The engine adds its CPU work (mask grow + feather: two distance transforms over the
# whole image, ~0.25 s at 1024², ~1 s at 2048² on a server core; crop and paste back).
PREDICTED_OURS_MS = {
    ("SDXL inpaint 1024², 30 steps", "pipe + graphed UNet"): 1570, ("SDXL inpaint 1024², 30 steps", "engine"): 1850,
    ("SDXL inpaint 1024², 30 steps", "compiled, graphed"): 1400, ("SDXL inpaint 1024², 30 steps", "compiled UNet"): 1450,
    ("SD-1.5 inpaint 512², 50 steps", "pipe + graphed UNet"): 500, ("SD-1.5 inpaint 512², 50 steps", "engine"): 560,
    ("crop-and-stitch vs full, 2048², 5% mask", "crop"): 2900,
    ("full image 2048², 30 steps", "engine"): 8100,
}


def predicted(name: str, variant: str) -> float | None:
    matches = [ms for (label, part), ms in PREDICTED_OURS_MS.items() if label == name and part in variant]
    return matches[-1] if matches else None


# ---- building ----------------------------------------------------------------------------------------

def build_pipeline(model: str, tiny: bool, device, dtype):
    """The pipeline of ``model`` ("sdxl"/"sd15") with random weights, built on ``device`` in ``dtype``."""
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionInpaintPipeline,
                           StableDiffusionXLInpaintPipeline, UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet_config = TINY[model]["unet"] if tiny else (SDXL_UNET if model == "sdxl" else SD15_UNET)
    vae_config = dict(SDXL_VAE if model == "sdxl" else SD15_VAE, **(TINY["vae"] if tiny else {}))
    texts = TINY[model]["text"] if tiny else ([CLIP_L, BIGG] if model == "sdxl" else [CLIP_L])
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config).to(dtype).eval()
        vae = AutoencoderKL(**vae_config).to(dtype).eval()
        encoders = []
        for index, text in enumerate(texts):
            config = CLIPTextConfig(**dict(text, vocab_size=tiny_vocab_size() if tiny else text["vocab_size"]),
                                    max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1)
            cls = CLIPTextModelWithProjection if index == 1 else CLIPTextModel
            encoders.append(cls._from_config(config, dtype=dtype).eval())
    if model == "sd15":
        pipe = StableDiffusionInpaintPipeline(
            vae=vae, text_encoder=encoders[0], tokenizer=tiny_tokenizer(), unet=unet,
            scheduler=PNDMScheduler(**SD15_SCHEDULER), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    else:
        pipe = StableDiffusionXLInpaintPipeline(
            vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1], tokenizer=tiny_tokenizer(),
            tokenizer_2=tiny_tokenizer(), unet=unet, scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER),
            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class BenchEngine(InpaintEngine):
    """The pack's engine on a pipeline built here: only finding and loading the model differ (the
    model store's ``LoadedModel.use()`` still wraps every call, as in the node)."""

    def __init__(self, pipe, model: str, device, dtype):
        spec = MODELS[model]
        super().__init__(spec["key"], device=device, dtype=dtype)
        self._family = spec["family"]
        scheduler = SchedulerConfig(type(pipe.scheduler).__name__,
                                    {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")})
        adapters = torch.nn.ModuleDict()
        slot = IPAdapterSlot(pipe, adapters) if model == "sdxl" else None
        obj = InpaintModel(pipe, self._family, scheduler, adapters, slot)
        resolved = ResolvedModel(path=Path(f"<bench>/{spec['key']}"), spec=None, source="path")
        # With an index, as models.acquire passes it: the store compares devices exactly, and "cuda"
        # against the weights' "cuda:0" would move every weight in again on each use.
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        self._loaded = LoadedModel((str(resolved.path), str(device), str(dtype)), resolved, self._family, obj,
                                   device, dtype)

    def load(self):
        return self._loaded

    def defaults(self):
        return defaults_for(self.model_choice, self._family)


# ---- inputs -----------------------------------------------------------------------------------------------

def scene(side: int, mask_share: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth colour field with texture, and an elliptical mask covering ``mask_share`` of it."""
    yy, xx = np.mgrid[0:side, 0:side] / side
    noise = np.random.default_rng(7).random((side, side, 3)) * 0.15
    image = np.clip(np.stack([xx, yy, 1 - 0.5 * (xx + yy)], axis=-1) * 0.85 + noise, 0, 1).astype(np.float32)
    a = np.sqrt(mask_share / np.pi * 4 / 3) * side   # semi-axes a and 0.75 a: area pi * 0.75 a^2
    inside = ((xx * side - 0.55 * side) / a) ** 2 + ((yy * side - 0.45 * side) / (0.75 * a)) ** 2 <= 1
    return image, inside.astype(np.float32)


def paste_mask(mask: np.ndarray) -> np.ndarray:
    """What the engine repaints (engines/inpaint.py step 1): the mask grown, with a soft rim."""
    return crop_stitch.outward_feather(mask_ops.grow(mask, MASK_GROW), FEATHER)


def bare_call(image: np.ndarray, paste: np.ndarray, spec: dict, output_type: str = "np") -> dict:
    """The engine's pipeline arguments in full mode (engines/inpaint.py ``_call_arguments``)."""
    height, width = paste.shape
    return dict(prompt=PROMPT, negative_prompt=None, image=torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(),
                mask_image=torch.from_numpy((paste > 0).astype(np.float32))[None, None].contiguous(),
                height=height, width=width, num_inference_steps=spec["steps"], guidance_scale=spec["guidance"],
                strength=1.0, eta=0.0, output_type=output_type)


def engine_call(engine, image, mask, spec, mode="full", resolution=None):
    return engine.inpaint(image, mask, PROMPT, steps=spec["steps"], guidance=spec["guidance"], strength=1.0,
                          scheduler="default", seed=SEED, mode=mode, mask_grow=MASK_GROW, feather=FEATHER,
                          resolution=resolution, eta=0.0)


# ---- parts --------------------------------------------------------------------------------------------------

def measure(clock: Clock, fn, **kwargs) -> dict:
    """``Clock.measure`` plus the peak memory *reserved*: a CUDA graph's activations live in its own
    pool, which peak-allocated no longer counts once the capture is over."""
    out = clock.measure(fn, **kwargs)
    out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30 if clock.device.type == "cuda" else None
    return out


def timed_first(clock: Clock, fn):
    """One call timed on its own (wall clock, synchronised): the call that records new graphs."""
    clock.sync()
    began = time.perf_counter()
    result = fn()
    clock.sync()
    return (time.perf_counter() - began) * 1000, result


def model_rows(model: str, pipe, engine, spec: dict, clock: Clock) -> list[dict]:
    side = spec["side"]
    name = f"{'SDXL' if model == 'sdxl' else 'SD-1.5'} inpaint {side}², {spec['steps']} steps"
    image, mask = scene(side, 0.08)
    paste = paste_mask(mask)
    call = bare_call(image, paste, spec)

    def bare(output_type="np"):
        return pipe(**dict(call, output_type=output_type), generator=torch.Generator("cpu").manual_seed(SEED)).images

    def graphed(output_type="np"):
        with unet_graph.graphed_unet(pipe.unet):
            return bare(output_type)

    runner = unet_graph.runner_for(pipe.unet)
    runner.clear()
    with torch.no_grad():
        bare_run = measure(clock, lambda: bare()[0])
        first_ms, _ = timed_first(clock, graphed)
        captures = runner.stats.captures
        graph_run = measure(clock, lambda: graphed()[0])
        engine_run = measure(clock, lambda: engine_call(engine, image, mask, spec))
        latents = rel_error(torch.as_tensor(graphed("latent")), torch.as_tensor(bare("latent")))
    recaptured = runner.stats.captures - captures  # the same shapes again (pipe, engine): must stay 0
    compiled_rows = compiled_variant(name, pipe, engine, spec, clock, runner, graphed, bare_run, image, mask,
                                     paste) if COMPILE_VARIANT[0] else []
    cpu = cpu_share(image, mask, {"full": side})
    reason = unet_graph.why_not_graphed(pipe.unet) or ""
    graph_note = (f"graphs: {captures} recorded, one-time +{first_ms - graph_run['ms']:.0f} ms on the first call "
                  f"(capture {runner.stats.capture_seconds * 1000:.0f} ms host), re-recorded after: {recaptured}"
                  if not reason else f"graphs off: {reason}")
    if clock.device.type == "cuda":
        graph_note += (f"; peak reserved GiB {bare_run['peak_reserved_gib']:.2f} / "
                       f"{graph_run['peak_reserved_gib']:.2f} (graph pools)")

    bare_image, graph_image = bare_run["result"], graph_run["result"]
    result = engine_run["result"]
    ours_image, full = result.images[0], paste == 1
    outside_same = bool(np.array_equal(ours_image[paste == 0], image[paste == 0]))
    image_error = rel_error(torch.from_numpy(graph_image), torch.from_numpy(bare_image))
    masked_error = rel_error(torch.from_numpy(ours_image[full]), torch.from_numpy(bare_image[full]))
    saturated = float(((bare_image <= 0.0) | (bare_image >= 1.0)).mean())
    extra = {"first_call_ms": first_ms, "captures": captures, "recaptured_after_first": recaptured,
             "capture_host_s": runner.stats.capture_seconds, "latents_rel_error": latents,
             "bare_image_finite": bool(np.isfinite(bare_image).all()), "bare_image_saturated_share": saturated,
             "paste_mask_same_as_engine": bool(np.array_equal(result.mask_used, paste))}
    return [
        row(name, bare_run, graph_run, "pipe + graphed UNet", image_error, f"image; latents rel err {latents:.1e}; "
            f"{graph_note}", extra),
        row(name, bare_run, engine_run, "engine, full mode", masked_error,
            f"masked pixels; outside the paste mask bit-identical: {'yes' if outside_same else 'NO'}; CPU pre/post "
            f"{cpu['full_ms']:.0f} ms", {"outside_bit_identical": outside_same, "work_size": result.work_size,
                                         "cpu_breakdown": cpu}),
    ] + compiled_rows


COMPILE_VARIANT = [False]   # --compile on: also time the UNet compiled (AGENTIC_EDIT_COMPILE=1) and graphed


def compiled_variant(name, pipe, engine, spec, clock, runner, graphed, bare_run, image, mask, paste) -> list[dict]:
    """The same calls with ``AGENTIC_EDIT_COMPILE=1``: the UNet's forward compiled by inductor, then
    recorded as a graph. The first call (compile + capture) is timed apart: the one-time cost."""
    previous = os.environ.get(unet_graph.COMPILE_ENV)
    os.environ[unet_graph.COMPILE_ENV] = "1"
    try:
        runner.clear()
        with torch.no_grad():
            first_ms, _ = timed_first(clock, graphed)
            captures = runner.stats.captures
            compiled_run = measure(clock, lambda: graphed()[0])
            engine_run = measure(clock, lambda: engine_call(engine, image, mask, spec))
            latents = rel_error(torch.as_tensor(graphed("latent")), torch.as_tensor(
                pipe(**bare_call(image, paste, spec, "latent"), generator=torch.Generator("cpu").manual_seed(SEED)).images))
    finally:
        if previous is None:
            os.environ.pop(unet_graph.COMPILE_ENV, None)
        else:
            os.environ[unet_graph.COMPILE_ENV] = previous
        runner.clear()   # the rows after this one time the uncompiled graphs again
    bare_image, full = bare_run["result"], paste == 1
    image_error = rel_error(torch.from_numpy(compiled_run["result"]), torch.from_numpy(bare_image))
    ours = engine_run["result"].images[0]
    masked_error = rel_error(torch.from_numpy(ours[full]), torch.from_numpy(bare_image[full]))
    outside_same = bool(np.array_equal(ours[paste == 0], image[paste == 0]))
    note = (f"compile {runner.stats.compile_seconds:.0f} s once (first call {first_ms / 1000:.0f} s with the "
            f"capture), re-recorded after: {runner.stats.captures - captures}")
    extra = {"first_call_ms": first_ms, "compile_s": runner.stats.compile_seconds, "latents_rel_error": latents}
    return [
        row(name, bare_run, compiled_run, "pipe + compiled, graphed UNet (AGENTIC_EDIT_COMPILE=1)", image_error,
            f"image; latents rel err {latents:.1e}; {note}", extra),
        row(name, bare_run, engine_run, "engine, full mode, compiled UNet", masked_error,
            f"masked pixels; outside the paste mask bit-identical: {'yes' if outside_same else 'NO'}",
            {"outside_bit_identical": outside_same}),
    ]


def crop_rows(pipe, engine, spec: dict, clock: Clock, side: int, tiny: bool) -> list[dict]:
    """Crop-and-stitch (works at the model's ~1024²) against the full image at its own size."""
    image, mask = scene(side, CROP_MASK_SHARE)
    paste = paste_mask(mask)
    full_resolution = side
    with torch.no_grad():
        crop_first, _ = timed_first(clock, lambda: engine_call(engine, image, mask, spec, "crop"))
        crop_run = measure(clock, lambda: engine_call(engine, image, mask, spec, "crop"), warmup=0)
        full_first, _ = timed_first(clock, lambda: engine_call(engine, image, mask, spec, "full", full_resolution))
        full_run = measure(clock, lambda: engine_call(engine, image, mask, spec, "full", full_resolution), warmup=0,
                                 iters=1 if tiny else 2)
        call = bare_call(image, paste, spec)
        bare_full = measure(clock, lambda: pipe(**call, generator=torch.Generator("cpu").manual_seed(SEED)).images[0],
                                  warmup=1, iters=1)
    crop, full = crop_run["result"], full_run["result"]
    same = {m: bool(np.array_equal(r.images[0][paste == 0], image[paste == 0])) for m, r in (("crop", crop), ("full", full))}
    cpu = cpu_share(image, mask, {"crop": spec["side"], "full": side})
    name = f"crop-and-stitch vs full, {side}², {CROP_MASK_SHARE:.0%} mask"
    mask_share = float((mask > 0).mean())
    rows = [
        row(name, full_run, crop_run, f"crop at {crop.work_size[0]}x{crop.work_size[1]} (bare column: engine full at "
            f"{side}²)", None, f"speed-up {full_run['ms'] / crop_run['ms']:.2f}x (goal >= 3); outside bit-identical: "
            f"crop {same['crop']}, full {same['full']}; CPU pre/post crop {cpu['crop_ms']:.0f} ms, full "
            f"{cpu['full_ms']:.0f} ms", {"speed_up": full_run["ms"] / crop_run["ms"], "mask_share": mask_share,
                                         "crop_first_call_ms": crop_first, "full_first_call_ms": full_first,
                                         "cpu_breakdown": cpu, "outside_bit_identical": same}),
        row(f"full image {side}², {spec['steps']} steps", bare_full, full_run, "engine, full mode", None,
            "bare: pipe(...) at the full size, eager"),
    ]
    return rows


def cpu_share(image, mask, modes: dict[str, int]) -> dict:
    """The engine's CPU work around the pipeline (mask grow, feather, crop, paste back), in ms, for
    each ``mode: resolution``."""
    out = {}
    for mode, resolution in modes.items():
        began = time.perf_counter()
        grown = mask_ops.grow(mask, MASK_GROW)
        feathered = crop_stitch.outward_feather(grown, FEATHER)
        t_mask = time.perf_counter()
        plan = crop_stitch.plan_crop(feathered, resolution, 0.25, mode)
        work_image, _ = crop_stitch.crop_for_model(image, feathered, plan)
        t_crop = time.perf_counter()
        crop_stitch.paste_back(image, work_image, feathered, plan)
        done = time.perf_counter()
        out.update({f"{mode}_grow_feather_ms": (t_mask - began) * 1000, f"{mode}_crop_ms": (t_crop - t_mask) * 1000,
                    f"{mode}_paste_ms": (done - t_crop) * 1000, f"{mode}_ms": (done - began) * 1000})
    return out


def row(name, bare, ours, variant, error, what, extra=None) -> dict:
    out = dict(name=name, variant=variant, bare_ms=bare["ms"], bare_min_ms=bare["min_ms"], bare_max_ms=bare["max_ms"],
               n=bare["n"], bare_peak_gib=bare["peak_gib"], ours_ms=ours["ms"], ours_min_ms=ours["min_ms"],
               ours_max_ms=ours["max_ms"], ours_peak_gib=ours["peak_gib"], ratio=ours["ms"] / bare["ms"],
               bare_peak_reserved_gib=bare["peak_reserved_gib"], ours_peak_reserved_gib=ours["peak_reserved_gib"])
    if error is not None:
        ok = np.isfinite(error) and error <= FP16_TOLERANCE
        out.update(rel_error=error, equal_within_fp16=bool(ok),
                   check=f"{what.split(';')[0]}: rel err {error:.2e} ({'ok' if ok else 'DIFFERENT'});"
                         f"{what.partition(';')[2]}")
    else:
        out["check"] = what
    out.update(extra or {})
    out["predicted_ours_ms"] = predicted(name, variant)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (checks the script, not speed)")
    parser.add_argument("--parts", default="sdxl,crop,sd15", help="comma list of sdxl, crop, sd15")
    parser.add_argument("--iters", type=int, default=None, help="timed runs per measurement (median)")
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--json", default=None, help="where to write the JSON (default $OUT/bench_inpaint.json)")
    parser.add_argument("--compile", choices=("on", "off"), default="off",
                        help="also time the compiled + graphed UNet (AGENTIC_EDIT_COMPILE=1; minutes of compile)")
    args = parser.parse_args(argv)
    COMPILE_VARIANT[0] = args.compile == "on"

    device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.tiny:
        parser.error("no GPU here: run with --tiny to check the script on the CPU")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if args.tiny:
        torch.set_num_threads(1)  # tiny models gain nothing from threads; on a small CPU they only wait
    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # the SDXL VAE's fp32 round trip warns on every call
    set_memory_profile("high")  # a server keeps the model resident; auto could offload between calls
    clock = Clock(device, warmup=args.warmup if args.warmup is not None else 1,
                  iters=args.iters if args.iters is not None else (1 if args.tiny else 3))
    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    unknown = parts - {"sdxl", "crop", "sd15"}
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}; use sdxl, crop, sd15")

    rows: list[dict] = []
    report = {"environment": dict(environment(device), diffusers=diffusers.__version__,
                                  cuda_graphs=unet_graph.cuda_graphs_setting()), "rows": rows}
    print(json.dumps(report["environment"]), flush=True)
    target = args.json or (os.path.join(os.environ["OUT"], "bench_inpaint.json") if os.environ.get("OUT") else None)

    def run(part: str, fn) -> None:
        """One part's rows; a failing part leaves an error row and the others still run. The table and
        the JSON are written after every part, so a run cut off by a time limit keeps them."""
        began = time.perf_counter()
        try:
            rows.extend(fn())
        except Exception as exc:
            import traceback

            traceback.print_exc()
            rows.append(dict(name=part, error=f"{type(exc).__name__}: {exc}"))
        print(f"{part}: {time.perf_counter() - began:.0f} s\n{markdown(rows)}", flush=True)
        if target:
            write_report(target, report)

    for model in ("sdxl", "sd15"):
        wanted = {model} | ({"crop"} if model == "sdxl" else set())
        if not parts & wanted:
            continue
        spec = dict(MODELS[model], **({"side": 128, "steps": 3 if model == "sdxl" else 4} if args.tiny else {}))
        began = time.perf_counter()
        pipe = build_pipeline(model, args.tiny, device, dtype)
        engine = BenchEngine(pipe, model, device, dtype)
        params = {n: sum(p.numel() for p in m.parameters()) / 1e6 for n, m in pipe.components.items()
                  if isinstance(m, torch.nn.Module)}
        report[f"{model}_params_m"] = params
        print(f"built {model} in {time.perf_counter() - began:.0f} s: {json.dumps(params)} M params", flush=True)
        if model in parts:
            run(model, functools.partial(model_rows, model, pipe, engine, spec, clock))
        if model == "sdxl" and "crop" in parts:
            run("crop", functools.partial(crop_rows, pipe, engine, spec, clock, 256 if args.tiny else CROP_SIDE,
                                          args.tiny))
        del pipe, engine
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if target:
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

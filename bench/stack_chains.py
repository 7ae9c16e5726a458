"""The two chains bench_stack.py times, through the pack's engines and as a bare library script.

* edit: ground (Qwen2.5-VL-7B, 64 new tokens) -> segment (SAM-2.1-large, the first box) ->
  inpaint (SDXL, 1024x1024, 30 steps, full image);
* remove_text: remove (SDXL inpaint with the removal prompt, as ``RemoveObject``'s inpaint method
  does; mask grown by 12 px) -> draw text into the removed region's box.

Random weights name no box and SAM-2's mask is noise, so the chains fall back to fixed prompts
where the real output would be used: the box below when grounding finds nothing, and the ellipse
mask when SAM-2's mask covers less than 1 % or more than 90 % of the image. Both sides make the
same choices, so both do the same work.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agentic_edit.engines.geometry import Box
from agentic_edit.engines.grounding import QWEN_BOX_PROMPT, GroundingEngine
from agentic_edit.engines.inpaint import InpaintEngine
from agentic_edit.engines.segment import SegmentEngine
from agentic_edit.engines.text_draw import draw_text
from agentic_edit.models import store_stats
from bench.bench_inpaint import scene
from bench.stack_models import QWEN_KEY, SAM_KEY, SDXL_KEY

QUERY = "the lamp on the left"
EDIT_PROMPT = "a red brick wall with ivy"
REMOVE_PROMPT = "empty background, seamless natural continuation of the surroundings, nothing there"
REMOVE_NEGATIVE = "object, person, animal, text, watermark, blurry, artifacts"
REMOVE_GROW = 12.0
TEXT = "GRAND OPENING"
SEED = 1234


@dataclass
class Settings:
    side: int = 1024
    steps: int = 30
    guidance: float = 8.0
    tokens: int = 64
    sdxl_dtype: torch.dtype | None = torch.float16   # the bare script's: diffusers' fp16 recipe (fp32 VAE round trip)
    ours_sdxl_dtype: torch.dtype | None = None       # None: the engine's own choice (bf16 where the card has it)
    max_pixels: int = 1036 * 1036      # a 1024x1024 image -> 74x74 patches -> 1369 image tokens


@dataclass
class Inputs:
    image: np.ndarray
    mask: np.ndarray
    box: Box

    @classmethod
    def make(cls, side: int) -> "Inputs":
        image, mask = scene(side, 0.08)
        ys, xs = np.nonzero(mask)
        return cls(image, mask, Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))


@dataclass
class Timer:
    device: torch.device
    parts: dict = field(default_factory=dict)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, name: str, fn):
        self.sync()
        began = time.perf_counter()
        out = fn()
        self.sync()
        self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - began
        return out


def usable_mask(mask: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, bool]:
    share = float((mask > 0.5).mean())
    return (mask, False) if 0.01 <= share <= 0.9 else (fallback, True)


# ---- through the engines ---------------------------------------------------------------------------

def ours_edit(inputs: Inputs, s: Settings, timer: Timer) -> dict:
    tokens = []
    grounding = GroundingEngine(QWEN_KEY)
    found = timer.run("ground", lambda: grounding.ground(
        inputs.image, QUERY, mode="qwen", max_pixels=s.max_pixels, max_new_tokens=s.tokens,
        progress=lambda step, total: tokens.append(step)))
    boxes = [o.box for o in found.objects if o.box is not None] or [inputs.box]
    segmented = timer.run("segment", lambda: SegmentEngine(SAM_KEY).segment(inputs.image, boxes=boxes[:1],
                                                                             multimask="never"))
    mask, fell_back = usable_mask(segmented.union, inputs.mask)
    engine = InpaintEngine(SDXL_KEY, dtype=s.ours_sdxl_dtype)
    timer.run("inpaint", lambda: engine.inpaint(inputs.image, mask, EDIT_PROMPT, steps=s.steps, guidance=s.guidance,
                                                strength=1.0, seed=SEED, mode="full", mask_grow=4.0, feather=8.0))
    return {"tokens": len(tokens), "box_from_model": bool(found.objects), "mask_fallback": fell_back}


def ours_remove_text(inputs: Inputs, s: Settings, timer: Timer) -> dict:
    engine = InpaintEngine(SDXL_KEY, dtype=s.ours_sdxl_dtype)
    removed = timer.run("remove", lambda: engine.inpaint(
        inputs.image, inputs.mask, REMOVE_PROMPT, REMOVE_NEGATIVE, steps=s.steps, guidance=s.guidance, strength=1.0,
        seed=SEED, mode="full", mask_grow=REMOVE_GROW, feather=8.0))
    timer.run("text", lambda: draw_text(removed.images[0], [inputs.box], TEXT, overflow="shrink"))
    return {}


OURS = {"edit": ours_edit, "remove_text": ours_remove_text}


# ---- bare: the libraries, everything preloaded ------------------------------------------------------

class Bare:
    """The same models loaded the way a library user would, all on the device at once."""

    def __init__(self, root: Path, device: torch.device, s: Settings):
        from diffusers import StableDiffusionXLInpaintPipeline
        from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration, Sam2Model, Sam2Processor

        self.device, self.s = device, s
        qwen_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        where = {"device_map": str(device)} if device.type == "cuda" else {}
        self.qwen = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            str(root / "LLM" / QWEN_KEY), dtype=qwen_dtype, attn_implementation="sdpa", **where).eval()
        self.processor = AutoProcessor.from_pretrained(str(root / "LLM" / QWEN_KEY))
        sam_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        self.sam = Sam2Model.from_pretrained(str(root / "sam2" / SAM_KEY), dtype=sam_dtype).to(device).eval()
        self.sam_processor = Sam2Processor.from_pretrained(str(root / "sam2" / SAM_KEY))
        self.pipe = StableDiffusionXLInpaintPipeline.from_pretrained(
            str(root / "diffusers" / SDXL_KEY), dtype=s.sdxl_dtype).to(device)
        self.pipe.set_progress_bar_config(disable=True)

    def weights_bytes(self) -> int:
        modules = [self.qwen, self.sam] + [m for m in self.pipe.components.values() if isinstance(m, torch.nn.Module)]
        return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])

    def ground(self, image: np.ndarray) -> int:
        from PIL import Image

        picture = Image.fromarray((image * 255).round().astype(np.uint8))
        messages = [{"role": "user", "content": [{"type": "image"},
                                                 {"type": "text", "text": QWEN_BOX_PROMPT.format(query=QUERY)}]}]
        prompt = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        size = {"shortest_edge": 56 * 56, "longest_edge": self.s.max_pixels}
        inputs = self.processor(text=[prompt], images=[picture], images_kwargs={"size": size},
                                return_tensors="pt").to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.qwen.dtype)
        with torch.inference_mode():
            out = self.qwen.generate(**inputs, max_new_tokens=self.s.tokens, min_new_tokens=self.s.tokens,
                                     do_sample=False)
        self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        return int(out.shape[1] - inputs["input_ids"].shape[1])

    def segment(self, image: np.ndarray, box: Box) -> np.ndarray:
        encoded = self.sam_processor(images=image, input_boxes=[[[box.x1, box.y1, box.x2, box.y2]]],
                                     do_rescale=False, return_tensors="pt")
        with torch.inference_mode():
            out = self.sam(pixel_values=encoded["pixel_values"].to(self.device, self.sam.dtype),
                           input_boxes=encoded["input_boxes"].to(self.device), multimask_output=False)
        masks = self.sam_processor.post_process_masks([out.pred_masks[0].float().cpu()], encoded["original_sizes"],
                                                      binarize=True)[0]
        return masks[0, 0].numpy().astype(np.float32)

    def inpaint(self, image: np.ndarray, mask: np.ndarray, prompt: str, negative: str | None = None) -> np.ndarray:
        with torch.inference_mode():
            out = self.pipe(prompt=prompt, negative_prompt=negative,
                            image=torch.from_numpy(image).permute(2, 0, 1)[None].contiguous(),
                            mask_image=torch.from_numpy((mask > 0).astype(np.float32))[None, None].contiguous(),
                            height=self.s.side, width=self.s.side, num_inference_steps=self.s.steps,
                            guidance_scale=self.s.guidance, strength=1.0, output_type="np",
                            generator=torch.Generator("cpu").manual_seed(SEED))
        return np.asarray(out.images[0], dtype=np.float32)

    @staticmethod
    def text(image: np.ndarray, box: Box) -> np.ndarray:
        """What a script would do: PIL at a fixed font size, no fitting."""
        from PIL import Image, ImageDraw

        picture = Image.fromarray((image * 255).round().astype(np.uint8))
        ImageDraw.Draw(picture).text((box.x1, box.y1), TEXT, fill=(255, 255, 255))
        return np.asarray(picture, dtype=np.float32) / 255.0


def bare_edit(bare: Bare, inputs: Inputs, s: Settings, timer: Timer) -> dict:
    tokens = timer.run("ground", lambda: bare.ground(inputs.image))
    mask = timer.run("segment", lambda: bare.segment(inputs.image, inputs.box))
    mask, fell_back = usable_mask(mask, inputs.mask)
    timer.run("inpaint", lambda: bare.inpaint(inputs.image, mask, EDIT_PROMPT))
    return {"tokens": tokens, "mask_fallback": fell_back}


def bare_remove_text(bare: Bare, inputs: Inputs, s: Settings, timer: Timer) -> dict:
    from agentic_edit.engines import mask_ops

    grown = mask_ops.grow(inputs.mask, REMOVE_GROW)
    removed = timer.run("remove", lambda: bare.inpaint(inputs.image, grown, REMOVE_PROMPT, REMOVE_NEGATIVE))
    timer.run("text", lambda: bare.text(removed, inputs.box))
    return {}


BARE = {"edit": bare_edit, "remove_text": bare_remove_text}


# ---- one timed run ------------------------------------------------------------------------------------

def timed_run(fn, device: torch.device) -> dict:
    """One chain: total and per-engine seconds, the store's load/move/offload/free seconds, peak memory."""
    timer = Timer(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    before = store_stats.snapshot()
    began = time.perf_counter()
    info = fn(timer)
    timer.sync()
    total = time.perf_counter() - began
    store = store_stats.difference(store_stats.snapshot(), before)
    out = {"total_s": total, "parts_s": timer.parts, "info": info,
           "load_s": store["build_s"], "move_in_s": store["move_in_s"], "offload_s": store["offload_s"],
           "free_s": store["free_s"], "builds": store["builds"], "moves_in": store["moves_in"],
           "move_in_gb": store["move_in_bytes"] / 1e9, "offload_copied_gb": store["offload_bytes"] / 1e9,
           "streamed_gb": store["streamed_bytes"] / 1e9}
    if device.type == "cuda":
        out["peak_alloc_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return out


def summarize(runs: list[dict]) -> dict:
    """Median total and parts over warm runs, max peaks."""
    if not runs:
        return {}
    keys = set().union(*(r["parts_s"] for r in runs))
    out = {"n": len(runs), "total_s": statistics.median(r["total_s"] for r in runs),
           "min_total_s": min(r["total_s"] for r in runs), "max_total_s": max(r["total_s"] for r in runs),
           "parts_s": {k: statistics.median(r["parts_s"].get(k, 0.0) for r in runs) for k in sorted(keys)}}
    for key in ("load_s", "move_in_s", "offload_s", "free_s", "move_in_gb", "offload_copied_gb", "streamed_gb"):
        out[key] = statistics.median(r[key] for r in runs)
    out["builds"] = sum(r["builds"] for r in runs)   # must be 0: nothing is loaded twice
    for key in ("peak_alloc_gib", "peak_reserved_gib"):
        if key in runs[0]:
            out[key] = max(r[key] for r in runs)
    out["info"] = runs[-1]["info"]
    return out

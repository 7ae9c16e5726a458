"""Full-size random-weight checkpoints for bench_stack.py, written to disk in the real folder layouts.

Under one models root (``AGENTIC_EDIT_MODELS_DIR``), as the resolver finds them:

* ``LLM/Qwen2.5-VL-7B-Instruct/``: ``save_pretrained`` of Qwen2.5-VL-7B (config from
  bench_grounding.QWEN_7B, bf16, ~16.6 GB) + a Qwen2.5-VL processor (a byte-level tokenizer built
  locally with Qwen's special tokens, tests/tiny_models/qwen2_5_vl.py; the image processor with the
  real pixel limits);
* ``sam2/sam2.1-hiera-large/``: transformers ``Sam2Model`` (bench_grounding.SAM_LARGE, fp32, 0.9 GB)
  + ``Sam2Processor``;
* ``diffusers/stable-diffusion-xl-1.0-inpainting-0.1/``: the SDXL-inpaint pipeline of
  bench_inpaint.build_pipeline (fp16, ~7 GB) via ``save_pretrained``, tokenizer files as the tests write them.

Models are built on ``device`` (the GPU: seconds) and written once; a ``.complete`` marker makes a
second call a no-op. ``--tiny`` writes the tiny configs the benches use on the CPU.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

import torch

QWEN_KEY = "Qwen2.5-VL-7B-Instruct"
SAM_KEY = "sam2.1-hiera-large"
SDXL_KEY = "stable-diffusion-xl-1.0-inpainting-0.1"
MARKER = ".complete"
REAL_MIN_PIXELS, REAL_MAX_PIXELS = 56 * 56, 28 * 28 * 16384


def folders(root: Path) -> dict[str, Path]:
    return {"qwen": root / "LLM" / QWEN_KEY, "sam": root / "sam2" / SAM_KEY, "sdxl": root / "diffusers" / SDXL_KEY}


def _done(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _mark(folder: Path, info: dict) -> None:
    (folder / MARKER).write_text(json.dumps(info))


def write_qwen(folder: Path, tiny: bool, device) -> dict:
    from transformers import GenerationConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessor

    from bench.bench_grounding import QWEN_7B, QWEN_SHARED_VISION, QWEN_TINY
    from tests.tiny_models.qwen2_5_vl import SPECIAL_TOKENS, build_processor, build_tokenizer

    spec = QWEN_TINY if tiny else QWEN_7B
    tokenizer = build_tokenizer()
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = dict(spec["text"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"])
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=dict(QWEN_SHARED_VISION, **spec["vision"]), tie_word_embeddings=False,
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).eval()
    model.generation_config = GenerationConfig(bos_token_id=ids["<|endoftext|>"], eos_token_id=[ids["<|im_end|>"]],
                                               pad_token_id=ids["<|endoftext|>"])
    model.save_pretrained(folder, safe_serialization=True)
    processor = build_processor(tokenizer)
    if not tiny:  # the real checkpoint's pixel limits, so a 1024x1024 image gives 1369 image tokens
        processor.image_processor = Qwen2VLImageProcessor(min_pixels=REAL_MIN_PIXELS, max_pixels=REAL_MAX_PIXELS)
    processor.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    return {"params": params, "dtype": str(dtype)}


def write_sam(folder: Path, tiny: bool, device) -> dict:
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2ImageProcessor, Sam2Model, Sam2Processor, Sam2VisionConfig

    from bench.bench_grounding import SAM_LARGE, SAM_TINY

    trunk = SAM_TINY if tiny else SAM_LARGE
    config = Sam2Config(vision_config=Sam2VisionConfig(backbone_config=Sam2HieraDetConfig(**trunk),
                                                       backbone_channel_list=trunk["embed_dim_per_stage"][::-1]))
    torch.manual_seed(0)
    with torch.device(device):
        model = Sam2Model._from_config(config, dtype=torch.float32).eval()
    model.save_pretrained(folder, safe_serialization=True)
    Sam2Processor(image_processor=Sam2ImageProcessor()).save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    return {"params": params, "dtype": "torch.float32"}


def write_sdxl(folder: Path, tiny: bool, device) -> dict:
    from bench.bench_inpaint import build_pipeline
    from tests.tiny_models.sd_inpaint import write_tokenizer_files

    dtype = torch.float32 if tiny else torch.float16
    pipe = build_pipeline("sdxl", tiny, device, dtype)
    pipe.save_pretrained(folder, safe_serialization=True)
    write_tokenizer_files(folder / "tokenizer")
    write_tokenizer_files(folder / "tokenizer_2")
    params = {name: sum(p.numel() for p in module.parameters()) for name, module in pipe.components.items()
              if isinstance(module, torch.nn.Module)}
    del pipe
    return {"params": params, "dtype": str(dtype)}


WRITERS = {"qwen": write_qwen, "sam": write_sam, "sdxl": write_sdxl}


def ensure_models(root: Path, tiny: bool, device, only=("qwen", "sam", "sdxl")) -> dict:
    """Write what is missing under ``root``; returns per model: folder, bytes on disk, seconds to write."""
    out = {}
    for name, folder in folders(root).items():
        if name not in only:
            continue
        began = time.perf_counter()
        if not _done(folder):
            folder.mkdir(parents=True, exist_ok=True)
            info = WRITERS[name](folder, tiny, device)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            _sync_folder(folder)
            _mark(folder, info)
        info = json.loads((folder / MARKER).read_text())
        out[name] = dict(info, folder=str(folder), disk_bytes=disk_bytes(folder),
                         write_s=time.perf_counter() - began)
    return out


def disk_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin"))


def _sync_folder(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def drop_page_cache(paths: list[Path]) -> str:
    """Evict ``paths`` from the page cache so the next read comes from the disk. Tries the
    system-wide drop (root) and, per file, POSIX_FADV_DONTNEED (works without root)."""
    how = []
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        how.append("drop_caches")
    except OSError:
        pass
    advised = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                advised += 1
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            pass
    if advised:
        how.append(f"fadvise on {advised} files")
    return ", ".join(how) or "none (reads may come from the page cache)"


def disk_read_bandwidth(paths: list[Path], limit_bytes: int = 8 * 1024**3) -> dict:
    """Sequential read speed of the weight files, page cache dropped first (up to ``limit_bytes``)."""
    how = drop_page_cache(paths)
    block = bytearray(64 * 1024**2)
    view = memoryview(block)
    total, began = 0, time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while total < limit_bytes:
                n = handle.readinto(view)
                if not n:
                    break
                total += n
        if total >= limit_bytes:
            break
    seconds = time.perf_counter() - began
    drop_page_cache(paths)
    return {"bytes": total, "seconds": seconds, "gb_s": total / seconds / 1e9 if seconds else None, "cache_drop": how}

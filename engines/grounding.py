"""Grounding engine: an instruction and an image -> boxes and interior points, on Qwen2.5-VL.

One class around transformers' ``Qwen2_5_VLForConditionalGeneration`` and its ``AutoProcessor``:

* ``ground(image, query)``: asks the model where ``query`` is and returns a ``GroundingResult``
  (engines/grounding_parse.py) in original-image pixels. Two prompt conventions:
  ``"qwen"`` (plain Qwen2.5-VL, the cookbook's "Locate ... output bbox coordinates in JSON format";
  the image keeps its aspect, sides resized to multiples of 28 under a pixel cap) and
  ``"vision_reasoner"`` (VisionReasoner-7B's RL-trained template: think, then answer boxes + points;
  the image squashed to 840x840, which its coordinates refer to).
* ``ask(image, question)`` and ``chat(messages, images)``: free-form answers, so the planner can use
  the same loaded model as a local VLM.

Weights load through the model store (``models``): registered specs, ComfyUI's ``LLM`` folder, a
local path or a hub id; loaded once and shared by every engine instance naming the same files.
Nothing here assumes a model size: patch size, merge size and pixel limits come from the processor.
Greedy decoding, so the same image and query always give the same boxes.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..models import ModelSpec, acquire, get_spec, register_spec
from .compiled_forward import compile_setting
from .grounding_parse import (VISION_REASONER_SIZE, GroundingResult, input_size_from_grid, parse_grounding,
                              split_thinking)
from .imaging import rgb_to_pil, to_rgb_array
from .qwen_fast import UnsupportedModelError, enable_batched_window_attention, fast_generate

log = logging.getLogger(__name__)

FAMILY = "qwen2_5_vl"
FOLDER = "LLM"
QWEN = "qwen"
VISION_REASONER = "vision_reasoner"
CONVENTIONS = (QWEN, VISION_REASONER)
MODES = ("auto",) + CONVENTIONS
DEFAULT_MODEL = "Qwen2.5-VL-7B-Instruct"
# The README's suggested cap (1280 tokens of 28x28): big photos cost ~1k image tokens, not ~16k.
DEFAULT_MAX_PIXELS = 1280 * 28 * 28
DEFAULT_GROUND_TOKENS = 1024   # VisionReasoner thinks before it answers; a plain answer stops early
DEFAULT_ASK_TOKENS = 512

_REPO_FILES = ("*.json", "*.safetensors", "*.txt", "*.jinja")
_REQUIRED = ("config.json", "*.safetensors", "tokenizer_config.json")
SPECS = (
    ModelSpec(key="Qwen2.5-VL-3B-Instruct", family=FAMILY, folder=FOLDER, repo_id="Qwen/Qwen2.5-VL-3B-Instruct",
              required_files=_REQUIRED, allow_patterns=_REPO_FILES, size_gb=7.5,
              licence="Qwen Research licence: non-commercial use only",
              notes="smallest Qwen2.5-VL; fits a 12 GB card at the default pixel cap"),
    ModelSpec(key="Qwen2.5-VL-7B-Instruct", family=FAMILY, folder=FOLDER, repo_id="Qwen/Qwen2.5-VL-7B-Instruct",
              required_files=_REQUIRED, allow_patterns=_REPO_FILES, size_gb=16.6, licence="Apache-2.0"),
    ModelSpec(key="VisionReasoner-7B", family=FAMILY, folder=FOLDER, repo_id="Ricky06662/VisionReasoner-7B",
              required_files=_REQUIRED, allow_patterns=_REPO_FILES, size_gb=16.6,
              licence="Apache-2.0 (code); fine-tuned from Qwen2.5-VL-7B-Instruct (Apache-2.0)",
              notes="RL-tuned Qwen2.5-VL-7B that reasons before answering boxes and interior points"),
)
for _spec in SPECS:
    register_spec(_spec)
# Prompt convention per known key; other names are guessed from the name (see convention_for).
_CONVENTION_BY_KEY = {"VisionReasoner-7B": VISION_REASONER}

# Cookbook-style grounding prompts (QwenLM/Qwen2.5-VL cookbooks/spatial_understanding.ipynb).
QWEN_BOX_PROMPT = "Locate {query} in the image, and output the bbox coordinates of each one in JSON format."
QWEN_BOX_POINT_PROMPT = ("Locate {query} in the image, and output the bbox coordinates of each one and a point "
                         "inside it in JSON format, as a list of "
                         '{{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y], "label": "..."}}.')
# VisionReasoner's detection template and one-shot answer, verbatim: the RL-tuned weights expect it
# (dvlab-research/VisionReasoner vision_reasoner/models/vision_reasoner_model.py).
VISION_REASONER_PROMPT = (
    "Please find \"{query}\" with bboxs and points."
    "Compare the difference between object(s) and find the most closely matched object(s)."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
    "i.e., <think> thinking process here </think>"
    "<answer>{answer}</answer>"
)
VISION_REASONER_EXAMPLE = ('[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
                           '{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]')


class GroundingInputError(ValueError):
    """Bad input to the grounding engine; the message names the input and what to do."""


@dataclass
class QwenVL:
    """What the store caches: the model and its processor (the store moves ``model``)."""

    model: Any
    processor: Any


def convention_for(choice: str) -> str:
    """The prompt convention of a model choice: known keys from the table, other names (a folder
    of a fine-tune, a local path, a hub id) by name: VisionReasoner / Seg-Zero, else plain Qwen."""
    spec = get_spec(choice)
    if spec is not None and spec.key in _CONVENTION_BY_KEY:
        return _CONVENTION_BY_KEY[spec.key]
    name = re.sub(r"[^a-z]", "", Path(str(choice)).name.lower())
    return VISION_REASONER if ("visionreasoner" in name or "segzero" in name) else QWEN


def flash_attention_available() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def _build(resolved, device, dtype, attn_implementation: str = "sdpa") -> QwenVL:
    """Load model + processor from the resolved folder (the store calls this once per files/device/dtype)."""
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from ..models import load_device

    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation}
    target = load_device(resolved, device, dtype)  # the CPU when it would not fit (the store then streams it)
    if target.type != "cpu":
        kwargs["device_map"] = str(target)  # straight onto the card, no full copy in CPU memory
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(resolved.path), **kwargs).eval()
    processor = AutoProcessor.from_pretrained(str(resolved.path))
    try:
        # One attention call per window length instead of a Python loop over ~100 windows per
        # block: the vision encoder 3x faster on an H100, outputs identical (engines/qwen_fast.py).
        enable_batched_window_attention(model, backend="grouped")
    except UnsupportedModelError as exc:
        log.warning("batched window attention unavailable (%s); the vision encoder runs window by window", exc)
    return QwenVL(model, processor)


def compile_decoding() -> bool:
    """Whether decoding uses a static KV cache and a compiled step (``AGENTIC_EDIT_COMPILE=1``).

    Off by default: on an H100 it takes decoding from 31 to 9.7 ms per token, but the first call
    compiles for ~45 s, which only pays off after ~30 grounding calls (a server, a batch job)."""
    return compile_setting()


class GroundingEngine:
    """Qwen2.5-VL grounding and chat on one model choice (loaded lazily, shared through the store).

    ``attn_implementation``: "sdpa" (default, works everywhere) or "flash_attention_2" (only when
    the ``flash_attn`` package is installed; otherwise it falls back to sdpa with a warning). The
    store caches by files, device and dtype, so the first engine to load a model picks it.
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, device=None, dtype=None, attn_implementation: str = "sdpa"):
        if not isinstance(model, str) or not model.strip():
            raise GroundingInputError("model: name a model (for example 'Qwen2.5-VL-7B-Instruct'), "
                                      "a folder path or a Hugging Face repo id")
        if attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise GroundingInputError(f"attn_implementation: {attn_implementation!r} is not one of "
                                      "'sdpa', 'eager', 'flash_attention_2'")
        if attn_implementation == "flash_attention_2" and not flash_attention_available():
            log.warning("flash_attn is not installed; using sdpa attention for %s", model)
            attn_implementation = "sdpa"
        self.model_choice = model.strip()
        self.convention = convention_for(self.model_choice)
        self.device = device
        self.dtype = dtype
        self.attn_implementation = attn_implementation

    def load(self):
        """The store's handle for this engine's model (loads it on first call)."""
        build = functools.partial(_build, attn_implementation=self.attn_implementation)
        return acquire(self.model_choice, FAMILY, build, dtype=self.dtype, device=self.device)

    # ---- grounding ------------------------------------------------------------------------------

    def ground(self, image, query: str, mode: str = "auto", max_pixels: int | None = None,
               max_new_tokens: int = DEFAULT_GROUND_TOKENS, with_points: bool = False,
               progress: Callable[[int, int], None] | None = None) -> GroundingResult:
        """Boxes (and interior points) of what ``query`` names in ``image`` (float RGB ``[H, W, 3]``;
        grayscale / RGBA / PIL accepted), in original-image pixels.

        ``mode``: "auto" (the model's own convention), "qwen" or "vision_reasoner".
        ``max_pixels``: cap on the model input in the "qwen" convention (None: the processor's
        limit, at most ``DEFAULT_MAX_PIXELS``); VisionReasoner always sees 840x840.
        ``with_points``: in the "qwen" convention also ask for a point inside each object
        (VisionReasoner always gives one). ``progress(step, total)`` is called per generated token;
        it may raise to interrupt.
        """
        rgb = to_rgb_array(image, "image")
        query = _check_text(query, "query", "say what to find, for example 'the red car on the left'")
        convention = self._convention(mode)
        height, width = rgb.shape[:2]
        picture = rgb_to_pil(rgb)
        if convention == VISION_REASONER:
            from PIL import Image

            # VisionReasoner's own preprocessing: a bilinear squash to 840x840, aspect not kept.
            picture = picture.resize((VISION_REASONER_SIZE, VISION_REASONER_SIZE), Image.BILINEAR)
            prompt = VISION_REASONER_PROMPT.format(query=query.lower().strip(".\"?!"), answer=VISION_REASONER_EXAMPLE)
            pixels = VISION_REASONER_SIZE * VISION_REASONER_SIZE
            limits: tuple[int | None, int | None] = (pixels, pixels)
        else:
            prompt = (QWEN_BOX_POINT_PROMPT if with_points else QWEN_BOX_PROMPT).format(query=query)
            limits = (None, max_pixels)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text, grid, patch = self._generate(messages, [picture], limits, max_new_tokens, progress)
        if convention == VISION_REASONER:
            input_size = (VISION_REASONER_SIZE, VISION_REASONER_SIZE)
        else:
            input_size = input_size_from_grid(grid, patch)
        result = parse_grounding(text, (width, height), input_size)
        log.info("grounding %r with %s (%s): %s", query, self.model_choice, convention, result.reason)
        return result

    # ---- free-form answers ----------------------------------------------------------------------

    def ask(self, image, question: str, max_new_tokens: int = DEFAULT_ASK_TOKENS, max_pixels: int | None = None,
            progress: Callable[[int, int], None] | None = None) -> str:
        """The model's answer to ``question`` about ``image`` (a reasoning model's ``<think>``
        part is dropped)."""
        question = _check_text(question, "question", "ask something about the image")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        return self.chat(messages, [image], max_new_tokens=max_new_tokens, max_pixels=max_pixels, progress=progress)

    def chat(self, messages: Sequence[dict], images: Sequence = (), max_new_tokens: int = DEFAULT_ASK_TOKENS,
             max_pixels: int | None = None, progress: Callable[[int, int], None] | None = None) -> str:
        """A reply to a chat: ``messages`` are ``{"role": "system"|"user"|"assistant", "content":
        str | [{"type": "text", "text": ..} | {"type": "image"}]}``; ``images`` fill the image
        parts in order (with no image part, they go before the first user message's text)."""
        messages = _chat_messages(messages, len(images))
        pictures = [rgb_to_pil(to_rgb_array(img, f"images[{i}]")) for i, img in enumerate(images)]
        text, _, _ = self._generate(messages, pictures, (None, max_pixels), max_new_tokens, progress)
        _, answer = split_thinking(text)
        return answer or text.strip()

    # ---- internals -----------------------------------------------------------------------------

    def _convention(self, mode: str) -> str:
        if mode not in MODES:
            raise GroundingInputError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        return self.convention if mode == "auto" else mode

    def _generate(self, messages: list[dict], pictures: list, limits: tuple[int | None, int | None],
                  max_new_tokens: int, progress) -> tuple[str, Any, int]:
        """Run the chat through the model; returns (decoded reply, image_grid_thw or None, patch size)."""
        import torch

        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise GroundingInputError(f"max_new_tokens: expected a whole number of at least 1, got {max_new_tokens!r}")
        handle = self.load()
        with handle.use() as bundle:
            processor, model = bundle.processor, bundle.model
            image_processor = processor.image_processor
            patch = int(getattr(image_processor, "patch_size", 14))
            prompt = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            kwargs: dict[str, Any] = {}
            if pictures:
                kwargs["images"] = pictures
                kwargs["images_kwargs"] = {"size": _pixel_limits(image_processor, *limits)}
            inputs = processor(text=[prompt], return_tensors="pt", **kwargs)
            grid = inputs.get("image_grid_thw")
            device = next(model.parameters()).device
            inputs = inputs.to(device)
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            prompt_length = inputs["input_ids"].shape[1]
            config = copy.deepcopy(model.generation_config)
            # Greedy. The sampling knobs go back to transformers' neutral defaults (None would be
            # refilled from the checkpoint's generation_config and warned about as unused).
            config.do_sample, config.temperature, config.top_p, config.top_k = False, 1.0, 1.0, 50
            config.max_new_tokens = max_new_tokens
            stopping = None
            if progress is not None:
                from transformers import StoppingCriteriaList

                stopping = StoppingCriteriaList([_ProgressCallback(progress, max_new_tokens, prompt_length)])
            with torch.inference_mode():
                if compile_decoding() and device.type == "cuda":
                    output = fast_generate(model, inputs, max_new_tokens, generation_config=config,
                                           stopping_criteria=stopping)
                else:
                    output = model.generate(**inputs, generation_config=config, stopping_criteria=stopping)
            text = processor.batch_decode(output[:, prompt_length:], skip_special_tokens=True,
                                          clean_up_tokenization_spaces=False)[0]
        log.debug("%s replied: %r", self.model_choice, text)
        return text, grid, patch


def _pixel_limits(image_processor, min_pixels: int | None, max_pixels: int | None) -> dict[str, int]:
    """The processor's ``size`` for this call: its own limits unless the caller caps them."""
    size = getattr(image_processor, "size", None) or {}
    get = size.get if isinstance(size, dict) else lambda k: getattr(size, k, None)
    own_min = get("shortest_edge") or getattr(image_processor, "min_pixels", None) or 4 * 28 * 28
    own_max = get("longest_edge") or getattr(image_processor, "max_pixels", None) or DEFAULT_MAX_PIXELS
    factor = int(getattr(image_processor, "patch_size", 14)) * int(getattr(image_processor, "merge_size", 2))
    if max_pixels is None:
        max_pixels = min(int(own_max), DEFAULT_MAX_PIXELS)
    elif isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < factor * factor:
        raise GroundingInputError(f"max_pixels: expected a whole number of at least {factor * factor} "
                                  f"(one {factor}x{factor} patch), got {max_pixels!r}")
    min_pixels = min(int(own_min), max_pixels) if min_pixels is None else min_pixels
    return {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)}


def _check_text(value, name: str, hint: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise GroundingInputError(f"{name}: empty; {hint}")
    return value.strip()


def _chat_messages(messages, image_count: int) -> list[dict]:
    """Validated copies of chat messages, with image parts added when the caller gave none."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise GroundingInputError("messages: expected a non-empty list of {'role', 'content'} dicts")
    out, slots = [], 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise GroundingInputError(f"messages[{i}]: expected {{'role': 'system'|'user'|'assistant', 'content': ..}}")
        content = message.get("content")
        if isinstance(content, str):
            parts = [{"type": "text", "text": content}]
        elif isinstance(content, (list, tuple)) and all(isinstance(p, dict) and p.get("type") in ("text", "image")
                                                        for p in content):
            parts = [dict(p) for p in content]
        else:
            raise GroundingInputError(f"messages[{i}].content: expected a string or a list of "
                                      "{'type': 'text', 'text': ..} / {'type': 'image'} parts")
        slots += sum(p["type"] == "image" for p in parts)
        out.append({"role": message["role"], "content": parts})
    if slots == 0 and image_count:
        first_user = next((m for m in out if m["role"] == "user"), None)
        if first_user is None:
            raise GroundingInputError("messages: images were given but there is no user message to attach them to")
        first_user["content"][:0] = [{"type": "image"} for _ in range(image_count)]
    elif slots != image_count:
        raise GroundingInputError(f"images: the messages hold {slots} image part(s) but {image_count} image(s) were given")
    return out


class _ProgressCallback:
    """A stopping criterion that never stops: it reports each generated token (and lets the caller
    interrupt by raising)."""

    def __init__(self, callback: Callable[[int, int], None], total: int, prompt_length: int):
        self.callback, self.total, self.prompt_length = callback, total, prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        self.callback(int(input_ids.shape[1] - self.prompt_length), self.total)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

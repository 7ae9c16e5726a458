"""Prompt writer: an image, the mask of the region to repaint and an edit instruction -> the positive
and negative prompts an inpainting model needs.

A vision-language model sees the photo, the same photo with the mask tinted and outlined in red
(``mask_ops.overlay``), and the instruction, and answers ``{"positive": ..., "negative": ...}``.
The positive prompt describes what the region should show once the edit is done, in diffusion-prompt
style; for a removal it describes the background that belongs there (an inpainting model paints
what the prompt names, so "remove the dog" as a prompt paints a dog).

Backends:

* ``OpenAICompatibleBackend(ChatClient(...))``: any OpenAI-compatible server; structured output
  (``json_schema``, degrading to ``json_object`` or none where a server lacks it);
* ``LocalQwenBackend(GroundingEngine(...))`` (or a model name): the local Qwen2.5-VL, through
  ``GroundingEngine.chat``; no structured output, so its answer is parsed tolerantly;
* ``None``: no model. The prompts come from the instruction's own words (``fallback_prompts``).

A model that cannot answer (server down, timeout, HTTP error, garbage) never stops the edit: the
result falls back to the instruction's words, ``source="fallback"``, and ``note`` says what went
wrong (``strict=True`` raises instead). Bad settings (no API key for a remote server, a bad URL)
always raise: the user must fix them.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from .grounding_parse import split_thinking
from .imaging import mask_to_pil, rgb_to_pil, to_mask_array, to_rgb_array
from .llm_client import ChatClient, LLMConfigError, LLMError, json_schema_format
from .mask_ops import overlay

log = logging.getLogger(__name__)

# Both images are shrunk to this before the overlay is drawn, so the outline stays visible after
# the server's own downscaling; VLMs see about 1k pixels a side anyway.
VIEW_MAX_SIDE = 1024
OVERLAY_COLOR = "#ff0000"
MAX_PROMPT_CHARS = 1000  # longer "prompts" are runaway generations, not prompts

DEFAULT_NEGATIVE = ("blurry, low quality, lowres, distorted, deformed, artifacts, visible seams, "
                    "mismatched lighting, inconsistent perspective, watermark, signature")
BACKGROUND_POSITIVE = ("empty background, seamless continuation of the surrounding scene, matching texture, "
                       "lighting and perspective, photorealistic, high detail")

SYSTEM_PROMPT = """\
You write prompts for an image inpainting diffusion model (like Stable Diffusion XL inpainting).
You get two images and an edit instruction:
- image 1 is the photo;
- image 2 is the same photo with the region to repaint tinted and outlined in red. The red is only a \
marker: it is not part of the photo. The model repaints only that region and keeps the rest.

Write the prompts for the repainted region:
- "positive": what the region must show once the edit is done, written as a diffusion prompt: short \
comma-separated visual phrases, the main subject first, then its details (colour, material, texture, \
pose), then lighting, camera and style words that match the rest of the photo (for example \
"a red ceramic coffee mug, glossy glaze, soft window light, shallow depth of field, photorealistic"). \
Describe the content itself, never the change: "a tabby cat sleeping", not "replace the dog with a cat". \
Do not mention the red marker, the mask, the region or the instruction.
- For a removal (remove, erase, delete, get rid of, clean up): the positive prompt describes the \
background that should be visible where the object was, continuing what surrounds the region \
(for example "empty oak floorboards, soft daylight, photorealistic"). Never name the removed object \
in the positive prompt; put it in the negative prompt instead.
- "negative": what must not appear: anything the instruction removes or replaces, then the usual \
defects (blurry, distorted, deformed, artifacts, visible seams, mismatched lighting, watermark).

Keep "positive" under 60 words and "negative" under 30 words.
Answer with only a JSON object: {"positive": "...", "negative": "..."}"""

USER_PROMPT = ("Image 1 is the photo. Image 2 shows the region to repaint in red.\n"
               "Edit instruction: {instruction}\n"
               "Answer with the JSON object only.")

PROMPT_SCHEMA = {
    "type": "object",
    "properties": {"positive": {"type": "string"}, "negative": {"type": "string"}},
    "required": ["positive", "negative"],
    "additionalProperties": False,
}
PROMPT_RESPONSE_FORMAT = json_schema_format("inpainting_prompts", PROMPT_SCHEMA)


class PromptWriterError(ValueError):
    """Bad input to the prompt writer, or (with ``strict=True``) a model that gave no usable prompt."""


class PromptParseError(ValueError):
    """A model answer that holds no usable prompt; the message quotes it."""


@dataclass(frozen=True)
class PromptResult:
    positive: str
    negative: str
    source: str  # "llm:<model>" | "local:<model>" | "fallback"
    note: str    # what happened, in a sentence (always set on a fallback)
    raw: str = ""  # the model's answer as it came, for the trace ("" when no model answered)


class PromptBackend(Protocol):
    source: str  # "llm:<model>" or "local:<model>"

    def answer(self, messages: list[dict], images: Sequence[np.ndarray]) -> str: ...


class OpenAICompatibleBackend:
    """Prompts from any OpenAI-compatible server, asked for structured output. ``max_tokens`` leaves
    room for reasoning models, whose hidden thinking counts against it; the prompts need ~150."""

    def __init__(self, client: ChatClient, max_tokens: int = 1024):
        self.client, self.max_tokens = client, max_tokens
        self.source = f"llm:{client.model}"

    def answer(self, messages, images) -> str:
        return self.client.complete(messages, images=images, response_format=PROMPT_RESPONSE_FORMAT,
                                    max_tokens=self.max_tokens)


class LocalQwenBackend:
    """Prompts from the local Qwen2.5-VL (``GroundingEngine.chat``), parsed tolerantly."""

    def __init__(self, engine, max_new_tokens: int = 256):
        if isinstance(engine, str):
            from .grounding import GroundingEngine

            engine = GroundingEngine(engine)
        self.engine, self.max_new_tokens = engine, max_new_tokens
        self.source = f"local:{engine.model_choice}"

    def answer(self, messages, images) -> str:
        return self.engine.chat(messages, list(images), max_new_tokens=self.max_new_tokens)


def as_backend(backend) -> PromptBackend | None:
    """``None``, a backend, a ``ChatClient`` or a ``GroundingEngine`` -> a backend (or None)."""
    if backend is None or hasattr(backend, "answer"):
        return backend
    if isinstance(backend, ChatClient):
        return OpenAICompatibleBackend(backend)
    if hasattr(backend, "chat") and hasattr(backend, "model_choice"):
        return LocalQwenBackend(backend)
    raise PromptWriterError(f"backend: expected None, a ChatClient, a GroundingEngine or a prompt backend, "
                            f"got {type(backend).__name__}")


def write_prompts(image, mask, instruction: str, backend=None, *, strict: bool = False) -> PromptResult:
    """Positive and negative inpainting prompts for repainting ``mask``'s region of ``image``
    (float RGB ``[H, W, 3]``; mask ``[H, W]``, same size) as ``instruction`` asks."""
    rgb = to_rgb_array(image, "image")
    region = to_mask_array(mask, rgb.shape[:2], "mask")
    if not (region >= 0.5).any():
        raise PromptWriterError("mask: empty; the prompt writer needs the region to repaint "
                                "(connect a mask from the segment or mask tools)")
    if not isinstance(instruction, str) or not instruction.strip():
        raise PromptWriterError("instruction: empty; say what the region should become, for example "
                                "'replace the dog with a cat' or 'remove the bottle'")
    instruction = " ".join(instruction.split())
    backend = as_backend(backend)
    if backend is None:
        return fallback_prompts(instruction, "no prompt model selected")

    photo, marked = prompt_images(rgb, region)
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                     {"type": "text", "text": USER_PROMPT.format(instruction=instruction)}]},
    ]
    raw = ""
    try:
        raw = backend.answer(messages, [photo, marked])
        positive, negative = parse_prompt_reply(raw)
    except LLMConfigError:
        raise
    except (LLMError, PromptParseError) as exc:
        if strict:
            raise PromptWriterError(f"{backend.source}: {exc}") from None
        log.warning("prompt writer: %s failed (%s); using the instruction's words", backend.source, exc)
        result = fallback_prompts(instruction, f"{backend.source} gave no usable prompt: {exc}")
        return PromptResult(result.positive, result.negative, result.source, result.note, raw)
    note = f"prompts written by {backend.source}"
    log.info("prompt writer (%s): %r / %r", backend.source, positive, negative)
    return PromptResult(positive, negative or DEFAULT_NEGATIVE, backend.source,
                        note if negative else note + "; it gave no negative prompt, so the default one is used", raw)


def prompt_images(rgb: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the photo, the photo with the region tinted and outlined in red), longer side at most
    ``VIEW_MAX_SIDE``. The outline is about 1/200 of the image side so it survives downscaling."""
    height, width = region.shape
    scale = VIEW_MAX_SIDE / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = np.asarray(rgb_to_pil(rgb).resize(size, Image.LANCZOS), dtype=np.float32) / 255.0
        region = np.asarray(mask_to_pil(region).resize(size, Image.BILINEAR), dtype=np.float32) / 255.0
    outline = max(2, round(max(region.shape) / 200))
    return rgb, overlay(rgb, region, color=OVERLAY_COLOR, opacity=0.45, outline=outline)


# ---- reading the answer ------------------------------------------------------------------------

_POSITIVE_KEYS = ("positive", "positive_prompt", "prompt")
_NEGATIVE_KEYS = ("negative", "negative_prompt")


def parse_prompt_reply(text: str) -> tuple[str, str]:
    """``(positive, negative)`` from a model's answer: a JSON object (also inside a code fence,
    after a ``<think>`` block, with single quotes), or "Positive: ... / Negative: ..." lines. The
    negative may be "" when the model gave none; a missing positive raises ``PromptParseError``."""
    if not isinstance(text, str) or not text.strip():
        raise PromptParseError("the answer was empty")
    _, body = split_thinking(text)
    for candidate in _json_objects(body):
        fields = {str(k).strip().lower(): v for k, v in candidate.items()}
        positive = next((fields[k] for k in _POSITIVE_KEYS if k in fields), None)
        if positive is None:
            continue
        negative = next((fields[k] for k in _NEGATIVE_KEYS if k in fields), "")
        return _clean(positive, "positive", text), _clean(negative, "negative", text, allow_empty=True)
    lines = re.search(r"positive(?:\s+prompt)?\s*[:=]\s*(?P<pos>.+?)\s*(?:\n\s*negative(?:\s+prompt)?\s*[:=]"
                      r"\s*(?P<neg>.+))?\s*$", body, re.I | re.S)
    if lines:
        return _clean(lines["pos"], "positive", text), _clean(lines["neg"] or "", "negative", text, allow_empty=True)
    raise PromptParseError(f"the answer holds no JSON object with a 'positive' prompt: {_snippet(text)}")


def _json_objects(text: str):
    """Every JSON object that starts at a ``{`` in ``text``, in order (prose around them ignored)."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        start = match.start()
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = _python_literal(text, start)
        if isinstance(value, dict):
            yield value


def _python_literal(text: str, start: int):
    """A single-quoted / trailing-comma object read as a Python literal (constants only, no code)."""
    end = text.find("}", start)
    while end != -1:
        try:
            return ast.literal_eval(text[start:end + 1])
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            end = text.find("}", end + 1)
    return None


def _clean(value, name: str, answer: str, allow_empty: bool = False) -> str:
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = ", ".join(value)
    if not isinstance(value, str):
        raise PromptParseError(f"'{name}' is not text ({type(value).__name__}): {_snippet(answer)}")
    cleaned = " ".join(value.split()).strip(" \"'`")
    if not cleaned and allow_empty:
        return ""
    if not re.search(r"[^\W\d_]", cleaned):
        raise PromptParseError(f"'{name}' holds no words: {_snippet(answer)}")
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise PromptParseError(f"'{name}' is {len(cleaned)} characters long (a runaway answer): {_snippet(answer)}")
    return cleaned


def _snippet(text: str, limit: int = 160) -> str:
    flat = " ".join(str(text).split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


# ---- no model: the instruction's own words ----------------------------------------------------------

_LEAD = r"^\s*(?:please\s+|can you\s+|could you\s+)?"
# Not "clean up" / "clear": "clean up the desk" removes clutter, not the desk.
_REMOVE = re.compile(_LEAD + r"(?:remove|erase|delete|get rid of|take (?:out|away)|eliminate)\b"
                     r"\s*(?P<thing>.*?)[.!\s]*$", re.I)
_REPLACE = re.compile(_LEAD + r"(?:replace|swap|substitute)\s+(?P<old>.+?)\s+(?:with|by|for)\s+(?P<new>.+?)[.!\s]*$"
                      r"|" + _LEAD + r"(?:change|turn|transform|make)\s+(?P<old2>.+?)\s+(?:into|to)\s+"
                      r"(?P<new2>.+?)[.!\s]*$", re.I)
_ADD = re.compile(_LEAD + r"(?:add|put|place|insert|draw|paint)\s+(?P<thing>.+?)"
                  r"(?:\s+(?:on|onto|in|into|at|to|above|below|under|behind|beside|next to|in front of)\b.*)?[.!\s]*$",
                  re.I)
_ARTICLE = re.compile(r"^(?:the|a|an|this|that|these|those|all(?: the)?|his|her|their|its|my)\s+", re.I)


def fallback_prompts(instruction: str, reason: str) -> PromptResult:
    """Prompts from the instruction's wording alone: a removal gets a background prompt (with the
    removed thing in the negative), "replace X with Y" / "turn X into Y" prompts Y, "add Y on ..."
    prompts Y; anything else is used as it is. ``reason`` starts the note."""
    instruction = " ".join(instruction.split())
    removal = _REMOVE.match(instruction)
    if removal:
        thing = _ARTICLE.sub("", removal["thing"]).strip()
        negative = f"{thing}, {DEFAULT_NEGATIVE}" if thing else DEFAULT_NEGATIVE
        how = "a removal: the positive prompt asks for the background"
        return PromptResult(BACKGROUND_POSITIVE, negative, "fallback", _fallback_note(reason, how))
    replace = _REPLACE.match(instruction)
    if replace:
        old = _ARTICLE.sub("", (replace["old"] or replace["old2"]).strip())
        new = (replace["new"] or replace["new2"]).strip()
        return PromptResult(new, f"{old}, {DEFAULT_NEGATIVE}", "fallback",
                            _fallback_note(reason, f"a replacement: the positive prompt is {new!r}"))
    add = _ADD.match(instruction)
    if add:
        return PromptResult(add["thing"].strip(), DEFAULT_NEGATIVE, "fallback",
                            _fallback_note(reason, f"an addition: the positive prompt is {add['thing'].strip()!r}"))
    return PromptResult(instruction, DEFAULT_NEGATIVE, "fallback",
                        _fallback_note(reason, "used as the positive prompt as it is"))


def _fallback_note(reason: str, how: str) -> str:
    return f"{reason}; fell back to the instruction's own words ({how}) and the default negative prompt"


__all__ = ["PromptResult", "PromptWriterError", "PromptParseError", "PromptBackend", "OpenAICompatibleBackend",
           "LocalQwenBackend", "as_backend", "write_prompts", "prompt_images", "parse_prompt_reply",
           "fallback_prompts", "SYSTEM_PROMPT", "PROMPT_SCHEMA", "PROMPT_RESPONSE_FORMAT", "DEFAULT_NEGATIVE",
           "BACKGROUND_POSITIVE"]

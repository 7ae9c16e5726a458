"""Add-it object insertion on FLUX.1-dev (training-free; Tewel et al., ICLR 2025), our own implementation.

``AdditEngine(model).insert(image, target_prompt, subject, source_prompt)`` -> ``InsertResult``: the
image with the subject added where the target prompt says, the added object's mask and notes.

How a call runs (steps are indices into the ``steps``-long FLUX schedule, 0 = pure noise):

1. The prompts are encoded (CLIP pooled + T5; ``addit_loader.FluxText``); the subject word's T5
   tokens are found in the target prompt. Under ``low`` the text encoders leave the GPU afterwards.
2. The image is VAE-encoded: the source's clean latent ``x0``. With ``invert`` the source latent of
   every step from ``structure_transfer_step`` on comes from a fixed-point inversion of the flow ODE
   (source prompt, guidance 1, ``inversion_iterations`` evaluations per step); without it, ``x0`` is
   re-noised to each step's sigma with one fixed noise.
3. Structure transfer: the target starts at ``structure_transfer_step`` as the source ``x0`` re-noised
   with the target's own noise (seed), so the layout follows the image. The steps before it would be
   overwritten by this reset, so they are not run at all.
4. Each later step runs both streams in one batch: the source pinned to its (inverted) latent, the
   target free, with weighted extended attention (``addit_attention``) in the double blocks for steps
   up to step ``extend_double_until`` and in the single blocks up to ``extend_single_until`` (inclusive,
   -1 = never; the paper: 10 and 20 of 30). ``gamma``
   is given or solved at ``auto_gamma_step`` (target/source attention mass ratio 1.05, gamma in
   [1, 1.2]). The source uses guidance 1, the target ``guidance`` (FLUX.1-dev's guidance embedding).
5. At ``blend_step`` the target's x0 prediction is decoded, the subject is located from its
   attention map (Otsu; SAM-2 refinement when a SAM-2 model is installed, ``addit_blend``), and the
   target latent keeps its own values only there, the source's elsewhere. ``blend_step`` -1 skips
   the blend (the whole image may change); the mask then comes from the last step.

Any size whose sides are multiples of 16 works (the token grid is the image's /16); without an
explicit ``width``/``height`` the image is worked on at its own size when that is a multiple of 16
and at most ``max_pixels``, else scaled to fit and rounded (said in the notes) and the result is
scaled back to the input's size. ``progress(done, total)`` runs after every transformer pass of the
inversion and the denoising and may raise to interrupt.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..models import ModelNotFoundError, acquire, free, resolve
from .addit_run import AdditRun, pack, unpack
from .addit_loader import DEFAULT_MODEL, FAMILY, TEXT_FAMILY, build_core, build_text, wants_streaming
from .imaging import to_rgb_array

log = logging.getLogger(__name__)

SIZE_MULTIPLE = 16
MAX_SEED = 2**64
DEFAULT_SAM = "sam2.1-hiera-large"
SAM_MODES = ("auto", "off")
# The paper's settings for real images (Add-it README / addit_methods.py): 30 steps, guidance 3.5 for the
# target and 1 for the source, structure transfer at step 4, blending at step 18, extended attention in the
# double blocks through step 10 and in the single blocks through step 20 (inclusive), gamma solved at step 5.
DEFAULTS = {"steps": 30, "guidance": 3.5, "source_guidance": 1.0, "structure_transfer_step": 4,
            "blend_step": 18, "extend_double_until": 10, "extend_single_until": 20, "auto_gamma_step": 5,
            "inversion_iterations": 2, "max_pixels": 1024 * 1024}
_ARTICLES = ("a", "an", "the", "some")
_RUN_LOCK = threading.Lock()


class InsertInputError(ValueError):
    """Bad input to the Add-it engine; the message names the input and what to do."""


@dataclass
class InsertResult:
    image: np.ndarray                 # float32 RGB [H, W, 3] at the input's size
    mask: np.ndarray                  # float32 [H, W] 0/1: where the new object is
    notes: list[str] = field(default_factory=list)
    gamma: float = 1.0
    source_prompt: str = ""
    work_size: tuple[int, int] = (0, 0)  # (width, height) FLUX worked at


def derive_source_prompt(target_prompt: str, subject: str) -> str:
    """The target prompt without the subject (and the article before it): what the input image shows."""
    pattern = rf"\b(?:(?:{'|'.join(_ARTICLES)})\s+)?{re.escape(subject)}\b"
    text = re.sub(pattern, " ", target_prompt, count=1, flags=re.IGNORECASE)
    text = re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip(" ,;:")
    return text if len(re.findall(r"\w+", text)) >= 2 else "a photo"


def subject_span(target_prompt: str, subject: str) -> tuple[int, int] | None:
    match = re.search(rf"\b{re.escape(subject)}\b", target_prompt, flags=re.IGNORECASE)
    return None if match is None else match.span()


def work_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """The image's own size when it is FLUX-ready, else scaled to fit ``max_pixels`` and rounded to 16."""
    if width % SIZE_MULTIPLE == 0 and height % SIZE_MULTIPLE == 0 and width * height <= max_pixels:
        return width, height
    scale = min(1.0, math.sqrt(max_pixels / (width * height)))
    return (max(SIZE_MULTIPLE, int(round(width * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE),
            max(SIZE_MULTIPLE, int(round(height * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE))


class AdditEngine:
    """Add-it with one FLUX.1-dev copy (loaded lazily through the model store)."""

    def __init__(self, model: str = DEFAULT_MODEL, *, device=None, dtype=None):
        if not isinstance(model, str) or not model.strip():
            raise InsertInputError(f"model: name a FLUX.1-dev diffusers folder (for example '{DEFAULT_MODEL}')")
        self.model_choice = model.strip()
        self.device, self.dtype = device, dtype

    # ---- loading ------------------------------------------------------------------------------------
    def _handles(self):
        core = acquire(self.model_choice, FAMILY, build_core, dtype=self.dtype, device=self.device)
        from ..models.cache import module_bytes

        if core.obj.streamed != wants_streaming(module_bytes([core.obj.transformer]), core.device):
            free(FAMILY)  # the memory profile changed since it was built: rebuild it the other way
            core = acquire(self.model_choice, FAMILY, build_core, dtype=self.dtype, device=self.device)
        text = acquire(str(Path(core.resolved.path) / "text_encoder_2"), TEXT_FAMILY, build_text,
                       dtype=self.dtype, device=self.device)
        return core, text

    # ---- the call -----------------------------------------------------------------------------------
    def insert(self, image, target_prompt: str, subject: str, source_prompt: str = "", *, seed: int = 0,
               steps: int | None = None, guidance: float | None = None, extended_scale: float | None = None,
               structure_transfer_step: int | None = None, blend_step: int | None = None,
               extend_double_until: int | None = None, extend_single_until: int | None = None,
               invert: bool = True, inversion_iterations: int | None = None, width: int | None = None,
               height: int | None = None, max_pixels: int | None = None, refine: str = "auto",
               progress: Callable[[int, int], None] | None = None) -> InsertResult:
        """See the module doc. ``extended_scale`` None = automatic gamma; ``refine``: "auto" (SAM-2 when
        installed), "off", or a SAM-2 model choice."""
        rgb = to_rgb_array(image, "image")
        s = self._settings(rgb, target_prompt, subject, source_prompt, seed, steps, guidance, extended_scale,
                           structure_transfer_step, blend_step, extend_double_until, extend_single_until,
                           inversion_iterations, width, height, max_pixels, refine)
        core_handle, text_handle = self._handles()
        refiner = self._refiner(s["refine"], s["notes"])
        with _RUN_LOCK:  # one run at a time: the runs share the cached transformer's processors
            with text_handle.use() as text:
                device, dtype = text_handle.device, text_handle.dtype
                embeds, pooled = text.encode([s["source_prompt"], s["target_prompt"]], device, dtype)
                tokens = text.subject_positions(s["target_prompt"], *s["subject_span"])
            if not tokens:
                raise InsertInputError(f"subject: {s['subject']!r} lies beyond the first {text.max_sequence_length} "
                                       "text tokens of the target prompt; shorten the prompt")
            with core_handle.use() as core:
                run = AdditRun(core, s, embeds, pooled, tokens, invert, progress, device, dtype)
                try:
                    out, mask, notes = run.execute(rgb, refiner)
                finally:
                    if core.streamer is not None:
                        core.streamer.release()
        return InsertResult(out, mask, s["notes"] + notes, run.gamma, s["source_prompt"], s["size"])

    def _refiner(self, refine: str, notes: list[str]):
        """A function (rgb, box, points) -> mask or None, or None when SAM-2 refinement is off."""
        if refine == "off":
            return None
        choice = DEFAULT_SAM if refine == "auto" else refine
        try:
            from .segment import SegmentEngine

            engine = SegmentEngine(choice, device=self.device)
        except ModelNotFoundError as exc:
            if refine != "auto":
                raise
            notes.append(f"SAM-2 ({choice}) is not installed: the mask is the attention map's Otsu mask alone")
            log.info("addit: no SAM-2 refinement (%s)", exc)
            return None

        def refine_mask(rgb: np.ndarray, box, points) -> np.ndarray:
            return engine.segment(rgb, boxes=[box], points=points, per_object=False).union
        return refine_mask

    def _settings(self, rgb, target_prompt, subject, source_prompt, seed, steps, guidance, gamma, st_step,
                  blend_step, double_steps, single_steps, iterations, width, height, max_pixels, refine) -> dict:
        d = DEFAULTS
        notes: list[str] = []
        target_prompt = _text(target_prompt, "target_prompt").strip()
        subject = _text(subject, "subject").strip()
        if not target_prompt:
            raise InsertInputError("target_prompt: describe the image with the new object in it, e.g. "
                                   "'a dog sitting on the sofa'")
        if not subject:
            raise InsertInputError("subject: name the object to add, a word of the target prompt (e.g. 'dog')")
        span = subject_span(target_prompt, subject)
        if span is None:
            raise InsertInputError(f"subject: {subject!r} does not occur in the target prompt {target_prompt!r}; "
                                   "the subject must be a word of the target prompt (its attention locates the "
                                   "new object)")
        source_prompt = _text(source_prompt, "source_prompt").strip()
        if not source_prompt:
            source_prompt = derive_source_prompt(target_prompt, subject)
            notes.append(f"source prompt derived from the target prompt without the subject: {source_prompt!r}")
        if source_prompt.casefold() == target_prompt.casefold():
            raise InsertInputError("target_prompt: it equals the source prompt; the target prompt must describe "
                                   f"the image with the {subject!r} added (e.g. '{source_prompt} with a {subject}')")
        s = {"target_prompt": target_prompt, "subject": subject, "subject_span": span, "source_prompt": source_prompt,
             "notes": notes, "seed": _whole(seed, "seed", 0, MAX_SEED - 1),
             "steps": _whole(d["steps"] if steps is None else steps, "steps", 2, 200),
             "guidance": _number(d["guidance"] if guidance is None else guidance, "guidance", 0.0, 30.0),
             "source_guidance": d["source_guidance"],
             "gamma": None if gamma is None else _number(gamma, "extended_scale", 0.5, 3.0),
             "iterations": _whole(d["inversion_iterations"] if iterations is None else iterations,
                                  "inversion_iterations", 1, 10),
             "max_pixels": _whole(d["max_pixels"] if max_pixels is None else max_pixels, "max_pixels",
                                  SIZE_MULTIPLE ** 2, 4096 ** 2)}
        n = s["steps"]

        def default(key: str) -> int:
            # The paper's step numbers are for 30 steps; another step count keeps their fractions.
            return d[key] if n == d["steps"] else int(round(d[key] * n / d["steps"]))

        s["st_step"] = _whole(default("structure_transfer_step") if st_step is None else st_step,
                              "structure_transfer_step", 0, n - 1)
        s["blend_step"] = _whole(min(default("blend_step"), n - 1) if blend_step is None else blend_step,
                                 "blend_step", -1, n - 1)
        if 0 <= s["blend_step"] < s["st_step"]:
            raise InsertInputError(f"blend_step: {s['blend_step']} comes before structure_transfer_step "
                                   f"{s['st_step']}; blend at a later step (or -1 for no blending)")
        s["double_until"] = _whole(default("extend_double_until") if double_steps is None else double_steps,
                                   "extend_double_until", -1, 1000)
        s["single_until"] = _whole(default("extend_single_until") if single_steps is None else single_steps,
                                   "extend_single_until", -1, 1000)
        s["auto_step"] = min(max(default("auto_gamma_step"), s["st_step"]), n - 1)
        s["refine"] = str(refine or "auto")
        h, w = rgb.shape[:2]
        for name, value in (("width", width), ("height", height)):
            if value is not None and value != 0 and (int(value) % SIZE_MULTIPLE or int(value) < SIZE_MULTIPLE):
                raise InsertInputError(f"{name}: {value} is not a multiple of {SIZE_MULTIPLE}; FLUX works on 16x16 "
                                       f"pixel patches (try {max(SIZE_MULTIPLE, round(int(value) / 16) * 16)}), or "
                                       "leave it 0 to use the image's size")
        if width and height:
            s["size"] = (int(width), int(height))
        elif width or height:
            raise InsertInputError("width/height: give both (multiples of 16) or neither")
        else:
            s["size"] = work_size(w, h, s["max_pixels"])
        if s["size"] != (w, h):
            notes.append(f"worked at {s['size'][0]}x{s['size'][1]} (the {w}x{h} image scaled; the result is scaled "
                         "back)")
        return s


def _text(value, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InsertInputError(f"{name}: expected text, got {type(value).__name__}")
    return value


def _whole(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) and not (
            isinstance(value, float) and value.is_integer()):
        raise InsertInputError(f"{name}: expected a whole number, got {value!r}")
    if not low <= int(value) <= high:
        raise InsertInputError(f"{name}: {value} is outside {low}..{high}")
    return int(value)


def _number(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value):
        raise InsertInputError(f"{name}: expected a number, got {value!r}")
    if not low <= float(value) <= high:
        raise InsertInputError(f"{name}: {value} is outside {low:g}..{high:g}")
    return float(value)


def flux_model_choices() -> list[str]:
    """FLUX.1-dev-type folders for a combo: the known key, then diffusers folders whose transformer is a
    ``FluxTransformer2DModel`` taking plain latents (not FLUX Fill's extra channels)."""
    import json

    from ..models import available_choices
    from ..models.paths import folder_dirs

    choices = [DEFAULT_MODEL]
    for directory in folder_dirs("diffusers"):
        if not directory.is_dir():
            continue
        for folder in sorted(directory.iterdir()):
            config = folder / "transformer" / "config.json"
            if folder.name in choices or not config.is_file():
                continue
            try:
                values = json.loads(config.read_text())
            except (OSError, ValueError):
                continue
            out_channels = values.get("out_channels") or values.get("in_channels")
            if values.get("_class_name") == "FluxTransformer2DModel" and values.get("in_channels") == out_channels:
                choices.append(folder.name)
    return choices + [c for c in available_choices(FAMILY) if c not in choices]


def refine_choices() -> list[str]:
    """"auto", "off", then the installed SAM-2 models."""
    from ..models import available_choices
    from .sam2_backends import FAMILY as SAM_FAMILY

    return ["auto", "off"] + [c for c in available_choices(SAM_FAMILY) if c not in ("auto", "off")]


def resolve_model(choice: str = DEFAULT_MODEL):
    """The FLUX.1-dev files (raises the gated-weights message when they are missing)."""
    return resolve(choice, FAMILY)


__all__ = ["AdditEngine", "DEFAULTS", "InsertInputError", "InsertResult", "derive_source_prompt", "pack",
           "resolve_model", "unpack", "work_size"]

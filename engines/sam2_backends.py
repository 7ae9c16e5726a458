"""Loading SAM-2 weights and running its decoder: the two backends behind ``engines/segment.py``.

* ``TransformersSam2``: transformers ``Sam2Model`` + ``Sam2Processor`` on a ``save_pretrained``
  folder (the official ``facebook/sam2.1-hiera-*`` repositories carry one). No compiled code.
* ``MetaSam2``: the original single-file checkpoints (Meta's ``sam2.1_hiera_large.pt`` holding
  ``{"model": state_dict}``, or a ``.safetensors`` conversion such as Kijai/sam2-safetensors) built
  with the ``sam2`` pip package (``build_sam2`` + ``SAM2ImagePredictor``). The hydra config comes
  from the file name: size t/s/b+/l, version 2 or 2.1.

Both take the same call, ``predict(rgb, objects, multimask, threshold)`` -> one ``(bool mask [H, W],
score)`` per object: the image is encoded once, and objects that share a prompt shape (box or not,
number of points, multimask or not) are decoded together in one batched call. Sharing one call
across different shapes would need padding prompts, which changes SAM-2's token set; grouping keeps
every object's result identical to decoding it alone.

Each backend keeps the last image's embedding: asking again about the same pixels (another prompt,
or ComfyUI re-running the node because only a refinement setting changed) skips the image encoder,
which is nearly all of SAM-2's cost. The cache key is exact (``LastImage``); the transformers backend
decodes with the kept embedding while the full pixel comparison runs beside it in a worker thread,
so checking the key adds next to nothing to a repeated call.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .call_graphs import CallGraphs

log = logging.getLogger(__name__)

FAMILY = "sam2"
FOLDER = "sam2"
SAM2_SIZES = {"tiny": 0.16, "small": 0.19, "base-plus": 0.33, "large": 0.9}  # download size, GB


class Sam2LoadError(ValueError):
    """SAM-2 weights that cannot be loaded; the message says what to install or rename."""


def register_sam2_specs() -> None:
    """Register the official transformers-format SAM-2.1 repositories with the model store."""
    from ..models import ModelSpec, register_spec

    for size, gigabytes in SAM2_SIZES.items():
        register_spec(ModelSpec(
            key=f"sam2.1-hiera-{size}", family=FAMILY, folder=FOLDER, repo_id=f"facebook/sam2.1-hiera-{size}",
            required_files=("config.json", "*.safetensors", "*processor_config.json"),
            # The repos also hold Meta's .pt checkpoint; the transformers loader needs only these.
            allow_patterns=("*.json", "*.safetensors"),
            licence="Apache-2.0", size_gb=gigabytes,
            notes="transformers Sam2Model weights (Meta's sam2.1_hiera_*.pt files also work with `pip install sam2`)",
        ))


def _groups(objects, multimask: list[bool]) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for index, (obj, multi) in enumerate(zip(objects, multimask)):
        groups.setdefault((obj.box is not None, len(obj.points), multi), []).append(index)
    return groups


class LastImage:
    """The embedding cache's key: a copy of the last image's pixels and where its embedding lives.

    Exact: one changed pixel is another image. Comparing beats hashing here (for a 1024x1024 float
    image on one core: ``np.array_equal`` 1.2 ms, crc32 8 ms, sha1 16 ms, blake2b 35 ms), so the key is
    a copy and the check a comparison, in two steps: a grid of pixels (``_pixel_grid``) turns a
    different image away at once (``may_match``), and only an image that passes is compared in full.
    """

    def __init__(self):
        self.pixels: np.ndarray | None = None
        self.where: tuple = ()

    def may_match(self, rgb: np.ndarray, *where) -> bool:
        """False when ``rgb`` is certainly not the last image (size, place or sampled pixels differ)."""
        last = self.pixels
        return (last is not None and self.where == where and last.shape == rgb.shape and last.dtype == rgb.dtype
                and np.array_equal(_pixel_grid(last), _pixel_grid(rgb)))

    def matches(self, rgb: np.ndarray, *where) -> bool:
        return self.may_match(rgb, *where) and np.array_equal(self.pixels, rgb)

    def check(self, rgb: np.ndarray, *where) -> Future | None:
        """None when ``rgb`` is certainly another image; otherwise the full comparison as a Future
        (``result()`` gives the answer): for a large image it runs in worker threads, in parts
        (numpy compares without holding the GIL), so the caller can work meanwhile. ``rgb`` must
        not change until it is done."""
        if not self.may_match(rgb, *where):
            return None
        if rgb.nbytes >= BACKGROUND_COMPARE_BYTES:
            return _compare_in_background(self.pixels, rgb)
        done: Future = Future()
        done.set_result(np.array_equal(self.pixels, rgb))  # small: quicker than a thread hand-off
        return done

    def remember(self, rgb: np.ndarray, *where) -> None:
        self.pixels, self.where = np.array(rgb, copy=True), where

    def forget(self) -> None:
        self.pixels, self.where = None, ()


def _pixel_grid(rgb: np.ndarray) -> np.ndarray:
    """An even grid of 64 to 127 pixels a side (every pixel of a smaller image); a view, whatever
    the memory layout."""
    return rgb[:: max(1, rgb.shape[0] // 64), :: max(1, rgb.shape[1] // 64)]


# Images from this size on (a 600x600 float image) are compared in worker threads.
BACKGROUND_COMPARE_BYTES = 1 << 22
# A full comparison reads both images (24 MiB at 1024x1024 float): one core takes 1.5-3 ms, which
# is longer than SAM-2's replayed decoder; split in parts, the cores of the machine share it.
COMPARE_WORKERS = max(1, min(4, (os.cpu_count() or 1) - 1))
_COMPARER: ThreadPoolExecutor | None = None
_COMPARER_LOCK = threading.Lock()


def _comparer() -> ThreadPoolExecutor:
    global _COMPARER
    with _COMPARER_LOCK:
        if _COMPARER is None:
            _COMPARER = ThreadPoolExecutor(max_workers=COMPARE_WORKERS, thread_name_prefix="sam2-cache-check")
        return _COMPARER


class _AllEqual:
    """The Future-like result of a comparison split in parts: ``result()`` is True when every
    part's pixels are equal."""

    def __init__(self, parts: list[Future]):
        self.parts = parts

    def result(self) -> bool:
        return all(part.result() for part in self.parts)

    def done(self) -> bool:
        return all(part.done() for part in self.parts)


def _compare_in_background(last: np.ndarray, rgb: np.ndarray) -> _AllEqual:
    """``np.array_equal(last, rgb)`` in worker threads (numpy compares without holding the GIL), in
    up to ``COMPARE_WORKERS`` parts of whole rows; the caller may work meanwhile."""
    parts = COMPARE_WORKERS if rgb.shape[0] >= COMPARE_WORKERS else 1
    pool = _comparer()
    if last.shape != rgb.shape or parts == 1:
        return _AllEqual([pool.submit(np.array_equal, last, rgb)])
    rows = [round(i * rgb.shape[0] / parts) for i in range(parts + 1)]
    return _AllEqual([pool.submit(np.array_equal, last[a:b], rgb[a:b]) for a, b in zip(rows, rows[1:])])


def _best(scores: torch.Tensor) -> torch.Tensor:
    """Index of the candidate with the highest predicted IoU, per object ([N, K] -> [N])."""
    return scores.float().argmax(dim=-1)


# Full-size float logits upscaled at once while post-processing (128 MiB): a few objects on a large
# image go one at a time, many objects on a small one in one call.
MASK_BATCH_PIXELS = 1 << 25


# ---- transformers ---------------------------------------------------------------------------------

class TransformersSam2(torch.nn.Module):
    """``Sam2Model`` + ``Sam2Processor``; an ``nn.Module`` so the store can move it between devices.

    Every call runs the same steps as the bare transformers sequence (the processor on the CPU, the
    model, ``post_process_masks`` on the model's device) and adds no host copy of the image besides
    the cache key: results are bit-identical to it. Device work is queued first and read back once
    (``_decode`` then ``_collect``), so the host never waits on the GPU in between.

    On CUDA the image encoder and each prompt shape's mask-decoder call are replayed as CUDA graphs
    (``engines/call_graphs.py``; ``AGENTIC_EDIT_CUDA_GRAPHS=0`` turns them off): the same kernels
    without their host cost, which is most of SAM-2's time on a fast GPU. The encoder's graph output
    *is* the cached embedding; a new image overwrites it only after the cache was cleared.
    """

    def __init__(self, model, processor):
        super().__init__()
        self.model = model
        self.processor = processor
        self._lock = threading.Lock()
        self._last = LastImage()
        self._cached: tuple = ()  # (embeddings, original sizes) of self._last
        self.graphs = CallGraphs(lambda: [*self.model.parameters(), *self.model.buffers()], name="SAM-2")

    def clear_embedding_cache(self) -> None:
        self._last.forget()
        self._cached = ()

    def release_device_caches(self) -> None:
        """Give back what only lives on the compute device (the store calls this before offloading):
        the recorded graphs' memory and the kept embedding."""
        with self._lock:
            self.clear_embedding_cache()
            self.graphs.clear()

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, objects, multimask: list[bool], threshold: float, check=None):
        """``check``: None when ``rgb`` is checked float RGB 0..1; else a function giving the checked
        pixels (or raising), run only when the image must be encoded: pixels equal to the cached
        image's, bit for bit, were checked when they were cached."""
        with self._lock:
            return self._predict(rgb, objects, multimask, threshold, check)

    def _predict(self, rgb: np.ndarray, objects, multimask: list[bool], threshold: float, check=None):
        param = next(self.model.parameters())
        device, dtype = param.device, param.dtype
        where = (str(device), str(dtype))
        if device.type == "cuda":
            self.graphs.check_weights()
        same = self._last.check(rgb, *where) if self._cached else None
        if same is not None:
            # The image passed the quick check, so it is almost surely the last one: decode with the
            # kept embedding now, while the full comparison runs beside the decoder; wrong guesses
            # (same sampled pixels, another image) are thrown away before anything is read back.
            queued = self._decode(self._cached, objects, multimask, threshold)
            if same.result():
                return self._collect(queued, len(objects))
            log.debug("the image matches the cached one on a pixel grid only: encoding it")
        if check is not None:
            rgb = check()
        self.clear_embedding_cache()  # until the new embedding and its key are both in place
        # Float 0..1 pixels go in as they are (no 8-bit rounding): rescaling is off. The image may be
        # a read-only view of the caller's frame (imaging.to_rgb_array); the processor only reads it.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            encoded = self.processor(images=rgb, do_rescale=False, return_tensors="pt")
        pixels = encoded["pixel_values"].to(device, dtype)
        embeddings = self.graphs("encode", lambda p: tuple(self.model.get_image_embeddings(p)), pixels)
        self._last.remember(rgb, *where)  # the host copy overlaps the encoder running on a GPU
        self._cached = (list(embeddings), encoded["original_sizes"])
        return self._collect(self._decode(self._cached, objects, multimask, threshold), len(objects))

    def _mask_decoder(self, multi: bool, levels: int, names: tuple[str, ...]):
        """The bare ``model(image_embeddings=..., <prompt tensors>)`` call as ``fn(*embeddings,
        *prompt tensors) -> (pred_masks, iou_scores)``: what the graph records."""
        def decode(*tensors):
            out = self.model(image_embeddings=list(tensors[:levels]), multimask_output=multi,
                             **dict(zip(names, tensors[levels:])))
            return out.pred_masks, out.iou_scores
        return decode

    def _decode(self, cached: tuple, objects, multimask: list[bool], threshold: float) -> list:
        """Queue the decoder and the upscaling for every prompt group; nothing is read back yet.
        Returns ``(object indices, bool masks [N, H, W], scores [N])`` per chunk, on the device."""
        embeddings, sizes = cached
        height, width = (int(v) for v in sizes[0].tolist())
        per_call = max(1, MASK_BATCH_PIXELS // (height * width))
        device = next(self.model.parameters()).device
        queued = []
        for (has_box, n_points, multi), indices in _groups(objects, multimask).items():
            group = [objects[i] for i in indices]
            prompt = {}
            if has_box:
                prompt["input_boxes"] = [[[o.box.x1, o.box.y1, o.box.x2, o.box.y2] for o in group]]
            if n_points:
                prompt["input_points"] = [[[[p.x, p.y] for p in o.points] for o in group]]
                prompt["input_labels"] = [[[int(p.positive) for p in o.points] for o in group]]
            tensors = self.processor(original_sizes=sizes, return_tensors="pt", **prompt)
            names = tuple(k for k in ("input_boxes", "input_points", "input_labels") if k in tensors)
            decode = self._mask_decoder(multi, len(embeddings), names)
            logits, scores = self.graphs(("decode", multi, names), decode, *embeddings,
                                         *(tensors[k].to(device) for k in names))
            logits, scores = logits[0], scores[0]                          # [N, K, 256, 256], [N, K]
            if logits.shape[1] == 1:
                chosen, chosen_scores = logits[:, 0], scores[:, 0]
            else:
                best = _best(scores)
                rows = torch.arange(len(group), device=best.device)
                chosen, chosen_scores = logits[rows, best], scores[rows, best]
            # A replayed graph's outputs are overwritten by its next replay: keep a copy of the scores
            # (the masks are upscaled into new tensors below, queued before any later replay).
            chosen, chosen_scores = chosen.float(), chosen_scores.float().clone()   # [N, 256, 256], [N]
            for start in range(0, len(group), per_call):
                # Upscale to the image's own size (SAM-2 resizes without padding: nothing to crop).
                # Objects are upscaled together, in chunks so a large image never holds many
                # full-size float masks at once; each object's result is the one it gets alone.
                part = slice(start, start + per_call)
                masks = self.processor.post_process_masks([chosen[part, None]], sizes,
                                                          mask_threshold=threshold, binarize=True)[0]
                queued.append((indices[part], masks[:, 0], chosen_scores[part]))
        return queued

    @staticmethod
    def _collect(queued: list, count: int) -> list:
        """Read the queued masks and scores back: ``(float32 mask [H, W] of 0/1, score)`` per object.
        The scores come first (tiny, and they wait for the same kernels), then each chunk's masks as
        bytes, widened to float32 on the host: a quarter of the bytes over the bus."""
        results: list = [None] * count
        for indices, masks, scores in queued:
            scores = scores.cpu().tolist()
            masks = masks.cpu().numpy()
            for slot, index in enumerate(indices):
                results[index] = (masks[slot].astype(np.float32), scores[slot])
        return results


def load_transformers_sam2(path: Path, device, dtype) -> TransformersSam2:
    from transformers import Sam2Model, Sam2Processor

    model = Sam2Model.from_pretrained(str(path), dtype=dtype or torch.float32).eval()
    processor = Sam2Processor.from_pretrained(str(path))
    backend = TransformersSam2(model, processor)
    return backend.to(device) if device is not None else backend


# ---- the original sam2 package -------------------------------------------------------------------

_SIZE_WORDS = {"tiny": "t", "t": "t", "small": "s", "s": "s", "large": "l", "l": "l",
               "base": "b+", "b+": "b+", "bplus": "b+", "baseplus": "b+"}


def meta_config_for(file_name: str) -> str:
    """The ``sam2`` package config for a checkpoint file name, e.g. ``sam2.1_hiera_large.pt`` ->
    ``configs/sam2.1/sam2.1_hiera_l.yaml``; ``sam2_hiera_base_plus.safetensors`` -> the SAM 2.0 b+."""
    stem = Path(file_name).name.lower()
    for suffix in (".safetensors", ".pt", ".pth", ".ckpt", ".bin"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    version = "2.1" if re.search(r"sam2(\.|_|-)?1(?!\d)", stem) else "2"
    tokens = re.split(r"[_\-. ]+", stem.replace("base_plus", "baseplus").replace("base-plus", "baseplus"))
    sizes = {_SIZE_WORDS[t] for t in tokens if t in _SIZE_WORDS}
    if len(sizes) != 1:
        raise Sam2LoadError(
            f"{file_name}: cannot tell the SAM-2 size from the file name; name it like Meta's files "
            "(sam2.1_hiera_tiny / small / base_plus / large, .pt or .safetensors)")
    size = sizes.pop()
    return f"configs/sam2.1/sam2.1_hiera_{size}.yaml" if version == "2.1" else f"configs/sam2/sam2_hiera_{size}.yaml"


def _meta_state_dict(path: Path) -> dict:
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return state.get("model", state) if isinstance(state, dict) else state


def _state_dict_problems(expected: dict, given: dict) -> str:
    """A one-line summary of how ``given`` differs from the weights ``expected`` ("" when it fits)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    reshaped = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
    parts = [f"{len(keys)} {what} (e.g. {keys[0]})"
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("differently shaped", reshaped))
             if keys]
    return ", ".join(parts)


class MetaSam2(torch.nn.Module):
    """``sam2.SAM2ImagePredictor`` around a ``SAM2Base`` (the module the store moves)."""

    def __init__(self, sam_model, autocast_dtype=None):
        super().__init__()
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.model = sam_model
        self.predictor = SAM2ImagePredictor(sam_model)
        self.autocast_dtype = autocast_dtype
        self._lock = threading.Lock()  # the predictor keeps the image embedding as state
        self._last = LastImage()

    def clear_embedding_cache(self) -> None:
        self._last.forget()
        self.predictor.reset_predictor()

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, objects, multimask: list[bool], threshold: float, check=None):
        if check is not None:
            rgb = check()
        device = next(self.model.parameters()).device
        use_autocast = self.autocast_dtype is not None and device.type == "cuda"
        with self._lock, torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32, enabled=use_autocast):
            if not (self.predictor._is_image_set and self._last.matches(rgb, str(device))):
                # ToTensor leaves float arrays unscaled, so 0..1 float pixels are what the model expects.
                self.predictor.set_image(np.ascontiguousarray(rgb, dtype=np.float32))
                self._last.remember(rgb, str(device))
            results: list = [None] * len(objects)
            for (has_box, n_points, multi), indices in _groups(objects, multimask).items():
                group = [objects[i] for i in indices]
                coords = labels = boxes = None
                if n_points:
                    coords = np.array([[[p.x, p.y] for p in o.points] for o in group], dtype=np.float32)
                    labels = np.array([[int(p.positive) for p in o.points] for o in group], dtype=np.int32)
                if has_box:
                    boxes = np.array([[o.box.x1, o.box.y1, o.box.x2, o.box.y2] for o in group], dtype=np.float32)
                logits, scores, _ = self.predictor.predict(point_coords=coords, point_labels=labels, box=boxes,
                                                           multimask_output=multi, return_logits=True)
                if logits.ndim == 3:  # one object: the predictor drops the object axis
                    logits, scores = logits[None], scores[None]
                best = scores.argmax(axis=-1)
                for slot, index in enumerate(indices):
                    results[index] = (logits[slot, best[slot]] > threshold, float(scores[slot, best[slot]]))
        return results


def load_meta_sam2(path: Path, device, dtype, config: str | None = None,
                   hydra_overrides: tuple[str, ...] = ()) -> MetaSam2:
    """Build a Meta-format checkpoint with the ``sam2`` package (config from the file name unless given)."""
    try:
        from sam2.build_sam import build_sam2
    except ImportError:
        raise Sam2LoadError(
            f"{path.name} is an original SAM-2 checkpoint, which needs the `sam2` package: run "
            "`pip install sam2` (set SAM2_BUILD_CUDA=0 to skip its optional CUDA extension), or choose "
            "the transformers weights instead (sam2.1-hiera-large etc., downloaded from facebook/sam2.1-hiera-*)"
        ) from None
    config = config or meta_config_for(path.name)
    model = build_sam2(config, ckpt_path=None, device="cpu", hydra_overrides_extra=list(hydra_overrides))
    try:
        state = _meta_state_dict(path)
    except Exception as exc:  # a truncated or foreign file: say which, not a pickle traceback
        raise Sam2LoadError(f"{path}: not a readable SAM-2 checkpoint ({type(exc).__name__}: {exc})") from None
    problems = _state_dict_problems(model.state_dict(), state)
    if problems:
        raise Sam2LoadError(
            f"{path.name} does not match {config} (chosen from the file name): {problems}; rename the file "
            "after its real size and version (sam2_hiera_* or sam2.1_hiera_*, tiny / small / base_plus / large)")
    model.load_state_dict(state, strict=True)
    autocast = dtype if dtype in (torch.float16, torch.bfloat16) else None
    backend = MetaSam2(model.eval(), autocast_dtype=autocast)
    return backend.to(device) if device is not None else backend


# ---- the store's build function ------------------------------------------------------------------

def build_backend(resolved, device, dtype):
    """``models.acquire`` build function: a transformers folder or a Meta-format file -> backend."""
    path = Path(resolved.path)
    if path.is_file():
        return load_meta_sam2(path, device, dtype)
    if (path / "config.json").is_file():
        return load_transformers_sam2(path, device, dtype)
    singles = sorted(p for p in path.glob("sam2*") if p.suffix.lower() in (".pt", ".pth", ".safetensors"))
    if len(singles) == 1:
        return load_meta_sam2(singles[0], device, dtype)
    raise Sam2LoadError(
        f"{path}: not a SAM-2 model; expected a transformers folder (config.json, model.safetensors, "
        "processor_config.json) or one original checkpoint file (sam2.1_hiera_large.pt)")

"""The SAM-2 engine on tiny random-weight checkpoints (tests/tiny_models/sam2.py).

Random weights give arbitrary masks, so these tests check what does not depend on the weights:
loading through the model store, shapes at the image's own (non-square, non-/64) size, value
ranges, the prompting rules, that batched decoding equals decoding each object alone, agreement
with a plain transformers call, refinement, determinism and the errors for bad input.
"""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch

from agentic_edit.engines import mask_ops
from agentic_edit.engines.geometry import Box, Point
from agentic_edit.engines import sam2_backends
from agentic_edit.engines.imaging import to_rgb_array
from agentic_edit.engines.sam2_backends import (LastImage, Sam2LoadError, TransformersSam2, load_meta_sam2,
                                                meta_config_for)
from agentic_edit.engines.segment import (DEFAULT_MODEL, Refinement, SegmentEngine, SegmentInputError, _rgb_pixels,
                                          SegmentObject, prepare_objects, segment, segment_with, wants_multimask)
from agentic_edit.models import ModelNotFoundError, available_choices, free, resolve
from tests.tiny_models import ensure_models

HEIGHT, WIDTH = 173, 250  # neither square nor a multiple of 64


@pytest.fixture(scope="module")
def models_root(tmp_path_factory):
    """A models root holding the tiny checkpoint as ``sam2/sam2.1-hiera-large``, set as the store's root."""
    root = tmp_path_factory.mktemp("models")
    ensure_models(root, only=[DEFAULT_MODEL])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTIC_EDIT_MODELS_DIR", str(root))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield root
    free("sam2")


@pytest.fixture(scope="module")
def engine(models_root) -> SegmentEngine:
    return SegmentEngine(DEFAULT_MODEL, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] / np.array([HEIGHT, WIDTH])[:, None, None]
    base = np.stack([xx, yy, 0.5 * (xx + yy)], axis=-1)
    return np.clip(base + 0.1 * rng.standard_normal((HEIGHT, WIDTH, 3)), 0, 1).astype(np.float32)


BOX_A = Box(10, 10, 100, 80)
BOX_B = Box(50, 60, 200, 150)
BOX_C = Box(120, 15, 245, 95)


def assert_mask(mask: np.ndarray, binary: bool = True) -> None:
    assert isinstance(mask, np.ndarray)
    assert mask.shape == (HEIGHT, WIDTH)
    assert mask.dtype == np.float32
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    if binary:
        assert set(np.unique(mask)) <= {0.0, 1.0}


# ---- loading -------------------------------------------------------------------------------------

def test_loads_through_the_store_from_the_models_folder(engine, models_root):
    resolved = resolve(DEFAULT_MODEL, "sam2")
    assert resolved.path == models_root / "sam2" / DEFAULT_MODEL
    assert resolved.source == "folder"
    assert DEFAULT_MODEL in available_choices("sam2")
    with engine._handle.use() as backend:
        assert isinstance(backend, TransformersSam2)
        assert next(backend.parameters()).device.type == "cpu"


def test_loads_from_a_local_path_with_the_same_result(engine, models_root, image, tmp_path):
    elsewhere = tmp_path / "my-sam2"
    shutil.copytree(models_root / "sam2" / DEFAULT_MODEL, elsewhere)
    assert resolve(str(elsewhere), "sam2").source == "path"
    by_path = SegmentEngine(str(elsewhere), device="cpu", dtype=torch.float32)
    assert by_path._handle is not engine._handle
    a = engine.segment(image, boxes=[BOX_A])
    b = by_path.segment(image, boxes=[BOX_A])
    np.testing.assert_array_equal(a.masks[0], b.masks[0])
    assert a.scores == b.scores


def test_a_missing_model_names_its_files_and_folder(models_root):
    with pytest.raises(ModelNotFoundError) as info:
        SegmentEngine("sam2.1-hiera-small", device="cpu")
    message = str(info.value)
    assert "facebook/sam2.1-hiera-small" in message
    assert "config.json" in message


# ---- masks ---------------------------------------------------------------------------------------

def test_box_gives_one_binary_mask_at_the_image_size(engine, image):
    result = engine.segment(image, boxes=[BOX_A])
    assert len(result.masks) == len(result.scores) == len(result.objects) == 1
    assert_mask(result.masks[0])
    assert 0.0 < result.masks[0].mean() < 1.0  # a real decoder output, neither empty nor full
    assert isinstance(result.scores[0], float) and np.isfinite(result.scores[0])
    np.testing.assert_array_equal(result.union, result.masks[0])
    # the one-call form goes through the same cached model
    one_call = segment(image, boxes=[BOX_A], model=DEFAULT_MODEL, device="cpu", dtype=torch.float32)
    np.testing.assert_array_equal(one_call.masks[0], result.masks[0])


def test_a_higher_mask_threshold_gives_a_smaller_mask(engine, image):
    loose = engine.segment(image, boxes=[BOX_B], mask_threshold=-0.05).masks[0]
    default = engine.segment(image, boxes=[BOX_B]).masks[0]
    strict = engine.segment(image, boxes=[BOX_B], mask_threshold=0.05).masks[0]
    assert (loose >= default).all() and (default >= strict).all()
    assert loose.sum() > strict.sum()


def test_engine_agrees_with_a_plain_transformers_call(engine, models_root, image):
    """Same checkpoint, same prompts through Sam2Processor/Sam2Model directly: the same masks."""
    from transformers import Sam2Model, Sam2Processor

    path = models_root / "sam2" / DEFAULT_MODEL
    model, processor = Sam2Model.from_pretrained(path).eval(), Sam2Processor.from_pretrained(path)

    inputs = processor(images=image, input_boxes=[[[BOX_A.x1, BOX_A.y1, BOX_A.x2, BOX_A.y2]]],
                       do_rescale=False, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, multimask_output=False)
    expected = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0, 0].numpy()
    result = engine.segment(image, boxes=[BOX_A])
    np.testing.assert_array_equal(result.masks[0], expected.astype(np.float32))
    assert result.scores[0] == pytest.approx(float(out.iou_scores[0, 0, 0]))

    # A lone point: three candidates, the one with the highest predicted IoU is kept.
    embeddings = out.image_embeddings  # the same image: reuse its embedding, as the engine does
    inputs = processor(original_sizes=inputs["original_sizes"], input_points=[[[[60.0, 40.0]]]],
                       input_labels=[[[1]]], return_tensors="pt")
    with torch.no_grad():
        out = model(image_embeddings=embeddings, input_points=inputs["input_points"],
                    input_labels=inputs["input_labels"], multimask_output=True)
    best = int(out.iou_scores[0, 0].argmax())
    expected = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0, best].numpy()
    result = engine.segment(image, points=[Point(60, 40)])
    np.testing.assert_array_equal(result.masks[0], expected.astype(np.float32))
    assert result.scores[0] == pytest.approx(float(out.iou_scores[0, 0].max()))


def test_box_and_point_is_one_object_and_differs_from_the_box_alone(engine, image):
    with_point = engine.segment(image, boxes=[BOX_A], points=[Point(30, 30), Point(90, 70, positive=False)])
    assert len(with_point.masks) == 1
    assert with_point.objects[0].points == (Point(30, 30), Point(90, 70, positive=False))
    assert_mask(with_point.masks[0])
    box_only = engine.segment(image, boxes=[BOX_A])
    assert not np.array_equal(with_point.masks[0], box_only.masks[0])


def test_points_without_boxes_make_one_object(engine, image):
    result = engine.segment(image, points=[{"x": 40, "y": 50}, {"x": 200, "y": 120}, Point(120, 90, False)])
    assert len(result.masks) == 1
    assert result.objects[0].box is None and len(result.objects[0].points) == 3
    assert_mask(result.masks[0])


def test_several_objects_one_mask_each_and_their_union(engine, image):
    result = engine.segment(image, boxes=[BOX_A, BOX_B, BOX_C])
    assert len(result.masks) == len(result.scores) == 3
    for mask in result.masks:
        assert_mask(mask)
    expected_union = np.logical_or.reduce([m > 0.5 for m in result.masks]).astype(np.float32)
    np.testing.assert_array_equal(result.union, expected_union)
    assert_mask(result.union)

    merged = engine.segment(image, boxes=[BOX_A, BOX_B, BOX_C], per_object=False)
    assert len(merged.masks) == len(merged.scores) == 1
    np.testing.assert_array_equal(merged.masks[0], result.union)
    np.testing.assert_array_equal(merged.union, result.union)
    assert merged.scores[0] == pytest.approx(float(np.mean(result.scores)))


def test_decoding_objects_together_equals_decoding_each_alone(engine, image):
    objects = [SegmentObject(box=BOX_A), SegmentObject(box=BOX_B, points=(Point(100, 100),)),
               SegmentObject(points=(Point(30, 140),)), SegmentObject(box=BOX_C),
               SegmentObject(points=(Point(200, 40), Point(210, 60)))]
    together = engine.segment(image, objects=objects)
    for index, obj in enumerate(objects):
        alone = engine.segment(image, objects=[obj])
        np.testing.assert_array_equal(together.masks[index], alone.masks[0])
        assert together.scores[index] == pytest.approx(alone.scores[0], abs=1e-6)


def test_results_are_deterministic(engine, image):
    a = engine.segment(image, boxes=[BOX_A, BOX_B], points=[Point(60, 50)])
    with engine._handle.use() as backend:
        backend.clear_embedding_cache()  # encode the image again, from scratch
    b = engine.segment(image, boxes=[BOX_A, BOX_B], points=[Point(60, 50)])
    for x, y in zip(a.masks, b.masks):
        np.testing.assert_array_equal(x, y)
    assert a.scores == b.scores


def test_the_image_is_encoded_once_for_repeated_prompts(engine, image, monkeypatch):
    with engine._handle.use() as backend:
        backend.clear_embedding_cache()
        calls = []
        encode = backend.model.get_image_embeddings
        monkeypatch.setattr(backend.model, "get_image_embeddings", lambda *a, **k: calls.append(1) or encode(*a, **k))
    engine.segment(image, boxes=[BOX_A])
    engine.segment(image, boxes=[BOX_B], refine=Refinement(grow_pixels=2))
    assert len(calls) == 1
    other = image.copy()
    other[0, 0, 0] = 1.0 - other[0, 0, 0]  # one changed pixel is another image
    engine.segment(other, boxes=[BOX_A])
    assert len(calls) == 2


def _count_encodes(engine, monkeypatch) -> list:
    """Empty the engine's embedding cache and count image encodings from here on."""
    calls = []
    with engine._handle.use() as backend:
        backend.clear_embedding_cache()
        encode = backend.model.get_image_embeddings
        monkeypatch.setattr(backend.model, "get_image_embeddings", lambda *a, **k: calls.append(1) or encode(*a, **k))
    return calls


def test_the_cache_key_is_every_pixel_not_a_sample(engine, image, monkeypatch):
    """The quick check compares a grid of pixels (every 2nd row and 3rd column here); a pixel between
    grid points, or a change made in place to the very array segmented before, is another image."""
    calls = _count_encodes(engine, monkeypatch)
    pixels = image.copy()
    engine.segment(pixels, boxes=[BOX_A])
    engine.segment(pixels.copy(), boxes=[BOX_B])  # the same pixels in another array: the cache serves
    assert len(calls) == 1
    # One value one step (ulp) up, off the grid, in place: the same array object, nearly the same image.
    pixels[1, 1, 0] = np.nextafter(pixels[1, 1, 0], np.float32(2))
    engine.segment(pixels, boxes=[BOX_A])
    assert len(calls) == 2


def test_last_image_turns_others_away_on_the_grid_and_compares_the_rest_in_full():
    rng = np.random.default_rng(0)
    where = ("cpu", "torch.float32")
    for height, width in ((300, 400), (1024, 1100)):  # compared in the caller's thread, then in the worker
        pixels = rng.random((height, width, 3), dtype=np.float32)
        last = LastImage()
        assert last.check(pixels, *where) is None
        last.remember(pixels, *where)
        same = pixels.copy()
        pixels[5, 5] = 0.0  # the key is a copy: changing the array remembered does not change the key
        assert last.matches(same, *where) and last.check(same, *where).result() is True
        assert not last.matches(pixels, *where)
        assert last.check(same, "cuda:0", "torch.float32") is None  # same pixels, embedding elsewhere
        assert last.check(same[:-1], *where) is None
        on_grid, off_grid = same.copy(), same.copy()
        on_grid[0, 0, 1] += 0.5
        off_grid[height // 2 + 1, width // 2 + 1, 2] += 0.5  # between grid points (steps of 4+ pixels)
        assert last.check(on_grid, *where) is None
        assert last.may_match(off_grid, *where)
        assert not last.matches(off_grid, *where) and last.check(off_grid, *where).result() is False
        last.forget()
        assert not last.may_match(same, *where)


def test_an_image_equal_only_on_the_grid_gets_its_own_masks(engine, image):
    """After the quick check passes, the engine decodes with the kept embedding while the full
    comparison runs; when the pixels differ that guess is dropped and the new image is encoded."""
    other = np.random.default_rng(11).random(image.shape, dtype=np.float32)
    grid = (slice(None, None, HEIGHT // 64), slice(None, None, WIDTH // 64))
    other[grid] = image[grid]
    probe = LastImage()
    probe.remember(image)
    assert probe.may_match(other) and not probe.matches(other)  # the case this test is about

    prompts = dict(boxes=[BOX_A, BOX_B], points=[Point(150, 120)])
    first = engine.segment(image, **prompts)
    after_the_guess = engine.segment(other, **prompts)
    again = engine.segment(other, **prompts)  # from the cache: the embedding encoded for `other`
    for x, y in zip(after_the_guess.masks, again.masks):
        np.testing.assert_array_equal(x, y)
    assert after_the_guess.scores == again.scores
    # Had the guess (or the first image's embedding) been kept, both would repeat the first image's.
    assert first.scores != after_the_guess.scores


def test_masks_upscaled_in_chunks_equal_those_upscaled_together(engine, image, monkeypatch):
    boxes = [BOX_A, BOX_B, BOX_C, Box(0, 0, WIDTH, HEIGHT), Box(30, 100, 90, 170)]
    together = engine.segment(image, boxes=boxes)
    monkeypatch.setattr(sam2_backends, "MASK_BATCH_PIXELS", 2 * HEIGHT * WIDTH)  # two objects a call
    chunked = engine.segment(image, boxes=boxes)
    for x, y in zip(together.masks, chunked.masks):
        np.testing.assert_array_equal(x, y)
    assert together.scores == chunked.scores


def test_a_ready_float_image_is_used_as_is_and_anything_else_converted():
    """``segment_with`` copies nothing (no copy, no clip) for float32 RGB already in 0..1, where a
    conversion would change nothing; it gets a read-only view of the caller's pixels."""
    ready = np.random.default_rng(5).random((37, 53, 3), dtype=np.float32)
    ready[0, 0] = (0.0, 1.0, 0.5)  # both ends of the range
    shared = _rgb_pixels(ready)
    assert np.shares_memory(shared, ready) and not shared.flags.writeable
    np.testing.assert_array_equal(shared, ready)
    flipped = ready[:, ::-1]
    assert np.shares_memory(_rgb_pixels(flipped), ready)  # any layout: nothing to convert
    others = {
        "above one": ready * np.float32(1.5), "negative": ready - np.float32(0.25),
        "minus zero": np.where(ready > 0.5, ready, np.float32(-0.0)), "float64": ready.astype(np.float64),
        "uint8": (ready * 255).astype(np.uint8),
        "rgba": np.concatenate([ready, np.full_like(ready[..., :1], 0.5)], axis=-1), "grey": ready[..., 0],
    }
    for name, value in others.items():
        converted = _rgb_pixels(value)
        assert converted is not value, name
        assert converted.dtype == np.float32 and converted.shape == ready.shape, name
        np.testing.assert_array_equal(converted, to_rgb_array(value), err_msg=name)
    for bad in (np.nan, np.inf):
        spoiled = ready.copy()
        spoiled[3, 4, 1] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            _rgb_pixels(spoiled)


def test_vision_reasoner_objects_equal_the_same_box_and_point(engine, image):
    """VisionReasoner answers [{"bbox_2d": [x1, y1, x2, y2], "point_2d": [x, y]}, ...]."""
    answer = [{"bbox_2d": [10, 10, 100, 80], "point_2d": [40, 40]},
              {"bbox_2d": [50, 60, 200, 150], "point_2d": [120, 100]}]
    from_answer = engine.segment(image, objects=answer)
    explicit = engine.segment(image, objects=[SegmentObject(box=BOX_A, points=(Point(40, 40),)),
                                              SegmentObject(box=BOX_B, points=(Point(120, 100),))])
    for x, y in zip(from_answer.masks, explicit.masks):
        np.testing.assert_array_equal(x, y)


def test_multimask_modes(engine, image):
    lone = SegmentObject(points=(Point(5, 5),))
    boxed = SegmentObject(box=BOX_A)
    assert wants_multimask(lone, "auto") and not wants_multimask(boxed, "auto")
    assert not wants_multimask(SegmentObject(points=(Point(5, 5), Point(9, 9))), "auto")
    assert wants_multimask(boxed, "always") and not wants_multimask(lone, "never")
    auto = engine.segment(image, boxes=[BOX_A], multimask="auto")
    never = engine.segment(image, boxes=[BOX_A], multimask=False)
    np.testing.assert_array_equal(auto.masks[0], never.masks[0])
    always = engine.segment(image, boxes=[BOX_A], multimask="always")
    assert_mask(always.masks[0])
    with pytest.raises(SegmentInputError, match="multimask"):
        engine.segment(image, boxes=[BOX_A], multimask="sometimes")


def test_grey_and_rgba_images_are_accepted(engine, image):
    grey = image.mean(axis=-1)
    as_grey = engine.segment(grey, boxes=[BOX_A])
    as_rgb = engine.segment(np.repeat(grey[..., None], 3, axis=-1), boxes=[BOX_A])
    np.testing.assert_array_equal(as_grey.masks[0], as_rgb.masks[0])

    rgba = np.concatenate([image, np.ones((HEIGHT, WIDTH, 1), np.float32)], axis=-1)
    np.testing.assert_array_equal(engine.segment(rgba, boxes=[BOX_A]).masks[0],
                                  engine.segment(image, boxes=[BOX_A]).masks[0])


def test_half_precision_runs(models_root, image):
    bf16 = SegmentEngine(DEFAULT_MODEL, device="cpu", dtype=torch.bfloat16)
    result = bf16.segment(image, boxes=[BOX_A], points=[Point(40, 40)])
    assert_mask(result.masks[0])


# ---- refinement ----------------------------------------------------------------------------------

def test_refinement_is_mask_ops_refine_on_each_mask(engine, image):
    raw = engine.segment(image, boxes=[BOX_A, BOX_B])
    refinement = Refinement(remove_islands_below=30, close_radius=2, fill_holes=True, grow_pixels=3, feather_radius=4)
    refined = engine.segment(image, boxes=[BOX_A, BOX_B], refine=refinement)
    for before, after in zip(raw.masks, refined.masks):
        expected = mask_ops.refine(before, grow_pixels=3, fill=True, remove_islands_below=30, close_radius=2,
                                   feather_radius=4)
        np.testing.assert_allclose(after, expected)
        assert_mask(after, binary=False)
    np.testing.assert_allclose(refined.union, np.maximum(*refined.masks))
    assert refined.scores == raw.scores


def test_grow_and_shrink_enlarge_and_reduce_the_mask(engine, image):
    raw = engine.segment(image, boxes=[BOX_B]).masks[0]
    grown = engine.segment(image, boxes=[BOX_B], refine=Refinement(grow_pixels=4)).masks[0]
    shrunk = engine.segment(image, boxes=[BOX_B], refine=Refinement(grow_pixels=-4)).masks[0]
    assert grown.sum() > raw.sum() > shrunk.sum()
    assert (grown >= raw).all() and (shrunk <= raw).all()


def test_fill_holes_and_island_removal(engine, image):
    raw = engine.segment(image, boxes=[BOX_B]).masks[0]
    filled = engine.segment(image, boxes=[BOX_B], refine=Refinement(fill_holes=True)).masks[0]
    assert (filled >= raw).all()
    np.testing.assert_array_equal(filled, mask_ops.fill_holes(raw))
    cleaned = engine.segment(image, boxes=[BOX_B], refine=Refinement(remove_islands_below=50)).masks[0]
    assert (cleaned <= raw).all()
    assert not mask_ops.connected_regions(cleaned) or min(
        b.score for b in mask_ops.connected_regions(cleaned)) >= 50


def test_feather_softens_the_edge_only(engine, image):
    raw = engine.segment(image, boxes=[BOX_A]).masks[0]
    soft = engine.segment(image, boxes=[BOX_A], refine=Refinement(feather_radius=3)).masks[0]
    assert ((soft > 0) & (soft < 1)).any()
    assert_mask(soft, binary=False)
    assert np.abs(soft - raw).max() <= 1.0 and not np.array_equal(soft, raw)


# ---- the prompting rules and bad input ----------------------------------------------------------------

def test_points_go_to_the_box_that_contains_them():
    outer, inner = Box(0, 0, 200, 150), Box(20, 20, 60, 60)
    objs = prepare_objects(WIDTH, HEIGHT, boxes=[outer, inner],
                           points=[Point(30, 30), Point(150, 100), Point(40, 40, False), Point(240, 160, False)])
    # positive: the smallest containing box; negative: every box containing it, or all when none does
    assert objs[0].points == (Point(150, 100), Point(40, 40, False), Point(240, 160, False))
    assert objs[1].points == (Point(30, 30), Point(40, 40, False), Point(240, 160, False))
    # a single box takes every point, inside it or not
    (only,) = prepare_objects(WIDTH, HEIGHT, boxes=[inner], points=[Point(150, 100)])
    assert only.points == (Point(150, 100),)


def test_boxes_are_clipped_to_the_image():
    (obj,) = prepare_objects(WIDTH, HEIGHT, boxes=[{"x": -20, "y": 100, "width": 400, "height": 200}])
    assert (obj.box.x1, obj.box.y1, obj.box.x2, obj.box.y2) == (0, 100, WIDTH, HEIGHT)


@pytest.mark.parametrize("kwargs, pattern", [
    ({"boxes": [BOX_A, Box(30, 30, 30, 90)]}, r"boxes\[1\].*zero area"),
    ({"boxes": [{"x": 10, "y": 10, "width": 50, "height": 0}]}, r"boxes\[0\].*zero area"),
    ({"boxes": [Box(300, 10, 400, 50)]}, r"boxes\[0\].*outside the 250x173 image"),
    ({"points": [Point(40, 40), Point(260, 40)]}, r"points\[1\].*\(260, 40\).*outside the 250x173 image"),
    ({"points": [Point(40, -1)]}, r"points\[0\].*outside"),
    ({"objects": [{"box": [10, 10, 50, 60], "points": [[500, 20]]}]}, r"objects\[0\]\.points\[0\].*outside"),
    ({}, r"no prompt"),
    ({"boxes": [], "points": []}, r"no prompt"),
    ({"points": [Point(40, 40, False)]}, r"positive point"),
    ({"boxes": [BOX_A, BOX_C], "points": [Point(110, 150)]}, r"points\[0\].*none of the 2 boxes"),
    ({"objects": ["a cat"]}, r"objects\[0\]"),
    ({"points": [{"x": "left", "y": 3}]}, r"points\[0\]"),
])
def test_bad_prompts_raise_clear_errors(kwargs, pattern):
    with pytest.raises(SegmentInputError, match=pattern):
        prepare_objects(WIDTH, HEIGHT, **kwargs)


def test_bad_input_is_refused_before_the_model_runs(engine, image):
    with pytest.raises(SegmentInputError, match="no prompt"):
        engine.segment(image)
    with pytest.raises(SegmentInputError, match=r"boxes\[0\].*zero area"):
        engine.segment(image, boxes=[Box(5, 5, 5, 50)])
    with pytest.raises(ValueError, match="image"):
        engine.segment(np.zeros((4, 4, 5), np.float32), boxes=[BOX_A])
    with pytest.raises(SegmentInputError, match="refine"):
        engine.segment(image, boxes=[BOX_A], refine={"grow_pixels": 3})


# ---- the original sam2 package backend ---------------------------------------------------------------

@pytest.mark.parametrize("name, config", [
    ("sam2.1_hiera_large.pt", "configs/sam2.1/sam2.1_hiera_l.yaml"),
    ("sam2.1_hiera_base_plus.safetensors", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
    ("sam2.1_hiera_small-fp16.safetensors", "configs/sam2.1/sam2.1_hiera_s.yaml"),
    ("sam2_hiera_tiny.pt", "configs/sam2/sam2_hiera_t.yaml"),
    ("sam2_hiera_large.safetensors", "configs/sam2/sam2_hiera_l.yaml"),
    ("sam2_hiera_b+.pt", "configs/sam2/sam2_hiera_b+.yaml"),
])
def test_meta_config_is_picked_from_the_file_name(name, config):
    assert meta_config_for(name) == config


def test_meta_file_name_without_a_size_is_refused():
    with pytest.raises(Sam2LoadError, match="size"):
        meta_config_for("my_segmenter.pt")


def test_meta_checkpoint_without_the_sam2_package_says_how_to_get_it(tmp_path, monkeypatch):
    checkpoint = tmp_path / "sam2.1_hiera_large.pt"
    checkpoint.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)  # makes `from sam2.build_sam import ...` fail
    with pytest.raises(Sam2LoadError, match=r"pip install sam2.*transformers weights"):
        load_meta_sam2(checkpoint, torch.device("cpu"), torch.float32)


# Shrinks sam2.1_hiera_t to 8 M parameters (recipe: shared/research/engines.md section 10).
TINY_META_OVERRIDES = (
    "++model.image_encoder.trunk.embed_dim=24", "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,2,2,1]", "++model.image_encoder.trunk.global_att_blocks=[4]",
    "++model.image_encoder.neck.backbone_channel_list=[192,96,48,24]", "++model.memory_attention.num_layers=1",
)


@pytest.fixture(scope="module")
def meta_checkpoints(tmp_path_factory):
    pytest.importorskip("sam2", reason="the `sam2` package is not installed (pip install sam2)")
    from safetensors.torch import save_file
    from sam2.build_sam import build_sam2

    torch.manual_seed(0)
    model = build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
                       hydra_overrides_extra=list(TINY_META_OVERRIDES))
    folder = tmp_path_factory.mktemp("meta")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save({"model": state}, folder / "sam2.1_hiera_tiny.pt")
    save_file(state, str(folder / "sam2.1_hiera_tiny.safetensors"))
    return folder


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")  # inside the sam2 package
def test_meta_checkpoints_segment_like_the_transformers_backend(meta_checkpoints, image):
    cpu = torch.device("cpu")
    from_pt = load_meta_sam2(meta_checkpoints / "sam2.1_hiera_tiny.pt", cpu, torch.float32,
                             hydra_overrides=TINY_META_OVERRIDES)
    from_st = load_meta_sam2(meta_checkpoints / "sam2.1_hiera_tiny.safetensors", cpu, torch.float32,
                             hydra_overrides=TINY_META_OVERRIDES)
    pt_weights, st_weights = from_pt.model.state_dict(), from_st.model.state_dict()
    assert pt_weights.keys() == st_weights.keys()
    assert all(torch.equal(pt_weights[k], st_weights[k]) for k in pt_weights)

    objects = [SegmentObject(box=BOX_A), SegmentObject(box=BOX_B, points=(Point(100, 100),)),
               SegmentObject(points=(Point(30, 140),))]
    together = segment_with(from_st, image, objects=objects)
    assert len(together.masks) == len(together.scores) == 3
    for index, obj in enumerate(objects):  # batched decoding equals decoding alone here too
        assert_mask(together.masks[index])
        alone = segment_with(from_st, image, objects=[obj])
        np.testing.assert_array_equal(alone.masks[0], together.masks[index])
        assert alone.scores[0] == pytest.approx(together.scores[index], abs=1e-6)
    np.testing.assert_array_equal(together.union, np.maximum.reduce(together.masks))


def test_meta_checkpoint_in_the_models_folder_is_built_from_its_name(meta_checkpoints, models_root):
    """A Meta-format file dropped into models/sam2 is a choice; its name picks the config, and
    weights that do not fit that config are refused with a message saying to rename the file."""
    target = models_root / "sam2" / "sam2.1_hiera_tiny.pt"
    shutil.copy(meta_checkpoints / "sam2.1_hiera_tiny.pt", target)
    try:
        assert "sam2.1_hiera_tiny.pt" in available_choices("sam2")
        # The file says "tiny", so the real tiny config is built, which the shrunken weights do not fit.
        with pytest.raises(Sam2LoadError, match=r"does not match configs/sam2.1/sam2.1_hiera_t.yaml.*rename"):
            SegmentEngine("sam2.1_hiera_tiny.pt", device="cpu", dtype=torch.float32)
    finally:
        target.unlink()


# ---- CUDA graphs (a CPU stand-in that re-runs the recorded function on replay) ----------------------

class _TupleReplay:
    """Stands in for ``unet_graph.CudaGraph`` on the CPU: ``capture`` leaves garbage in the outputs
    (a real capture runs nothing), ``replay`` re-runs the function into the same tensors."""

    def __init__(self, device):
        self.fn = self.outputs = None

    def capture(self, fn):
        self.fn, self.outputs = fn, fn()
        for tensor in self.outputs:
            tensor.fill_(float("nan") if tensor.is_floating_point() else 0)
        return self.outputs

    def replay(self):
        for static, fresh in zip(self.outputs, self.fn()):
            static.copy_(fresh)


def test_graph_replays_give_the_eager_masks_and_follow_the_weights(models_root, image, monkeypatch):
    """The encoder and each prompt shape's decoder replay recorded graphs (a CPU stand-in here):
    same masks and scores as eager, a graph per shape, dropped when the weights move and when the
    store asks for device memory back."""
    from agentic_edit.engines.call_graphs import CallGraphs

    path = models_root / "sam2" / DEFAULT_MODEL
    eager = sam2_backends.load_transformers_sam2(path, None, torch.float32)
    graphed = sam2_backends.load_transformers_sam2(path, None, torch.float32)
    graphed.graphs = CallGraphs(lambda: [*graphed.model.parameters(), *graphed.model.buffers()],
                                graph_factory=_TupleReplay)
    monkeypatch.setattr(CallGraphs, "enabled_for", lambda self, device: True)
    other = np.ascontiguousarray(image[::-1])
    calls = [dict(boxes=[BOX_A]), dict(points=[Point(60, 40)]), dict(boxes=[BOX_A, BOX_B]), dict(boxes=[BOX_C])]
    for picture in (image, other, image):
        graphed.clear_embedding_cache()
        for kwargs in calls * 2:   # first sight of a shape: eager; the second records; then replays
            want = segment_with(eager, picture, **kwargs)
            got = segment_with(graphed, picture, **kwargs)
            for x, y in zip(want.masks, got.masks):
                np.testing.assert_array_equal(x, y)
            assert want.scores == got.scores
    graphs = graphed.graphs
    assert graphs.captures >= 3 and graphs.replays > graphs.captures and graphs.graph_count <= graphs.max_graphs
    graphs.check_weights()
    first = next(graphed.model.parameters())
    monkeypatch.setattr(first, "data", first.data.clone())   # what a move to another device does
    graphs.check_weights()
    assert graphs.graph_count == 0
    segment_with(graphed, image, boxes=[BOX_A])
    graphed.release_device_caches()
    assert graphs.graph_count == 0 and not graphed._cached


def test_unchecked_pixels_are_checked_whenever_they_are_not_the_cached_image(engine, image):
    """A float32 frame goes to the backend unchecked; only pixels equal to the cached (checked)
    image skip the check, so NaN is refused and out-of-range values are clipped as before, even
    right after the same-looking image was cached."""
    first = engine.segment(image, boxes=[BOX_A])
    spoiled = image.copy()
    spoiled[HEIGHT // 2 + 1, WIDTH // 2 + 1, 1] = np.nan   # off the sampled grid: passes the quick check
    with pytest.raises(ValueError, match="NaN or infinite"):
        engine.segment(spoiled, boxes=[BOX_A])
    bright = image * np.float32(1.5)
    np.testing.assert_array_equal(engine.segment(bright, boxes=[BOX_A]).masks[0],
                                  engine.segment(np.clip(bright, 0, 1), boxes=[BOX_A]).masks[0])
    again = engine.segment(image, boxes=[BOX_A])
    np.testing.assert_array_equal(again.masks[0], first.masks[0])
    assert image.flags.writeable   # the caller's array is left as it was


def test_a_large_image_is_compared_in_parts_and_any_difference_is_found(monkeypatch):
    monkeypatch.setattr(sam2_backends, "COMPARE_WORKERS", 3)
    big = np.random.default_rng(3).random((700, 640, 3), dtype=np.float32)   # over BACKGROUND_COMPARE_BYTES
    assert big.nbytes >= sam2_backends.BACKGROUND_COMPARE_BYTES
    last = LastImage()
    last.remember(big, "cpu")
    assert last.check(big.copy(), "cpu").result() is True
    for row in (0, 233, 234, 466, 467, 699):   # each part, and the rows at their seams
        changed = big.copy()
        changed[row, 5, 2] = np.nextafter(changed[row, 5, 2], np.float32(2))
        future = last.check(changed, "cpu")
        assert future is not None and future.result() is False, row

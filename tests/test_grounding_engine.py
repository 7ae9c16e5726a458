"""The grounding engine on tiny random-weight Qwen2.5-VL checkpoints (tests/tiny_models/qwen2_5_vl.py).

Random weights write garbage, so two kinds of test: the real pipeline end to end (model store ->
processor -> generate -> decode -> parse, which must come back as a clean "not found"), and exact
coordinate mapping, where the model's ``generate`` is replaced by one that "writes" a known answer
through the real tokenizer while the real processor still decides the model's input size.
"""

import shutil

import numpy as np
import pytest
import torch

from agentic_edit.engines import grounding
from agentic_edit.engines.geometry import Point
from agentic_edit.engines.grounding import (FAMILY, GroundingEngine, GroundingInputError, convention_for)
from agentic_edit.engines.grounding_parse import smart_resize
from agentic_edit.models import ModelNotFoundError, available_choices, free, get_spec
from tests.fixtures import tiny_models_root
from tests.tiny_models import ensure_models

QWEN = "Qwen2.5-VL-7B-Instruct"
REASONER = "VisionReasoner-7B"
TOKENS = 6  # keep tiny generation short: the suite runs on two CPU cores


@pytest.fixture(scope="module")
def tiny_root():
    root = tiny_models_root()
    ensure_models(root, only=[QWEN, REASONER])
    return root


@pytest.fixture
def models_dir(tiny_root, monkeypatch):
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield tiny_root
    free(FAMILY)


def photo(width=1000, height=750, seed=0):
    return np.random.default_rng(seed).random((height, width, 3), dtype=np.float32)


class ScriptedGenerate:
    """Stands in for ``model.generate``: appends ``answer``'s tokens to the prompt and records the
    processor's inputs (so tests see the real ``image_grid_thw``)."""

    def __init__(self, tokenizer, answer):
        self.tokenizer, self.answer, self.inputs = tokenizer, answer, None

    def __call__(self, input_ids, **kwargs):
        self.inputs = dict(kwargs, input_ids=input_ids)
        new = self.tokenizer(self.answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return torch.cat([input_ids, new.to(input_ids.device)], dim=1)


def script(engine, monkeypatch, answer):
    with engine.load().use() as bundle:
        fake = ScriptedGenerate(bundle.processor.tokenizer, answer)
        monkeypatch.setattr(bundle.model, "generate", fake)
    return fake


# ---- the real pipeline ----------------------------------------------------------------------

def test_ground_runs_end_to_end_from_the_models_folder(models_dir):
    engine = GroundingEngine(QWEN)
    steps = []
    result = engine.ground(photo(100, 75), "the cat", max_new_tokens=TOKENS,
                           progress=lambda step, total: steps.append((step, total)))
    # Random weights write no boxes: a clean not-found with the reason, never an exception.
    assert isinstance(result.raw_text, str) and result.reason
    assert result.found is False and result.objects == ()
    # The tiny processor caps input at 64 tokens of 28x28: 75x100 -> sides 84x112 (3x4 tokens).
    assert result.input_size == (112, 84) and result.image_size == (100, 75)
    assert steps and steps[-1][1] == TOKENS and 1 <= len(steps) <= TOKENS


def test_ground_is_deterministic(models_dir):
    engine = GroundingEngine(QWEN)
    first = engine.ground(photo(64, 48), "a hat", max_new_tokens=TOKENS)
    second = engine.ground(photo(64, 48), "a hat", max_new_tokens=TOKENS)
    assert first.raw_text == second.raw_text


def test_runs_in_bfloat16(models_dir):
    engine = GroundingEngine(QWEN, dtype=torch.bfloat16)
    result = engine.ground(photo(64, 48), "a cup", max_new_tokens=3)
    assert result.image_size == (64, 48)
    handle = engine.load()
    assert handle.dtype == torch.bfloat16
    assert next(handle.obj.model.parameters()).dtype == torch.bfloat16


def test_loads_from_a_local_path(models_dir, tmp_path):
    local = tmp_path / "my-finetune"
    shutil.copytree(models_dir / "LLM" / QWEN, local)
    engine = GroundingEngine(str(local))
    assert engine.convention == "qwen"
    result = engine.ground(photo(90, 60), "the dog", max_new_tokens=4)
    assert result.found is False and result.input_size == (84, 56)
    assert engine.load().resolved.path == local


def test_vision_reasoner_runs_on_840_squares(models_dir):
    engine = GroundingEngine(REASONER)
    assert engine.convention == "vision_reasoner"
    result = engine.ground(photo(120, 80), "The cat.", max_new_tokens=4)
    assert result.found is False
    assert result.input_size == (840, 840) and result.image_size == (120, 80)


def test_grayscale_and_rgba_images_are_accepted(models_dir):
    engine = GroundingEngine(QWEN)
    gray = np.random.default_rng(1).random((48, 64), dtype=np.float32)
    rgba = np.random.default_rng(2).integers(0, 255, (48, 64, 4), dtype=np.uint8)
    for image in (gray, rgba):
        result = engine.ground(image, "a cup", max_new_tokens=2)
        assert result.image_size == (64, 48)


def test_ask_and_chat_return_text(models_dir):
    engine = GroundingEngine(QWEN)
    answer = engine.ask(photo(64, 48), "What is in the picture?", max_new_tokens=4)
    assert isinstance(answer, str)
    reply = engine.chat([{"role": "system", "content": "Answer briefly."},
                         {"role": "user", "content": "Describe both images."}],
                        images=[photo(64, 48), photo(48, 64, seed=3)], max_new_tokens=4)
    assert isinstance(reply, str)
    text_only = engine.chat([{"role": "user", "content": "Hello"}], max_new_tokens=3)
    assert isinstance(text_only, str)


def test_progress_callback_can_interrupt_and_the_model_stays_usable(models_dir):
    engine = GroundingEngine(QWEN)

    class Interrupted(Exception):
        pass

    def stop(step, total):
        raise Interrupted

    with pytest.raises(Interrupted):
        engine.ground(photo(64, 48), "a cup", max_new_tokens=TOKENS, progress=stop)
    assert engine.ground(photo(64, 48), "a cup", max_new_tokens=2).image_size == (64, 48)


def test_missing_model_names_the_folder_and_files(models_dir):
    engine = GroundingEngine("Qwen2.5-VL-3B-Instruct")
    with pytest.raises(ModelNotFoundError) as info:
        engine.ground(photo(32, 32), "x", max_new_tokens=1)
    message = str(info.value)
    assert "Qwen2.5-VL-3B-Instruct" in message and "LLM" in message


# ---- exact mapping through the real processor ---------------------------------------------------

def test_qwen_answer_maps_through_the_processors_grid(models_dir, monkeypatch):
    engine = GroundingEngine(QWEN)
    answer = '```json\n[{"bbox_2d": [126, 91, 252, 182], "point_2d": [189, 91], "label": "cat"}]\n```'
    fake = script(engine, monkeypatch, answer)
    # max_pixels 256*28*28 on 1000x750: sqrt scaling, floored to 28 -> 504x364 (grid 26x36 patches)
    result = engine.ground(photo(), "the cat", max_pixels=256 * 28 * 28, with_points=True)
    assert fake.inputs["image_grid_thw"].tolist() == [[1, 26, 36]]
    assert smart_resize(750, 1000, min_pixels=3136, max_pixels=256 * 28 * 28) == (364, 504)
    assert result.input_size == (504, 364)
    assert result.found and result.raw_text == answer
    box = result.boxes[0]
    # x * 1000/504: 126 -> 250, 252 -> 500, 189 -> 375;  y * 750/364: 91 -> 187.5, 182 -> 375
    assert (box.x1, box.y1, box.x2, box.y2, box.label) == pytest.approx((250, 187.5, 500, 375, "cat"))
    assert result.points == [Point(pytest.approx(375.0), pytest.approx(187.5))]
    prompt = engine.load().obj.processor.tokenizer.decode(fake.inputs["input_ids"][0])
    assert "Locate the cat in the image" in prompt and "point_2d" in prompt


def test_default_pixel_cap_comes_from_the_processor(models_dir, monkeypatch):
    engine = GroundingEngine(QWEN)
    fake = script(engine, monkeypatch, '[{"point_2d": [126, 84]}]')
    result = engine.ground(photo(), "the cat")
    # The tiny processor's own cap, 64*28*28 = 50176 (below DEFAULT_MAX_PIXELS), applies:
    # beta = sqrt(750000/50176) = 3.866; 750/3.866/28 = 6.93 -> 168; 1000/3.866/28 = 9.24 -> 252
    assert fake.inputs["image_grid_thw"].tolist() == [[1, 12, 18]]
    assert result.input_size == (252, 168)
    # 126 * 1000/252 = 500; 84 * 750/168 = 375
    assert result.points == [Point(500.0, 375.0)]


def test_vision_reasoner_answer_maps_from_840(models_dir, monkeypatch):
    engine = GroundingEngine(REASONER)
    answer = ('<think>The cat sits on the left.</think>'
              '<answer>[{"bbox_2d": [84, 420, 420, 840], "point_2d": [210, 630]}]</answer>')
    fake = script(engine, monkeypatch, answer)
    result = engine.ground(photo(), "The cat?")
    # the processor keeps the 840x840 squash as is: 60x60 patches of 14
    assert fake.inputs["image_grid_thw"].tolist() == [[1, 60, 60]]
    assert result.thinking == "The cat sits on the left."
    box = result.boxes[0]
    # x * 1000/840: 84 -> 100, 420 -> 500, 210 -> 250;  y * 750/840: 420 -> 375, 840 -> 750, 630 -> 562.5
    assert (box.x1, box.y1, box.x2, box.y2) == pytest.approx((100, 375, 500, 750))
    assert result.points == [Point(pytest.approx(250.0), pytest.approx(562.5))]
    prompt = engine.load().obj.processor.tokenizer.decode(fake.inputs["input_ids"][0])
    assert 'Please find "the cat" with bboxs and points.' in prompt


def test_mode_overrides_the_models_convention(models_dir, monkeypatch):
    engine = GroundingEngine(QWEN)
    fake = script(engine, monkeypatch, '<answer>[{"bbox_2d": [0, 0, 840, 840], "point_2d": [420, 420]}]</answer>')
    result = engine.ground(photo(), "x", mode="vision_reasoner")
    assert fake.inputs["image_grid_thw"].tolist() == [[1, 60, 60]]
    assert result.boxes[0].x2 == pytest.approx(1000) and result.boxes[0].y2 == pytest.approx(750)


def test_ask_drops_the_thinking(models_dir, monkeypatch):
    engine = GroundingEngine(REASONER)
    script(engine, monkeypatch, "<think>It is orange.</think><answer>An orange cat.</answer>")
    assert engine.ask(photo(64, 48), "What is it?") == "An orange cat."


# ---- inputs and registry ------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors(models_dir):
    engine = GroundingEngine(QWEN)
    with pytest.raises(GroundingInputError, match="query"):
        engine.ground(photo(32, 32), "  ")
    with pytest.raises(GroundingInputError, match="mode"):
        engine.ground(photo(32, 32), "x", mode="yolo")
    with pytest.raises(GroundingInputError, match="max_pixels"):
        engine.ground(photo(32, 32), "x", max_pixels=100)
    with pytest.raises(GroundingInputError, match="max_new_tokens"):
        engine.ground(photo(32, 32), "x", max_new_tokens=0)
    with pytest.raises(GroundingInputError, match="image part"):
        engine.chat([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}], images=[])
    with pytest.raises(GroundingInputError, match="role"):
        engine.chat([{"role": "robot", "content": "hi"}])
    with pytest.raises(ValueError, match="image"):
        engine.ground(np.zeros((4, 4, 5)), "x")
    with pytest.raises(GroundingInputError, match="attn_implementation"):
        GroundingEngine(QWEN, attn_implementation="magic")


def test_specs_are_registered_with_licences(models_dir):
    assert get_spec("Qwen2.5-VL-3B-Instruct").repo_id == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert "non-commercial" in get_spec("Qwen2.5-VL-3B-Instruct").licence
    assert get_spec(QWEN).licence == "Apache-2.0"
    assert get_spec(REASONER).repo_id == "Ricky06662/VisionReasoner-7B"
    assert all(get_spec(k).folder == "LLM" and get_spec(k).family == FAMILY
               for k in ("Qwen2.5-VL-3B-Instruct", QWEN, REASONER))
    choices = available_choices(FAMILY)
    assert QWEN in choices and REASONER in choices


def test_convention_from_the_name():
    assert convention_for(REASONER) == "vision_reasoner"
    assert convention_for("/models/LLM/my-Seg-Zero-7B") == "vision_reasoner"
    assert convention_for("someone/visionreasoner-ft") == "vision_reasoner"
    assert convention_for("Qwen/Qwen2.5-VL-72B-Instruct") == "qwen"


def test_flash_attention_falls_back_to_sdpa_without_the_package(monkeypatch):
    monkeypatch.setattr(grounding, "flash_attention_available", lambda: False)
    assert GroundingEngine(QWEN, attn_implementation="flash_attention_2").attn_implementation == "sdpa"

"""The Add-it engine through the real loader on the tiny FLUX.1-dev checkpoint (tests/tiny_models/flux.py).

Random weights paint noise, so these tests check what does not depend on the weights: loading through
the model store, sizes (non-square, not multiples of 16, explicit working sizes), the outputs' shapes,
seeds, progress and interruption, the bad inputs, the gated-weights message, the SAM-2 refinement
path, and that the ``low`` profile (blocks streamed from CPU memory) computes the ``high`` numbers.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agentic_edit.engines import addit_blend as blend
from agentic_edit.engines.addit import (AdditEngine, InsertInputError, derive_source_prompt, flux_model_choices,
                                        refine_choices, work_size)
from agentic_edit.engines.addit_loader import FAMILY, TEXT_FAMILY
from agentic_edit.models import ModelNotFoundError, free, set_memory_profile

FAST = {"steps": 4, "structure_transfer_step": 1, "blend_step": 2, "refine": "off"}


@pytest.fixture(scope="module", autouse=True)
def models_root(tiny_models_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield tiny_models_dir
    set_memory_profile(None)
    free(FAMILY)
    free(TEXT_FAMILY)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine():
    return AdditEngine("FLUX.1-dev", device="cpu", dtype=torch.float32)


def photo(height=48, width=80, seed=0):
    return np.random.default_rng(seed).random((height, width, 3)).astype(np.float32)


def test_non_square_insert_through_the_real_loader(engine):
    calls = []
    result = engine.insert(photo(), "a dog sitting on the sofa", "dog", seed=3, progress=lambda d, t: calls.append((d, t)),
                           **FAST)
    assert result.image.shape == (48, 80, 3) and result.image.dtype == np.float32
    assert 0 <= result.image.min() and result.image.max() <= 1
    assert result.mask.shape == (48, 80) and set(np.unique(result.mask)) <= {0.0, 1.0}
    assert result.work_size == (80, 48)
    assert result.source_prompt == "sitting on the sofa"
    assert any("derived from the target prompt" in n for n in result.notes)
    assert any("automatic gamma" in n for n in result.notes) and 1.0 <= result.gamma <= 1.2
    # inversion: 2 evaluations for each of the 3 steps from the structure transfer on, then 3 denoising steps
    assert calls == [(i, 9) for i in range(1, 10)]
    again = engine.insert(photo(), "a dog sitting on the sofa", "dog", seed=3, **FAST)
    np.testing.assert_array_equal(again.image, result.image)
    other = engine.insert(photo(), "a dog sitting on the sofa", "dog", seed=4, **FAST)
    assert np.abs(other.image - result.image).max() > 1e-4


def test_sizes_not_multiples_of_16_are_scaled_and_explicit_sizes_are_checked(engine):
    result = engine.insert(photo(45, 70), "a cat on a chair", "cat", source_prompt="a chair", invert=False, **FAST)
    assert result.image.shape == (45, 70, 3) and result.mask.shape == (45, 70)
    assert result.work_size == (64, 48) and any("scaled" in n for n in result.notes)
    explicit = engine.insert(photo(45, 70), "a cat on a chair", "cat", width=96, height=32, extended_scale=1.1,
                             invert=False, **FAST)
    assert explicit.work_size == (96, 32) and explicit.gamma == 1.1 and explicit.image.shape == (45, 70, 3)
    with pytest.raises(InsertInputError, match="width: 70 is not a multiple of 16"):
        engine.insert(photo(45, 70), "a cat on a chair", "cat", width=70, height=48, **FAST)
    assert work_size(1024, 768, 1024 * 1024) == (1024, 768)
    assert work_size(4000, 3000, 1024 * 1024) == (1184, 880)


@pytest.mark.parametrize("kwargs, message", [
    ({"target_prompt": "a sofa in a room", "subject": "dog"}, "'dog' does not occur in the target prompt"),
    ({"target_prompt": "a doghouse", "subject": "dog"}, "does not occur"),  # a whole word, not a part of one
    ({"target_prompt": "a dog on a sofa", "subject": "dog", "source_prompt": "A dog on a sofa"},
     "equals the source prompt"),
    ({"target_prompt": "", "subject": "dog"}, "target_prompt: describe the image"),
    ({"target_prompt": "a dog", "subject": " "}, "subject: name the object"),
    ({"target_prompt": "a dog", "subject": "dog", "steps": 1}, "steps: 1 is outside"),
    ({"target_prompt": "a dog", "subject": "dog", "blend_step": 0, "structure_transfer_step": 2},
     "blend_step: 0 comes before structure_transfer_step 2"),
    ({"target_prompt": "a dog", "subject": "dog", "width": 64}, "give both"),
    ({"target_prompt": "a dog", "subject": "dog", "extended_scale": float("nan")}, "extended_scale"),
])
def test_bad_input_is_refused_before_loading(kwargs, message):
    engine = AdditEngine("no-such-flux-model", device="cpu")  # nothing is loaded for a refused call
    with pytest.raises(InsertInputError, match=message):
        engine.insert(photo(), **{"steps": 4, **kwargs})


def test_missing_flux_files_say_how_to_get_the_gated_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as caught:
        AdditEngine("FLUX.1-dev", device="cpu").insert(photo(), "a dog on the sofa", "dog", **FAST)
    message = str(caught.value)
    assert "black-forest-labs/FLUX.1-dev" in message and "gated" in message and "hf auth login" in message
    assert str(tmp_path / "diffusers" / "FLUX.1-dev") in message and "transformer/config.json" in message
    assert "Non-Commercial" in message


def test_low_profile_streams_the_blocks_and_computes_the_same_numbers(engine):
    from agentic_edit.models import loaded_models

    def run():
        return engine.insert(photo(seed=2), "a red ball on the grass", "red ball", seed=1, **FAST)

    try:
        set_memory_profile("low")
        low = run()
        [core] = loaded_models(FAMILY)
        assert core.obj.streamed and core.obj.streamer.pending == {}
        blocks = [*core.obj.transformer.transformer_blocks, *core.obj.transformer.single_transformer_blocks]
        assert len(core.modules) == len(list(core.obj.transformer.children())) - 2 + 1  # no block is in the store
        assert all(p.device.type == "cpu" for b in blocks for p in b.parameters())
        set_memory_profile("high")
        high = run()
        [core] = loaded_models(FAMILY)
        assert not core.obj.streamed  # rebuilt when the profile changed
    finally:
        set_memory_profile(None)
    np.testing.assert_allclose(low.image, high.image, atol=1e-5)
    np.testing.assert_array_equal(low.mask, high.mask)


def test_progress_may_interrupt(engine):
    class Stop(Exception):
        pass

    def stop_at_3(done, total):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        engine.insert(photo(), "a dog on the sofa", "dog", progress=stop_at_3, **FAST)
    # the processors were taken off again: the next call runs normally
    assert engine.insert(photo(), "a dog on the sofa", "dog", **FAST).image.shape == (48, 80, 3)


def test_sam2_refines_the_attention_mask_when_installed(engine):
    result = engine.insert(photo(), "a dog on the sofa", "dog", **{**FAST, "refine": "auto", "blend_step": -1})
    assert any("SAM-2" in n for n in result.notes), result.notes
    assert result.mask.shape == (48, 80)
    assert any("no blending" in n for n in result.notes)
    with pytest.raises(ModelNotFoundError):
        engine.insert(photo(), "a dog on the sofa", "dog", **{**FAST, "refine": "no-such-sam"})


def test_choices_list_the_tiny_flux_and_sam_models():
    assert flux_model_choices()[0] == "FLUX.1-dev"
    assert refine_choices()[:2] == ["auto", "off"] and "sam2.1-hiera-large" in refine_choices()


@pytest.mark.parametrize("target, subject, source", [
    ("a dog sitting on the sofa", "dog", "sitting on the sofa"),
    ("A living room with a cat on the rug.", "cat", "A living room with on the rug."),
    ("a hat", "hat", "a photo"),
])
def test_derived_source_prompts(target, subject, source):
    assert derive_source_prompt(target, subject) == source


def test_blend_helpers():
    heat = np.zeros((20, 30), np.float32)
    heat[5:12, 10:20] = 0.9
    heat += np.random.default_rng(0).random(heat.shape).astype(np.float32) * 0.1
    mask = blend.otsu_mask(heat)
    assert mask[5:12, 10:20].all() and mask.sum() == 70
    box, points = blend.sam_prompts(heat, mask)
    assert (box.x1, box.y1, box.x2, box.y2) == (10, 5, 20, 12) and 1 <= len(points) <= 3
    assert all(10 <= p.x <= 20 and 5 <= p.y <= 12 for p in points)
    cells = blend.latent_blend_mask(mask, 2, 3).reshape(2, 3)
    assert cells.tolist() == [[0, 1, 0], [0, 1, 0]]
    assert blend.latent_blend_mask(mask, 4, 6).reshape(4, 6).tolist()[1:3] == [[0, 0, 1, 1, 0, 0]] * 2
    assert blend.otsu_mask(np.full((4, 4), 0.5, np.float32)).sum() == 0
    heat_map = blend.attention_to_image(torch.arange(6.0), 2, 3, 20, 30)
    assert heat_map.shape == (20, 30) and heat_map.min() == 0 and heat_map.max() == pytest.approx(1, abs=1e-3)


def test_the_tiny_folder_is_a_flux_pipeline_and_our_encoding_matches_it(models_root):
    from diffusers import FluxPipeline

    from agentic_edit.engines.addit_loader import build_text
    from agentic_edit.models import resolve

    path = resolve("FLUX.1-dev", FAMILY).path
    pipe = FluxPipeline.from_pretrained(str(path), dtype=torch.float32)
    prompts = ["a sofa", "a dog on the sofa"]
    embeds, pooled, _ = pipe.encode_prompt(prompts, None, device="cpu", max_sequence_length=32)
    text = build_text(type("R", (), {"path": path / "text_encoder_2"})(), "cpu", torch.float32)
    ours_embeds, ours_pooled = text.encode(prompts, "cpu", torch.float32)
    torch.testing.assert_close(ours_embeds, embeds)
    torch.testing.assert_close(ours_pooled, pooled)
    # the subject's T5 tokens: "dog" is characters 2..5 of the target prompt
    positions = text.subject_positions("a dog on the sofa", 2, 5)
    ids = text.tokenizer_2("a dog on the sofa").input_ids
    assert text.tokenizer_2.decode([ids[i] for i in positions]).strip() == "dog"

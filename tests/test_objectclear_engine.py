"""The ObjectClear engine on the tiny checkpoint through the real loader and model store: a real
photo, the effect mask, fusion (pixels outside the fused mask are bit-identical), the object
embedding in the prompt, the attention probe, progress and interruption, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agentic_edit.engines import objectclear_sampler as sampler
from agentic_edit.engines.objectclear import (ObjectClearEngine, ObjectClearInputError, ObjectClearMaskError,
                                              objectclear_available, short_side_size)

FAST = {"steps": 3, "resolution": 128}   # strength 0.9999 x 3 steps: 2 denoising steps


@pytest.fixture(scope="module")
def engine(tiny_models_dir):
    from agentic_edit.models import free

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield ObjectClearEngine("ObjectClear", dtype=torch.float32)
    free("objectclear")


@pytest.fixture(scope="module")
def cat(photo_chelsea):
    """The cat photo (300x451) and a mask over the cat's head."""
    mask = np.zeros(photo_chelsea.shape[:2], np.float32)
    mask[60:200, 130:300] = 1.0
    return photo_chelsea, mask


@pytest.fixture(scope="module")
def removed(engine, cat):
    image, mask = cat
    steps = []
    result = engine.remove(image, mask, seed=3, fusion_threshold=0.9, progress=lambda s, t: steps.append((s, t)),
                           **FAST)
    return result, steps


def test_removal_on_a_photo_keeps_every_pixel_outside_the_fused_mask(removed, cat):
    result, _ = removed
    image, mask = cat
    original = image.astype(np.float32) / 255.0
    out, fused = result.images[0], result.fused_mask
    assert out.shape == original.shape and out.dtype == np.float32 and fused.shape == mask.shape
    outside = fused == 0
    assert outside.any() and np.array_equal(out[outside], original[outside])
    assert not np.array_equal(out[mask > 0], original[mask > 0])   # the object was repainted
    assert (fused[mask > 0] == 1).all()                               # the whole object is replaced
    assert result.work_size == short_side_size(451, 300, 128) == (192, 128)
    assert short_side_size(451, 300, 512) == (768, 512) and short_side_size(300, 451, 1024) == (1024, 1536)
    assert "ObjectClear" in result.notes[0] and "worked at 192x128" in result.notes[0]


def test_the_effect_mask_is_the_normalised_attention_map(removed, cat):
    result, _ = removed
    effect = result.effect_mask
    assert effect.shape == cat[1].shape and effect.dtype == np.float32
    assert 0.0 <= effect.min() < 0.05 and 0.95 < effect.max() <= 1.0
    # Fusion replaces what the map marks (>= 0.9 here) and the object; the rest of the map is kept.
    assert (result.fused_mask[effect >= 0.9] == 1).all()


def test_progress_counts_the_denoising_steps(removed):
    _, steps = removed
    assert steps == [(1, 2), (2, 2)]


def test_batch_items_use_their_own_seeds_and_crop_mode_stays_in_its_box(engine, cat):
    image, mask = cat
    single = engine.remove(image, mask, seed=8, mode="crop", context_margin=8, **FAST)
    pair = engine.remove(image, mask, seed=7, batch=2, mode="crop", context_margin=8, **FAST)
    assert pair.seeds == [7, 8]
    np.testing.assert_array_equal(pair.images[1], single.images[0])
    box = single.crop_box
    outside_box = np.ones(mask.shape, bool)
    outside_box[int(box.y1):int(box.y2), int(box.x1):int(box.x2)] = False
    assert outside_box.any() and (single.fused_mask[outside_box] == 0).all()
    assert (single.effect_mask[outside_box] == 0).all()


def test_interrupting_restores_the_attention_processor(engine, cat):
    image, mask = cat
    with engine.load().use() as parts:
        layer = dict(parts.pipe.unet.named_modules())[sampler.PROBE_LAYER]
        before = layer.processor

    class Stop(Exception):
        pass

    def stop_at_last(step, total):
        if step == total:
            raise Stop

    with pytest.raises(Stop):
        engine.remove(image, mask, progress=stop_at_last, **FAST)
    assert layer.processor is before


def test_the_probe_reads_probabilities_without_changing_the_layer(engine):
    with engine.load().use() as parts:
        unet = parts.pipe.unet
        layer = dict(unet.named_modules())[sampler.PROBE_LAYER]
        hidden = torch.randn(2, 16, layer.to_q.in_features)
        context = torch.randn(2, 7, layer.to_k.in_features)
        plain = layer(hidden, encoder_hidden_states=context)
        with sampler.probe_attention(unet, sampler.PROBE_LAYER, 5) as probe:
            probed = layer(hidden, encoder_hidden_states=context)
        torch.testing.assert_close(probed, plain)
        assert probe.probabilities.shape == (2, 16)
        assert ((probe.probabilities > 0) & (probe.probabilities < 1)).all()
        effect = sampler.effect_map_from(probe.probabilities, (8, 8))   # a 4x4 grid on an 8x8 latent
        assert effect.shape == (2, 1, 8, 8) and effect.amin() == 0 and effect.amax() > 0.99


def test_the_object_embedding_replaces_the_object_token(engine, cat):
    """Two different objects give two different prompt embeddings only at the object token."""
    image, _ = cat
    with engine.load().use() as parts:
        pixels = torch.from_numpy(image.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        left, right = torch.zeros_like(pixels), torch.zeros_like(pixels)
        left[..., :, :200] = pixels[..., :, :200]
        right[..., :, 250:] = pixels[..., :, 250:]
        a, b = sampler.object_embedding(parts, left), sampler.object_embedding(parts, right)
        assert a.shape == (1, parts.pipe.unet.config.cross_attention_dim)
        assert not torch.allclose(a, b)


def test_bad_masks_are_clear_errors(engine, cat):
    image, mask = cat
    with pytest.raises(ObjectClearMaskError, match="empty"):
        engine.remove(image, np.zeros_like(mask), **FAST)
    with pytest.raises(ObjectClearMaskError, match="covers 100% of the image"):
        engine.remove(image, np.ones_like(mask), **FAST)
    tiny = np.zeros_like(mask)
    tiny[100:104, 100:104] = 1
    with pytest.raises(ObjectClearMaskError, match="too small to embed"):
        engine.remove(image, tiny, **FAST)
    with pytest.raises(ObjectClearInputError, match="multiple of 64"):
        engine.remove(image, mask, resolution=300)
    with pytest.raises(ObjectClearInputError, match="mode"):
        engine.remove(image, mask, mode="tile")
    with pytest.raises(ValueError, match="mask"):
        engine.remove(image, mask[:10], **FAST)


def test_availability_follows_the_files(engine, tiny_models_dir, tmp_path, monkeypatch):
    assert objectclear_available("ObjectClear")
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tmp_path))
    assert not objectclear_available("ObjectClear")


def test_default_working_size_is_half_the_native_size(engine, cat):
    """512 for SDXL's 1024 (ObjectClear's training size); the tiny UNet's 128 gives the 128 floor."""
    from types import SimpleNamespace

    from agentic_edit.engines.objectclear import default_resolution

    sdxl = SimpleNamespace(pipe=SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(sample_size=128)),
                                                vae_scale_factor=8))
    assert default_resolution(sdxl) == 512
    image, mask = cat
    result = engine.remove(image, mask, steps=2, strength=1.0)   # resolution left out
    assert result.work_size == (192, 128)

"""The CatVTON engine on real photos through the real loaders (tiny checkpoints, 2 steps): the
paper's frame (person over garment, 9 channels, garment zeroed in the unconditional branch), the
paste back, seeds, progress, and clear errors for bad garments, masks and sizes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agentic_edit.engines import catvton_loader as loader
from agentic_edit.engines.catvton import CatVTONEngine
from agentic_edit.engines.tryon_images import TryOnInputError, fit_garment, garment_array

SIZE = {"height": 64, "width": 48}


@pytest.fixture(scope="module")
def store(tiny_models_dir):
    from agentic_edit.models import free

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield tiny_models_dir
    for family in (loader.UNET_FAMILY, loader.VAE_FAMILY):
        free(family)


@pytest.fixture(scope="module")
def person(photo_astronaut):
    return photo_astronaut.astype(np.float32) / 255.0   # 512x512


@pytest.fixture(scope="module")
def clothes(person):
    mask = np.zeros(person.shape[:2], np.float32)
    mask[230:420, 130:380] = 1.0   # the astronaut's suit below the face
    return mask


def test_try_on_changes_only_the_clothes_and_keeps_the_photo_size(store, person, clothes, photo_coffee):
    calls = []
    result = CatVTONEngine().try_on(person, photo_coffee, clothes, steps=2, seed=3,
                                    progress=lambda s, t: calls.append((s, t)), **SIZE)
    assert calls == [(1, 2), (2, 2)]
    assert result.image.shape == person.shape and result.image.dtype == np.float32
    assert result.work_size == (64, 48) and result.garment.shape == (64, 48, 3)
    untouched = result.mask_used == 0
    assert untouched.any() and np.array_equal(result.image[untouched], person[untouched])
    assert np.abs(result.image[clothes > 0] - person[clothes > 0]).mean() > 0.01
    assert result.mask_used.max() == 1.0 and 0 < result.mask_used.mean() < 0.5
    assert "CatVTON mix-48k-1024" in result.notes[0] and "DDIM 2 steps" in result.notes[0]
    again = CatVTONEngine().try_on(person, photo_coffee, clothes, steps=2, seed=3, **SIZE)
    other = CatVTONEngine().try_on(person, photo_coffee, clothes, steps=2, seed=4, **SIZE)
    assert np.array_equal(again.image, result.image) and not np.array_equal(other.image, result.image)


def test_the_unet_sees_person_over_garment_with_the_garment_zeroed_when_unconditional(store, person, clothes,
                                                                                       photo_coffee):
    engine = CatVTONEngine()
    unet = engine.load_unet().obj.unet
    seen = []
    hook = unet.register_forward_pre_hook(lambda module, args, kwargs: seen.append((args, kwargs)), with_kwargs=True)
    try:
        engine.try_on(person, photo_coffee, clothes, steps=2, **SIZE)
        engine.try_on(person, photo_coffee, clothes, steps=1, guidance=1.0, **SIZE)
    finally:
        hook.remove()
    (sample, _), kwargs = seen[0]
    assert sample.shape == (2, 9, 64, 24)   # CFG pair, noisy + mask + masked, 2 x (64/2) rows, 48/2 columns
    assert kwargs["encoder_hidden_states"] is None
    mask_channel, masked = sample[:, 4], sample[:, 5:]
    assert torch.equal(masked[0, :, 32:], torch.zeros_like(masked[0, :, 32:]))   # unconditional: no garment
    assert masked[1, :, 32:].abs().sum() > 0                                       # conditional: the garment
    assert mask_channel[:, 32:].abs().sum() == 0 and mask_channel[:, :32].sum() > 0
    assert torch.equal(masked[0, :, :32], masked[1, :, :32])                       # the same masked person
    assert seen[-1][0][0].shape[0] == 1    # guidance 1: no unconditional branch


def test_without_repaint_the_whole_crop_is_the_models_and_outside_it_the_photo(store, person, clothes, photo_coffee):
    wide = np.concatenate([person, person[:, :256]], axis=1)   # 768x512: the 3:4 crop cuts the sides
    mask = np.concatenate([clothes, np.zeros((512, 256), np.float32)], axis=1)
    result = CatVTONEngine().try_on(wide, photo_coffee, mask, steps=1, repaint=False, **SIZE)
    crop = result.crop
    assert (crop.x, crop.y, crop.width, crop.height) == (192, 0, 384, 512)
    outside = np.ones(mask.shape, bool)
    outside[:, 192:576] = False
    assert np.array_equal(result.image[outside], wide[outside])
    inside = result.image[:, 192:576]
    assert np.abs(inside - wide[:, 192:576]).mean() > 0.01 and "no repaint" in result.notes[0]


def test_switching_attention_versions_reloads_the_weights_in_place(store, person, clothes, photo_coffee):
    mix = CatVTONEngine()
    handle = mix.load_unet()
    mix.try_on(person, photo_coffee, clothes, steps=1, **SIZE)
    assert handle.obj.attention.parts[-3] == "mix-48k-1024"
    viton = CatVTONEngine("CatVTON-vitonhd-16k-512")
    assert viton.load_unet() is handle
    result = viton.try_on(person, photo_coffee, clothes, steps=1, **SIZE)
    assert handle.obj.attention.parts[-3] == "vitonhd-16k-512" and "vitonhd-16k-512" in result.notes[0]
    # the 512 weights' own frame is half the mix one's
    assert viton.try_on(person, photo_coffee, clothes, steps=1).work_size == (32, 24)
    assert mix.try_on(person, photo_coffee, clothes, steps=1).work_size == (64, 48)


def test_garments_with_alpha_and_odd_shapes(store, person, clothes):
    rgba = np.zeros((40, 30, 4), np.float32)
    rgba[10:30, 5:25] = (0.8, 0.1, 0.1, 1.0)           # a red garment on a transparent sheet
    flat = garment_array(rgba)
    assert np.allclose(flat[0, 0], 1.0) and np.allclose(flat[20, 15], (0.8, 0.1, 0.1))
    strip = np.full((300, 60, 3), 0.2, np.float32)      # 1:5, tall: fitted and padded with white
    fitted = fit_garment(garment_array(strip), 64, 48)
    assert fitted.shape == (64, 48, 3) and np.allclose(fitted[:, 0], 1.0) and np.allclose(fitted[32, 24], 0.2)
    result = CatVTONEngine().try_on(person, (rgba * 255).astype(np.uint8), clothes, steps=1, **SIZE)
    assert result.image.shape == person.shape
    with pytest.raises(TryOnInputError, match="fully transparent"):
        garment_array(np.zeros((40, 30, 4), np.uint8))
    with pytest.raises(TryOnInputError, match="more than 8 times longer"):
        CatVTONEngine().try_on(person, np.ones((400, 20, 3), np.float32), clothes, steps=1, **SIZE)
    with pytest.raises(TryOnInputError, match="at least 8"):
        garment_array(np.ones((4, 30, 3), np.float32))


@pytest.mark.parametrize("fill, message", [(0.0, "covers nothing"), (1.0, "covers the whole photo")])
def test_an_empty_or_whole_mask_is_refused(store, person, photo_coffee, fill, message):
    with pytest.raises(TryOnInputError, match=message):
        CatVTONEngine().try_on(person, photo_coffee, np.full(person.shape[:2], fill, np.float32), steps=1, **SIZE)


def test_other_bad_input_is_named(store, person, clothes, photo_coffee):
    engine = CatVTONEngine()
    with pytest.raises(ValueError, match="mask: the mask is 300x512 but the image is 512x512"):
        engine.try_on(person, photo_coffee, np.ones((512, 300), np.float32), steps=1)
    with pytest.raises(TryOnInputError, match="height: the working height must be a multiple of 8"):
        engine.try_on(person, photo_coffee, clothes, steps=1, height=60, width=48)
    with pytest.raises(TryOnInputError, match="steps"):
        engine.try_on(person, photo_coffee, clothes, steps=0, **SIZE)
    wide = np.concatenate([person, person], axis=1)
    edge = np.zeros(wide.shape[:2], np.float32)
    edge[100:300, 10:80] = 1.0      # clothes at the far left, outside the centred 3:4 crop
    with pytest.raises(TryOnInputError, match="outside the part of the photo the model sees"):
        engine.try_on(wide, photo_coffee, edge, steps=1, **SIZE)


def test_progress_can_interrupt_between_steps(store, person, clothes, photo_coffee):
    class Stop(Exception):
        pass

    def stop(step, total):
        if step == 1:
            raise Stop

    with pytest.raises(Stop):
        CatVTONEngine().try_on(person, photo_coffee, clothes, steps=3, progress=stop, **SIZE)


def test_the_steps_replay_through_the_graph_runner_with_the_same_result(store, person, clothes, photo_coffee,
                                                                        monkeypatch):
    """The UNet step as the engine calls it (no encoder states, a tensor timestep) is one graph key
    for all steps; replayed (a CPU stand-in for a CUDA graph) it gives the eager result exactly."""
    from agentic_edit.engines import unet_graph
    from tests.test_unet_graph import ReexecutingGraph

    engine = CatVTONEngine()
    eager = engine.try_on(person, photo_coffee, clothes, steps=3, seed=2, **SIZE)
    unet = engine.load_unet().obj.unet
    runner = unet_graph.runner_for(unet)
    runner.clear()
    monkeypatch.setattr(runner, "_graph_factory", ReexecutingGraph)
    monkeypatch.setattr(unet_graph, "why_not_graphed", lambda unet, enabled=None: None)
    graphed = engine.try_on(person, photo_coffee, clothes, steps=3, seed=2, **SIZE)
    assert runner.stats.captures == 1 and runner.stats.replays == 2 and runner.graph_count == 1
    assert np.array_equal(graphed.image, eager.image)
    engine.load_unet().obj.release_device_caches()
    assert runner.graph_count == 0

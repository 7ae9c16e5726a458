"""The inpainting engine on tiny random-weight checkpoints (tests/tiny_models/sd_inpaint.py, sdxl_inpaint.py).

Random weights paint noise, so these tests check what does not depend on the weights: loading
through the model store (models folder, local path, single file, PrefPaint's broken scheduler
config), that pixels outside the grown + feathered mask are bit-identical to the input in both
modes, the crop box, the special cases (empty, mismatched, all-white mask, strength 0), seeds and
batches, progress and interruption, schedulers, and IP-Adapter switching on one cached pipeline.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from agentic_edit.engines.imaging import ImageInputError
from agentic_edit.engines.inpaint import InpaintEngine, InpaintInputError, inpaint_model_choices, model_family_of
from agentic_edit.engines.inpaint_loader import SCHEDULERS, InpaintModelError, folder_family
from agentic_edit.engines.ip_adapter import IPAdapterError, locate
from agentic_edit.models import ModelNotFoundError
from tests.tiny_models.sd_inpaint import SINGLE_FILE_NAME
from tests.tiny_models.sdxl_inpaint import CLIP_VISION_FILE, IP_ADAPTER_FILE

SD = "stable-diffusion-inpainting"
PREFPAINT = "prefpaint-v1.0"
SDXL = "stable-diffusion-xl-1.0-inpainting-0.1"
FAST = {"steps": 2, "resolution": 64}  # 2 denoising steps at a 64x64-pixel working size


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny UNets are far too small to gain from intra-op threads; on a busy 2-core machine the
    thread pool's waiting made a 4-step tiny SDXL run take 5-19 s instead of 0.5 s."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models_root(inpaint_models_root):
    return inpaint_models_root


def engine(name: str) -> InpaintEngine:
    return InpaintEngine(name, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def sd(models_root) -> InpaintEngine:
    return engine(SD)


@pytest.fixture(scope="module")
def sdxl(models_root) -> InpaintEngine:
    return engine(SDXL)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """123x77: neither square nor a multiple of 8."""
    yy, xx = np.mgrid[0:77, 0:123] / np.array([77.0, 123.0])[:, None, None]
    noise = np.random.default_rng(3).random((77, 123, 3)) * 0.2
    return np.clip(np.stack([xx, yy, 1 - xx], axis=-1) * 0.8 + noise, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    mask = np.zeros((77, 123), np.float32)
    mask[25:45, 40:70] = 1.0
    return mask


@pytest.fixture(scope="module")
def photo(photo_coffee) -> np.ndarray:
    """scikit-image's coffee photo downscaled to an odd 151x101."""
    return np.asarray(Image.fromarray(photo_coffee).resize((151, 101), Image.LANCZOS), np.float32) / 255.0


def assert_untouched_outside(result, original):
    outside = result.mask_used == 0
    assert outside.any()
    for out in result.images:
        assert out.shape == original.shape and out.dtype == np.float32
        assert np.array_equal(out[outside], original[outside])
        assert not np.array_equal(out[result.mask_used == 1], original[result.mask_used == 1])


# ---- loading ------------------------------------------------------------------------------------------

def test_choices_and_families(models_root):
    choices = inpaint_model_choices()
    for name in (SD, PREFPAINT, SDXL, SINGLE_FILE_NAME):
        assert name in choices
    assert model_family_of(SD) == model_family_of(SINGLE_FILE_NAME) == "sd15_inpaint"
    assert model_family_of(SDXL) == "sdxl_inpaint"
    assert model_family_of(str(models_root / "diffusers" / PREFPAINT)) == "sd15_inpaint"


def test_a_non_inpainting_unet_is_refused_with_its_channel_count(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"in_channels": 4}))
    with pytest.raises(InpaintModelError, match="takes 4 input channels"):
        folder_family(tmp_path)


def test_sd15_crop_mode_keeps_every_pixel_outside_the_mask(sd, image, mask):
    result = sd.inpaint(image, mask, "a red ball", **FAST, mask_grow=3, feather=5)
    assert_untouched_outside(result, image)
    assert not result.unchanged
    # the paste mask is the mask grown by 3 with a 5-pixel rim: it covers the mask and stops within 8 px
    assert (result.mask_used[mask == 1] == 1).all()
    assert result.mask_used[25 + 20 + 3 + 5:, :].max() == 0
    box = result.crop_box
    assert 0 <= box.x1 <= 40 - 8 and 70 + 8 <= box.x2 <= 123 and 0 <= box.y1 and box.y2 <= 77
    assert result.work_size[0] % 8 == 0 and result.work_size[1] % 8 == 0


def test_sd15_full_mode_on_a_real_photo(sd, photo):
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[30:60, 50:100] = 1
    result = sd.inpaint(photo, mask, "a cup", **FAST, mode="full")
    assert_untouched_outside(result, photo)
    assert result.crop_box.x1 == 0 and result.crop_box.x2 == 151 and result.crop_box.y2 == 101


@pytest.mark.parametrize("mode", ["crop", "full"])
def test_sdxl_keeps_every_pixel_outside_the_mask(sdxl, photo, mode):
    mask = np.zeros(photo.shape[:2], np.float32)
    mask[60:95, 5:40] = 1  # near the border
    result = sdxl.inpaint(photo, mask, "a spoon", **FAST, mode=mode)
    assert_untouched_outside(result, photo)


def test_a_local_path_loads_the_same_cached_model(sd, models_root, image, mask):
    by_path = engine(str(models_root / "diffusers" / SD))
    assert by_path.load() is sd.load()
    a = sd.inpaint(image, mask, "x", **FAST, seed=1).images[0]
    b = by_path.inpaint(image, mask, "x", **FAST, seed=1).images[0]
    assert np.array_equal(a, b)


def test_a_folder_holding_only_fp16_weight_copies_loads(sd, models_root, tmp_path, image, mask):
    """The hub specs download only the fp16 safetensors where a repo has them: the loader picks the variant."""
    folder = tmp_path / "sd-fp16-only"
    shutil.copytree(models_root / "diffusers" / SD, folder)
    for weights in [*folder.glob("*/diffusion_pytorch_model.safetensors"), *folder.glob("*/model.safetensors")]:
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    a = sd.inpaint(image, mask, "x", **FAST, seed=7).images[0]
    b = engine(str(folder)).inpaint(image, mask, "x", **FAST, seed=7).images[0]
    assert np.array_equal(a, b)


def test_single_file_checkpoint_matches_the_diffusers_folder(sd, models_root, image, mask):
    single = engine(SINGLE_FILE_NAME)
    assert single.load().resolved.path == models_root / "checkpoints" / SINGLE_FILE_NAME
    a = sd.inpaint(image, mask, "x", **FAST, seed=2).images[0]
    b = single.inpaint(image, mask, "x", **FAST, seed=2).images[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_single_file_without_a_config_copy_says_what_to_do(models_root, tmp_path, monkeypatch, image, mask):
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(models_root / "checkpoints" / SINGLE_FILE_NAME, tmp_path / "checkpoints" / SINGLE_FILE_NAME)
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="stable-diffusion-v1-5/stable-diffusion-inpainting") as info:
        engine(SINGLE_FILE_NAME).inpaint(image, mask, "x", **FAST)
    assert "HF_HUB_OFFLINE" in str(info.value) and "config" in str(info.value)


def test_prefpaint_loads_although_its_scheduler_class_is_training_only(models_root, image, mask):
    from diffusers import DiffusionPipeline

    folder = models_root / "diffusers" / PREFPAINT
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == \
        "DDIMSchedulerCustom"
    with pytest.raises(Exception, match="DDIMSchedulerCustom"):
        DiffusionPipeline.from_pretrained(str(folder))  # the trap the engine avoids
    prefpaint = engine(PREFPAINT)
    assert prefpaint.defaults()["scheduler"] == "ddim" and prefpaint.defaults()["eta"] == 1.0
    assert engine(str(folder)).defaults() == prefpaint.defaults()  # found by its folder name too
    result = prefpaint.inpaint(image, mask, "", **FAST)
    assert_untouched_outside(result, image)
    with prefpaint.load().use() as model:
        assert type(model.pipe.scheduler).__name__ == "DDIMScheduler"
        assert model.scheduler_base.class_name == "DDIMSchedulerCustom"


# ---- special cases ------------------------------------------------------------------------------------------

def test_empty_mask_returns_the_image_unchanged_and_says_so(sd, image):
    result = sd.inpaint(image, np.zeros((77, 123), np.float32), "x", **FAST, batch=2)
    assert result.unchanged and "empty" in result.notes[0]
    assert len(result.images) == 2 and all(np.array_equal(out, image) for out in result.images)
    assert result.crop_box is None and not result.mask_used.any()


def test_mask_grow_that_erases_the_mask_is_reported(sd, image):
    tiny = np.zeros((77, 123), np.float32)
    tiny[10:12, 10:12] = 1
    result = sd.inpaint(image, tiny, "x", **FAST, mask_grow=-3)
    assert result.unchanged and "shrank the mask away" in result.notes[0]


def test_a_mask_of_another_size_names_both_sizes(sd, image):
    with pytest.raises(ImageInputError, match="the mask is 50x40 but the image is 123x77"):
        sd.inpaint(image, np.ones((40, 50), np.float32), "x", **FAST)


def test_all_white_mask_repaints_the_whole_image(sd, image):
    result = sd.inpaint(image, np.ones((77, 123), np.float32), "x", **FAST)
    assert result.crop_box.x1 == 0 and result.crop_box.y1 == 0 and result.crop_box.x2 == 123
    assert (result.mask_used == 1).all()
    assert np.abs(result.images[0] - image).mean() > 0.05


def test_strength_zero_returns_the_input(sd, image, mask):
    calls = []
    result = sd.inpaint(image, mask, "x", **FAST, strength=0.0, progress=lambda s, t: calls.append(s))
    assert result.unchanged and "strength is 0" in result.notes[0]
    assert np.array_equal(result.images[0], image) and not calls


def test_rgba_image_and_uint8_mask_are_accepted(sd, image, mask):
    rgba = np.concatenate([image, np.ones((77, 123, 1), np.float32)], axis=-1)
    result = sd.inpaint(rgba, (mask * 255).astype(np.uint8), "x", **FAST)
    assert_untouched_outside(result, image)


# ---- seeds, progress, schedulers ----------------------------------------------------------------------------------

def test_seeds_reproduce_and_batch_items_equal_single_runs(sd, image, mask):
    batch = sd.inpaint(image, mask, "x", **FAST, seed=5, batch=2)
    assert batch.seeds == [5, 6]
    single = sd.inpaint(image, mask, "x", **FAST, seed=6)
    assert np.array_equal(batch.images[1], single.images[0])
    again = sd.inpaint(image, mask, "x", **FAST, seed=5)
    assert np.array_equal(batch.images[0], again.images[0])
    assert not np.array_equal(batch.images[0], batch.images[1])


def test_progress_is_reported_per_step_and_raising_interrupts(sdxl, image, mask):
    calls = []
    sdxl.inpaint(image, mask, "x", steps=4, strength=1.0, resolution=64, batch=2,
                 progress=lambda step, total: calls.append((step, total)))
    assert calls == [(i, 8) for i in range(1, 9)]

    class Stop(Exception):
        pass

    def stop_at_two(step, total):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        sdxl.inpaint(image, mask, "x", steps=4, strength=1.0, resolution=64, progress=stop_at_two)
    assert not sdxl.inpaint(image, mask, "x", **FAST).unchanged  # the pipeline is fine afterwards


@pytest.mark.parametrize("scheduler", sorted(SCHEDULERS))
def test_every_scheduler_runs(sd, image, mask, scheduler):
    result = sd.inpaint(image, mask, "x", **FAST, scheduler=scheduler)
    assert SCHEDULERS[scheduler][0] in result.notes[0]
    assert_untouched_outside(result, image)


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps"), ({"strength": 1.5}, "strength"), ({"mode": "zoom"}, "mode"),
    ({"scheduler": "fast"}, "scheduler"), ({"resolution": 100}, "multiple of 8"), ({"batch": 0}, "batch"),
    ({"steps": 2, "strength": 0.3}, "no denoising step"), ({"feather": -1}, "feather"),
])
def test_bad_arguments_are_named(sd, image, mask, kwargs, message):
    arguments = {**FAST, **kwargs}
    with pytest.raises(InpaintInputError, match=message):
        sd.inpaint(image, mask, "x", **arguments)


# ---- IP-Adapter ------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    rng = np.random.default_rng(11)
    return rng.random((40, 50, 3)).astype(np.float32)


def test_ip_adapter_reference_changes_the_result_and_scale_zero_does_not(sdxl, image, mask, reference):
    plain = sdxl.inpaint(image, mask, "x", **FAST, seed=3).images[0]
    guided = sdxl.inpaint(image, mask, "x", **FAST, seed=3, ip_adapter_image=reference, ip_adapter_scale=1.0)
    assert "IP-Adapter" in guided.notes[-1]
    assert not np.array_equal(guided.images[0], plain)
    zero = sdxl.inpaint(image, mask, "x", **FAST, seed=3, ip_adapter_image=reference, ip_adapter_scale=0.0)
    np.testing.assert_allclose(zero.images[0], plain, atol=1e-6)
    # without a reference the same cached pipeline is plain again
    assert np.array_equal(sdxl.inpaint(image, mask, "x", **FAST, seed=3).images[0], plain)
    assert_untouched_outside(guided, image)


def test_ip_adapter_takes_rgba_references_composited_on_white(sdxl, image, mask, reference):
    alpha = np.zeros((40, 50, 1), np.float32)
    alpha[10:30, 10:40] = 1.0
    rgba = np.concatenate([reference, alpha], axis=-1)
    on_white = reference * alpha + (1 - alpha)
    a = sdxl.inpaint(image, mask, "x", **FAST, seed=4, ip_adapter_image=rgba, ip_adapter_scale=1.0).images[0]
    b = sdxl.inpaint(image, mask, "x", **FAST, seed=4, ip_adapter_image=on_white, ip_adapter_scale=1.0).images[0]
    assert np.array_equal(a, b)


def test_comfyui_layout_with_a_config_less_encoder_file(sdxl, models_root, tmp_path, image, mask, reference):
    h94 = locate("ip-adapter_sdxl")
    assert h94.weights.name == IP_ADAPTER_FILE and h94.image_encoder.name == "image_encoder"
    loose = tmp_path / IP_ADAPTER_FILE  # the adapter alone: the encoder is found in clip_vision by name
    shutil.copy(h94.weights, loose)
    comfy = locate(str(loose))
    assert comfy.image_encoder == models_root / "clip_vision" / CLIP_VISION_FILE
    a = sdxl.inpaint(image, mask, "x", **FAST, seed=5, ip_adapter_image=reference, ip_adapter_scale=1.0).images[0]
    b = sdxl.inpaint(image, mask, "x", **FAST, seed=5, ip_adapter_image=reference, ip_adapter_scale=1.0,
                     ip_adapter=str(loose)).images[0]
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_ip_adapter_needs_sdxl_and_a_fitting_file(sd, sdxl, image, mask, reference, tmp_path):
    with pytest.raises(InpaintInputError, match="SDXL"):
        sd.inpaint(image, mask, "x", **FAST, ip_adapter_image=reference)
    bogus = tmp_path / "ip-adapter_bogus.safetensors"
    from safetensors.torch import save_file

    save_file({"image_proj.proj.weight": torch.zeros(4, 4), "ip_adapter.1.to_k_ip.weight": torch.zeros(8, 768)},
              str(bogus))
    (tmp_path / "image_encoder").mkdir()
    shutil.copytree(locate("ip-adapter_sdxl").image_encoder, tmp_path / "image_encoder", dirs_exist_ok=True)
    with pytest.raises(IPAdapterError, match="does not fit"):
        sdxl.inpaint(image, mask, "x", **FAST, ip_adapter_image=reference, ip_adapter=str(bogus))


def test_missing_or_wrong_image_encoder_says_what_to_put_where(models_root, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from agentic_edit.engines.ip_adapter import load_image_encoder

    loose = tmp_path / "adapters" / IP_ADAPTER_FILE
    loose.parent.mkdir()
    shutil.copy(locate("ip-adapter_sdxl").weights, loose)
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tmp_path / "empty_root"))
    with pytest.raises(IPAdapterError, match=f"Put {CLIP_VISION_FILE} in one of: .*clip_vision"):
        locate(str(loose))
    not_clip = tmp_path / "not_clip.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(not_clip))
    with pytest.raises(IPAdapterError, match="not a CLIP vision model"):
        load_image_encoder(not_clip, torch.float32)

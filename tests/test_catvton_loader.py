"""CatVTON's attention file: the released index layout mapped onto the UNet's self-attention layers,
key counts checked, cross-attention switched off, and the model store finding every file."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from agentic_edit.engines import catvton_loader as loader
from agentic_edit.engines.catvton_loader import CatVTONWeightsError
from tests.tiny_models.catvton import released_attention_state
from tests.tiny_models.sd_inpaint import _tiny_pipeline


@pytest.fixture(scope="module")
def store(tiny_models_dir):
    from agentic_edit.models import free

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
        yield tiny_models_dir
    for family in (loader.UNET_FAMILY, loader.VAE_FAMILY):
        free(family)


def _unet(seed=0):
    return _tiny_pipeline(seed).unet


def _self_attention(unet) -> dict:
    return {k: v.detach().clone() for k, v in loader.self_attention_parameters(unet).items()}


def test_release_slots_are_eight_per_self_attention_layer_in_module_order():
    unet = _unet()
    slots = loader.release_slots(unet)
    layers = [n for n, _ in unet.named_modules() if n.endswith("attn1")]
    assert len(layers) == 4 and len(slots) == 8 * len(layers)
    assert [s.attention_name for s in slots[::8]] == layers
    assert [s.child for s in slots[:8]] == list(loader.RELEASE_LAYOUT)
    # the indexes the authors' selection gives (their processors were modules: one more entry each)
    released = [n for n, _ in unet.named_modules() if "attn1" in n]
    assert len(released) == 7 * len(layers)


def test_keys_of_parent_and_child_name_the_same_parameter():
    unet = _unet()
    layer = loader.release_slots(unet)[0].attention_name
    mapping = loader.map_release_keys(unet, ["0.to_q.weight", "2.weight", "5.bias"])
    assert mapping == {"0.to_q.weight": f"{layer}.to_q.weight", "2.weight": f"{layer}.to_k.weight",
                       "5.bias": f"{layer}.to_out.0.bias"}
    with pytest.raises(CatVTONWeightsError, match="both hold"):
        loader.map_release_keys(unet, ["0.to_q.weight", "1.weight"])


def test_the_released_file_loads_every_self_attention_weight_and_nothing_else(store):
    source = _unet(7)  # the seed the tiny mix-48k-1024 file was made from
    unet = _unet(0)
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    file = store / "catvton" / "CatVTON" / "mix-48k-1024" / "attention" / "model.safetensors"
    keys = load_file(str(file))
    assert len(keys) == 5 * 4 and all(k.split(".")[0].isdigit() for k in keys)
    assert sorted({int(k.split(".")[0]) for k in keys}) == [0, 8, 16, 24]  # children deduplicated away
    assert loader.load_attention_weights(unet, file) == 20
    wanted = _self_attention(source)
    for name, value in unet.state_dict().items():
        if name in wanted:
            assert torch.equal(value, wanted[name]), name
        else:
            assert torch.equal(value, before[name]), name


def test_a_dedup_that_kept_the_children_names_loads_the_same(tmp_path):
    """Whichever name of a shared tensor a saver keeps, every key maps to its parameter."""
    source, unet = _unet(7), _unet(0)
    state = released_attention_state(source)
    renamed = {}
    for key, tensor in state.items():
        index, _, rest = key.partition(".")
        child = {"to_q.weight": (1, "weight"), "to_k.weight": (2, "weight"), "to_v.weight": (3, "weight"),
                 "to_out.0.weight": (5, "weight"), "to_out.0.bias": (5, "bias")}[rest]
        renamed[f"{int(index) + child[0]}.{child[1]}"] = tensor
    save_file(renamed, str(tmp_path / "model.safetensors"))
    loader.load_attention_weights(unet, tmp_path / "model.safetensors")
    assert all(torch.equal(unet.state_dict()[k], v) for k, v in _self_attention(source).items())


def test_a_wrong_key_count_is_a_clear_error(tmp_path):
    state = released_attention_state(_unet(7))
    state.pop(next(iter(state)))
    save_file(state, str(tmp_path / "short.safetensors"))
    with pytest.raises(CatVTONWeightsError, match=r"holds 19 tensors; .* 4 self-attention layers need exactly 20"):
        loader.load_attention_weights(_unet(0), tmp_path / "short.safetensors")


def test_diffusers_names_or_a_bigger_unet_are_refused(tmp_path):
    unet = _unet(0)
    named = {k: v.clone() for k, v in loader.self_attention_parameters(unet).items()}
    save_file(named, str(tmp_path / "named.safetensors"))
    with pytest.raises(CatVTONWeightsError, match="is not '<index>.<parameter>'"):
        loader.load_attention_weights(unet, tmp_path / "named.safetensors")
    state = released_attention_state(_unet(7))
    key = sorted(state, key=lambda k: int(k.split(".")[0]))[-1]
    state[f"400.{key.partition('.')[2]}"] = state.pop(key)
    save_file(state, str(tmp_path / "big.safetensors"))
    with pytest.raises(CatVTONWeightsError, match="points past the 32 self-attention entries"):
        loader.load_attention_weights(unet, tmp_path / "big.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CatVTONWeightsError, match="not a readable safetensors file"):
        loader.load_attention_weights(unet, tmp_path / "junk.safetensors")


def test_cross_attention_is_a_pass_through_and_the_unet_runs_on_a_doubled_frame():
    unet = _unet(0).eval()
    loader.disable_cross_attention(unet)
    processors = unet.attn_processors
    assert all(isinstance(p, loader.SkipCrossAttention) == n.endswith("attn2.processor") for n, p in processors.items())
    with torch.no_grad():
        out = unet(torch.randn(2, 9, 2 * 12, 8), torch.tensor(500), encoder_hidden_states=None).sample
    assert out.shape == (2, 4, 24, 8) and torch.isfinite(out).all()


def test_the_store_finds_each_version_and_the_base_unet_inside_an_inpainting_folder(store):
    from agentic_edit.models import resolve

    for version in ("mix-48k-1024", "vitonhd-16k-512"):
        resolved = resolve(f"CatVTON-{version}", loader.ATTENTION_FAMILY)
        file = loader.attention_file(resolved.path, version)
        assert file.parts[-3:] == (version, "attention", "model.safetensors") and loader.version_of(file) == version
    base = resolve(loader.DEFAULT_UNET, loader.UNET_FAMILY).path
    assert base.name == "stable-diffusion-inpainting" and loader.unet_folder(base) == base / "unet"
    scheduler = loader.ddim_scheduler(base / "unet")
    assert scheduler.config.steps_offset == 1 and scheduler.config.beta_schedule == "scaled_linear"
    with pytest.raises(CatVTONWeightsError, match="4 input channels"):
        loader.unet_folder(store / "diffusers" / "stable-diffusion-xl-base-1.0")
    with pytest.raises(CatVTONWeightsError, match="no CatVTON attention file"):
        loader.attention_file(store / "vae")


def test_a_missing_attention_file_says_where_to_put_it(tmp_path, monkeypatch):
    from agentic_edit.models import ModelNotFoundError, resolve

    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as info:
        resolve("CatVTON-dresscode-16k-512", loader.ATTENTION_FAMILY)
    message = str(info.value)
    assert "dresscode-16k-512/attention/model.safetensors" in message and "zhengchong/CatVTON" in message
    assert "CC BY-NC-SA 4.0" in message


def test_a_vae_file_in_the_original_layout_loads_like_the_folder(store, tmp_path):
    from safetensors.torch import save_file

    from tests.tiny_models.sd_inpaint import vae_to_ldm

    folder = loader.load_vae(store / "vae" / "sd-vae-ft-mse", torch.float32)
    file = tmp_path / "vae-ft-mse-840000-ema-pruned.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(folder.state_dict(), folder.config).items()}, str(file))
    single = loader.load_vae(file, torch.float32)
    assert list(single.config.block_out_channels) == [32, 64] and single.config.latent_channels == 4
    assert all(torch.equal(v, single.state_dict()[k]) for k, v in folder.state_dict().items())
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CatVTONWeightsError, match="not a Stable Diffusion VAE file"):
        loader.load_vae(tmp_path / "other.safetensors", torch.float32)

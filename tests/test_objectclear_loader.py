"""ObjectClear's loader on the tiny checkpoint in jixin0101/ObjectClear's layout: components, the
post-fuse widths read from the weights, the object token's index, fp16-only copies and clear errors
for missing or mismatched parts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from agentic_edit.engines import objectclear_loader as loader
from agentic_edit.models import ModelNotFoundError, resolve
from tests.tiny_models.objectclear import CROSS_ATTENTION_DIM, OBJECT_PROJECTION, postfuse_state_dict


@pytest.fixture(scope="module")
def tiny_objectclear(tiny_models_dir) -> Path:
    return tiny_models_dir / "objectclear" / "ObjectClear"


def _copy(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def _build(path: Path, dtype=torch.float32):
    from agentic_edit.models.resolve import ResolvedModel

    return loader.build_objectclear(ResolvedModel(path, None, "path"), torch.device("cpu"), dtype)


def test_the_tiny_layout_loads_with_widths_from_the_weights(tiny_objectclear):
    parts = _build(tiny_objectclear)
    assert type(parts.pipe).__name__ == "StableDiffusionXLInpaintPipeline"
    assert parts.post_fuse.text_width == CROSS_ATTENTION_DIM == parts.pipe.unet.config.cross_attention_dim
    assert parts.post_fuse.mlp1.layernorm.normalized_shape[0] == OBJECT_PROJECTION
    # "remove the instance of object": start token, five words; "object" is the sixth token.
    assert parts.token_index == 5
    ids = parts.pipe.tokenizer(loader.PROMPT).input_ids
    assert parts.pipe.tokenizer.convert_ids_to_tokens(ids[parts.token_index]).startswith("object")
    # Our module computes what the checkpoint's MLP computes, from its own state dict.
    state = postfuse_state_dict()
    x = torch.randn(2, 1, OBJECT_PROJECTION)
    h = torch.nn.functional.layer_norm(x, (OBJECT_PROJECTION,), state["mlp1.layernorm.weight"],
                                       state["mlp1.layernorm.bias"])
    h = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(
        h, state["mlp1.fc1.weight"], state["mlp1.fc1.bias"])), state["mlp1.fc2.weight"], state["mlp1.fc2.bias"])
    g = torch.nn.functional.layer_norm(h, (CROSS_ATTENTION_DIM,), state["mlp2.layernorm.weight"],
                                       state["mlp2.layernorm.bias"])
    g = h + torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(
        g, state["mlp2.fc1.weight"], state["mlp2.fc1.bias"])), state["mlp2.fc2.weight"], state["mlp2.fc2.bias"])
    expected = torch.nn.functional.layer_norm(g, (CROSS_ATTENTION_DIM,), state["layer_norm.weight"],
                                              state["layer_norm.bias"])
    torch.testing.assert_close(parts.post_fuse(x), expected)


def test_fp16_only_copies_load(tiny_objectclear, tmp_path):
    """A download of only the *.fp16.safetensors files (our spec's allow_patterns) loads."""
    from safetensors.torch import load_file, save_file

    folder = _copy(tiny_objectclear, tmp_path / "ObjectClear")
    for path in list(folder.rglob("*.safetensors")):
        if path.name.endswith(".fp16.safetensors"):
            continue
        half = path.with_name(path.name.replace(".safetensors", ".fp16.safetensors"))
        if not half.exists():
            save_file({k: v.to(torch.float16) if v.is_floating_point() else v
                       for k, v in load_file(str(path)).items()}, str(half))
        path.unlink()
    assert not [p for p in folder.rglob("*.safetensors") if not p.name.endswith(".fp16.safetensors")]
    parts = _build(folder)
    assert parts.post_fuse.text_width == CROSS_ATTENTION_DIM
    full = load_file(str(tiny_objectclear / "postfuse_module" / "model.safetensors"))
    torch.testing.assert_close(parts.post_fuse.mlp1.fc1.weight, full["mlp1.fc1.weight"].half().float())


def test_a_missing_post_fuse_file_is_a_clear_error(tiny_objectclear, tmp_path, monkeypatch):
    folder = _copy(tiny_objectclear, tmp_path / "ObjectClear")
    for path in (folder / "postfuse_module").iterdir():
        path.unlink()
    with pytest.raises(loader.ObjectClearModelError, match=r"postfuse_module.*huggingface.co/jixin0101/ObjectClear"):
        loader.check_folder(folder)
    with pytest.raises(loader.ObjectClearModelError, match="postfuse_module"):
        _build(folder)
    # Through the model store by name: the resolver says which files the copy lacks.
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    shutil.move(str(folder), str(tmp_path / "models" / "objectclear" / "ObjectClear"))
    with pytest.raises(ModelNotFoundError, match=r"postfuse_module/model\*\.safetensors"):
        resolve("ObjectClear", loader.FAMILY)
    assert loader.installed_path("ObjectClear") is None


def test_mismatched_widths_and_plain_sdxl_folders_are_refused(tiny_objectclear, tiny_models_dir, tmp_path):
    from safetensors.torch import save_file

    folder = _copy(tiny_objectclear, tmp_path / "ObjectClear")
    state = postfuse_state_dict(text_width=CROSS_ATTENTION_DIM * 2)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "postfuse_module" / "model.safetensors"))
    with pytest.raises(loader.ObjectClearModelError, match="different models"):
        _build(folder)
    sdxl = tiny_models_dir / "diffusers" / "stable-diffusion-xl-1.0-inpainting-0.1"
    with pytest.raises(loader.ObjectClearModelError, match="without ObjectClear's object encoder"):
        loader.check_folder(sdxl)


def test_installed_path_finds_the_model_folder(tiny_models_dir, monkeypatch):
    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
    assert loader.installed_path("ObjectClear") == tiny_models_dir / "objectclear" / "ObjectClear"
    assert loader.installed_path("not-there") is None


def test_object_token_index_needs_one_token():
    from tests.tiny_models.sd_inpaint import tiny_tokenizer

    # The SD tiny tokenizer knows only letters: "object" is six tokens there, not ObjectClear's tokenizer.
    with pytest.raises(loader.ObjectClearModelError, match="6 tokens, not one"):
        loader.object_token_index(tiny_tokenizer())

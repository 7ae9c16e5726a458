"""The model store: resolving choices to files, downloading once, loading once, memory profiles,
and (in a child process with a real ComfyUI imported) ComfyUI's folders and model management."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import types
import uuid
from pathlib import Path

import pytest
import torch

from agentic_edit.models import (
    MemoryProfile, ModelNotFoundError, ModelSpec, acquire, available_choices, free, loaded_models,
    memory_profile, pick_device, pick_dtype, register_family_folders, register_spec, resolve, set_memory_profile,
)
from agentic_edit.models import cache, devices, paths, registry
from agentic_edit.models.cache import module_bytes, torch_modules
from tests.tiny_models.store_fixture import TINY_BERT_FILES, build_tiny_bert

# Set only in the child process that test_inside_comfyui starts, which runs ComfyChildTests.
INSIDE_COMFY_ENV = "AGENTIC_EDIT_STORE_TEST_COMFYUI"


# ---- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_bert_source(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "tiny-bert")


@pytest.fixture
def family() -> str:
    """A fresh family per test, so specs registered by one test never leak into another's choices."""
    return f"store_test_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def specs():
    """Register specs for one test; they are unregistered afterwards."""
    registered: list[ModelSpec] = []

    def add(**fields) -> ModelSpec:
        fields.setdefault("required_files", ("config.json", "*.safetensors"))
        registered.append(register_spec(ModelSpec(**fields)))
        return registered[-1]

    yield add
    for spec in registered:
        registry.unregister_spec(spec.key)


@pytest.fixture
def models_root(tmp_path, monkeypatch) -> Path:
    """An empty models root (``<root>/<folder key>/``), as outside ComfyUI."""
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv(paths.MODELS_DIR_ENV, str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("AGENTIC_EDIT_NO_DOWNLOAD", raising=False)
    monkeypatch.delenv(devices.PROFILE_ENV, raising=False)
    set_memory_profile(None)
    yield root
    free()
    set_memory_profile(None)


def install(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def load_bert(resolved, device, dtype):
    from transformers import BertModel

    return BertModel.from_pretrained(resolved.path, torch_dtype=dtype).eval()


def bert_forward(model) -> torch.Tensor:
    device = next(model.parameters()).device
    ids = torch.tensor([[1, 5, 9, 2]], device=device)
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


# ---- resolving ------------------------------------------------------------------------------

def test_registered_key_resolves_from_models_folder_and_is_listed_once(models_root, tiny_bert_source, specs, family):
    spec = specs(key="Tiny-Bert-Store", family=family, folder="LLM", repo_id="someone/Tiny-Bert-Store")
    install(tiny_bert_source, models_root / "LLM" / "Tiny-Bert-Store")
    install(tiny_bert_source, models_root / "LLM" / "my-finetune")
    (models_root / "LLM" / "adapter.safetensors").write_bytes(b"\0" * 8)
    (models_root / "LLM" / "put_llm_models_here").write_text("")
    (models_root / "LLM" / ".cache").mkdir()

    resolved = resolve("Tiny-Bert-Store", family)
    assert resolved.path == models_root / "LLM" / "Tiny-Bert-Store"
    assert resolved.spec is spec and resolved.source == "folder"
    # Registered keys first, then what is on disk; the installed spec is not listed twice, and
    # placeholders and hidden folders are not choices.
    assert available_choices(family) == ["Tiny-Bert-Store", "adapter.safetensors", "my-finetune"]
    # A name found on disk resolves without a spec.
    other = resolve("my-finetune", family)
    assert other.path == models_root / "LLM" / "my-finetune" and other.spec is None and other.source == "folder"


def test_repo_name_owner_subfolder_and_hf_cache_layouts_resolve(models_root, tiny_bert_source, specs, family):
    specs(key="Bert-A", family=family, folder="LLM", repo_id="org/bert-a-repo")
    specs(key="Bert-B", family=family, folder="LLM", repo_id="org/bert-b-repo")
    specs(key="Bert-C", family=family, folder="LLM", repo_id="org/bert-c-repo")
    install(tiny_bert_source, models_root / "LLM" / "bert-a-repo")                  # repo's last component
    install(tiny_bert_source, models_root / "LLM" / "org" / "bert-b-repo")          # owner/name sub-folders
    cache_entry = models_root / "LLM" / "models--org--bert-c-repo"                  # Hugging Face cache
    install(tiny_bert_source, cache_entry / "snapshots" / "0123abcd")
    (cache_entry / "refs").mkdir()
    (cache_entry / "refs" / "main").write_text("0123abcd")

    assert resolve("Bert-A", family).path == models_root / "LLM" / "bert-a-repo"
    assert resolve("Bert-B", family).path == models_root / "LLM" / "org" / "bert-b-repo"
    assert resolve("Bert-C", family).path == cache_entry / "snapshots" / "0123abcd"
    # The repo id names the same spec.
    assert resolve("org/bert-c-repo", family).spec.key == "Bert-C"
    assert available_choices(family) == ["Bert-A", "Bert-B", "Bert-C", "org"]


def test_absolute_and_home_paths_resolve(models_root, tiny_bert_source, tmp_path, monkeypatch, family):
    local = install(tiny_bert_source, tmp_path / "elsewhere" / "bert")
    resolved = resolve(str(local), family)
    assert resolved.path == local and resolved.source == "path" and resolved.spec is None

    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("~/elsewhere/bert", family).path == local

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "nope"), family)


def test_offline_missing_spec_names_files_folder_repo_and_licence(models_root, specs, family):
    specs(key="Gone-Model", family=family, folder="LLM", repo_id="owner/Gone-Model",
          licence="Apache-2.0", size_gb=1.5)
    with pytest.raises(ModelNotFoundError) as info:
        resolve("Gone-Model", family)
    message = str(info.value)
    assert "config.json" in message and "*.safetensors" in message
    assert str(models_root / "LLM" / "Gone-Model") in message
    assert "https://huggingface.co/owner/Gone-Model" in message and "1.5 GB" in message
    assert "HF_HUB_OFFLINE=1" in message and "Apache-2.0" in message
    assert info.value.repo_id == "owner/Gone-Model"
    assert not (models_root / "LLM" / "Gone-Model").exists()  # nothing half-created


def test_offline_unregistered_repo_id_names_folder_and_repo(models_root, specs, family):
    specs(key="Some-Known", family=family, folder="sam2")
    with pytest.raises(ModelNotFoundError) as info:
        resolve("acme/unknown-model", family)
    message = str(info.value)
    assert str(models_root / "sam2") in message and "https://huggingface.co/acme/unknown-model" in message


def test_incomplete_folder_lists_the_missing_files(models_root, tiny_bert_source, specs, family):
    specs(key="Half-Model", family=family, folder="LLM", repo_id="owner/Half-Model",
          required_files=("config.json", "*.safetensors", "tokenizer.json"))
    target = models_root / "LLM" / "Half-Model"
    target.mkdir(parents=True)
    shutil.copy(tiny_bert_source / "config.json", target)
    with pytest.raises(ModelNotFoundError) as info:
        resolve("Half-Model", family)
    assert info.value.missing == ("*.safetensors", "tokenizer.json")
    assert "incomplete" in str(info.value) and "*.safetensors, tokenizer.json" in str(info.value)
    assert str(target) in str(info.value)


def test_wrong_family_and_unknown_names_are_clear_errors(models_root, specs, family):
    specs(key="Other-Family-Model", family=family + "_other", folder="LLM")
    specs(key="Mine", family=family, folder="LLM")
    with pytest.raises(ModelNotFoundError, match=f"is a {family}_other model"):
        resolve("Other-Family-Model", family)
    with pytest.raises(ModelNotFoundError, match="hoose one of: Mine"):
        resolve("no-such-thing", family)
    with pytest.raises(ModelNotFoundError, match="No .* model chosen"):
        resolve("  ", family)
    assert issubclass(ModelNotFoundError, ValueError)


def test_family_folders_without_spec_are_searched(models_root, tiny_bert_source, family):
    register_family_folders(family, "diffusers")
    install(tiny_bert_source, models_root / "diffusers" / "user-model")
    assert available_choices(family) == ["user-model"]
    assert resolve("user-model", family).path == models_root / "diffusers" / "user-model"


# ---- downloading ----------------------------------------------------------------------------

class FakeHub:
    """Stands in for ``huggingface_hub.snapshot_download``: counts calls, writes the files."""

    def __init__(self, source: Path, fail_first: bool = False):
        self.source = source
        self.calls: list[dict] = []
        self.fail_first = fail_first

    def __call__(self, repo_id, *, local_dir, allow_patterns=None, **kwargs):
        self.calls.append({"repo_id": repo_id, "local_dir": Path(local_dir), "allow_patterns": allow_patterns})
        local_dir = Path(local_dir)
        local_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.source / "config.json", local_dir)
        if self.fail_first and len(self.calls) == 1:
            raise ConnectionError("connection reset by peer")
        shutil.copy(self.source / "model.safetensors", local_dir)
        return str(local_dir)


def test_download_happens_once_into_the_model_folder(models_root, tiny_bert_source, specs, family, monkeypatch):
    import huggingface_hub

    spec = specs(key="Hub-Bert", family=family, folder="LLM", repo_id="owner/hub-bert",
                 allow_patterns=("*.json", "*.safetensors"))
    hub = FakeHub(tiny_bert_source)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    first = resolve("Hub-Bert", family)
    second = resolve("Hub-Bert", family)
    assert len(hub.calls) == 1
    assert hub.calls[0] == {"repo_id": "owner/hub-bert", "local_dir": models_root / "LLM" / "Hub-Bert",
                            "allow_patterns": ["*.json", "*.safetensors"]}
    assert first.source == "hub" and second.source == "folder"
    assert first.path == second.path == models_root / "LLM" / "Hub-Bert" and second.spec is spec
    assert sorted(p.name for p in first.path.iterdir()) == sorted(TINY_BERT_FILES)

    # An unregistered repo id lands under its name in the family's folder, also only once.
    resolve("owner/adhoc-bert", family)
    resolve("owner/adhoc-bert", family)
    assert len(hub.calls) == 2 and hub.calls[1]["local_dir"] == models_root / "LLM" / "adhoc-bert"


def test_interrupted_download_resumes_into_the_same_folder(models_root, tiny_bert_source, specs, family, monkeypatch):
    import huggingface_hub

    specs(key="Flaky-Bert", family=family, folder="LLM", repo_id="owner/flaky-bert")
    hub = FakeHub(tiny_bert_source, fail_first=True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    monkeypatch.delenv("HF_HUB_OFFLINE")

    with pytest.raises(ModelNotFoundError, match="run again to resume") as info:
        resolve("Flaky-Bert", family)
    assert isinstance(info.value.__cause__, ConnectionError)
    resolved = resolve("Flaky-Bert", family)
    assert [c["local_dir"] for c in hub.calls] == [resolved.path, resolved.path]


def test_no_download_switch_and_gated_repo(models_root, tiny_bert_source, specs, family, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    specs(key="Gated-Bert", family=family, folder="LLM", repo_id="owner/gated-bert", gated=True)
    hub = FakeHub(tiny_bert_source)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("AGENTIC_EDIT_NO_DOWNLOAD", "1")
    with pytest.raises(ModelNotFoundError, match="AGENTIC_EDIT_NO_DOWNLOAD=1") as info:
        resolve("Gated-Bert", family)
    assert "gated" in str(info.value) and not hub.calls

    monkeypatch.delenv("AGENTIC_EDIT_NO_DOWNLOAD")
    response = types.SimpleNamespace(headers={}, request=None)

    def gated(*args, **kwargs):
        raise GatedRepoError("403 Client Error: access to model owner/gated-bert is restricted", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(ModelNotFoundError) as info:
        resolve("Gated-Bert", family)
    message = str(info.value)
    assert "https://huggingface.co/owner/gated-bert is gated" in message and "HF_TOKEN" in message
    assert str(models_root / "LLM" / "Gated-Bert") in message


# ---- loading, caching, freeing --------------------------------------------------------------

def test_acquire_loads_once_per_dtype_and_free_drops(models_root, tiny_bert_source, specs, family):
    specs(key="Cache-Bert", family=family, folder="LLM")
    install(tiny_bert_source, models_root / "LLM" / "Cache-Bert")
    builds = []

    def build(resolved, device, dtype):
        builds.append(dtype)
        return load_bert(resolved, device, dtype)

    a = acquire("Cache-Bert", family, build, device="cpu")
    b = acquire("Cache-Bert", family, build, device="cpu")
    half = acquire("Cache-Bert", family, build, dtype=torch.bfloat16, device="cpu")
    assert a is b and a is not half and builds == [torch.float32, torch.bfloat16]
    assert next(half.obj.parameters()).dtype == torch.bfloat16
    assert a.size_bytes == sum(p.numel() * 4 for p in a.obj.parameters()) + sum(
        t.numel() * t.element_size() for t in a.obj.buffers())
    with a.use() as model:
        hidden = bert_forward(model)
    assert hidden.shape == (1, 4, 16) and torch.isfinite(hidden).all()

    assert free(family) == 2 and loaded_models(family) == []
    again = acquire("Cache-Bert", family, build, device="cpu")
    assert again is not a and len(builds) == 3


def test_concurrent_acquire_builds_once(models_root, tiny_bert_source, specs, family):
    specs(key="Thread-Bert", family=family, folder="LLM")
    install(tiny_bert_source, models_root / "LLM" / "Thread-Bert")
    calls = []

    def slow_build(resolved, device, dtype):
        calls.append(threading.get_ident())
        time.sleep(0.3)
        return torch.nn.Linear(2, 2)

    results = []
    threads = [threading.Thread(target=lambda: results.append(acquire("Thread-Bert", family, slow_build, device="cpu")))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 4 and all(r is results[0] for r in results)


def test_torch_modules_found_in_pipelines_tuples_dicts_and_holders():
    unet, vae, text = torch.nn.Linear(4, 4), torch.nn.Conv2d(3, 3, 1), torch.nn.Embedding(10, 4)
    pipeline = types.SimpleNamespace(components={"unet": unet, "vae": vae, "scheduler": object(), "tokenizer": None})
    assert torch_modules(pipeline) == [unet, vae]
    assert torch_modules((text, "processor")) == [text]
    assert torch_modules({"model": unet, "extra": [vae, unet]}) == [unet, vae]

    class Engine:
        def __init__(self):
            self.model, self.threshold = text, 0.5

    assert torch_modules(Engine()) == [text]

    tied = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    tied[1].weight = tied[0].weight  # shared weights count once
    assert module_bytes([tied]) == 10 * 4 * 4


# ---- devices and memory profiles ------------------------------------------------------------

def test_pick_device_and_dtype():
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert pick_device().type == expected
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cpu", supported=(torch.bfloat16,)) == torch.bfloat16
    assert pick_dtype("mps") == torch.float16
    assert pick_dtype("cuda", supported=(torch.float16, torch.float32)) == torch.float16
    if torch.cuda.is_available():
        assert pick_dtype("cuda") == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
    with pytest.raises(ValueError, match="at least one dtype"):
        pick_dtype("cpu", supported=())


def test_memory_profile_setting_and_auto_decisions(monkeypatch):
    monkeypatch.delenv(devices.PROFILE_ENV, raising=False)
    set_memory_profile(None)
    try:
        assert memory_profile() is MemoryProfile.AUTO
        monkeypatch.setenv(devices.PROFILE_ENV, "LOW")
        assert memory_profile() is MemoryProfile.LOW
        set_memory_profile("high")
        assert memory_profile() is MemoryProfile.HIGH
        with pytest.raises(ValueError, match="unknown memory profile"):
            set_memory_profile("medium")
        set_memory_profile(None)
        monkeypatch.setenv(devices.PROFILE_ENV, "bogus")
        assert memory_profile() is MemoryProfile.AUTO

        # auto: on the CPU there is nowhere to offload to; on a GPU it depends on free memory.
        gib = 1024**3
        assert devices.effective_profile(10 * gib, "cpu") is MemoryProfile.HIGH
        monkeypatch.setattr(devices, "free_memory_bytes", lambda device: 20 * gib)
        assert devices.effective_profile(3 * gib, "cuda:0") is MemoryProfile.HIGH
        monkeypatch.setattr(devices, "free_memory_bytes", lambda device: 1 * gib)
        assert devices.effective_profile(3 * gib, "cuda:0") is MemoryProfile.LOW
        monkeypatch.setattr(devices, "free_memory_bytes", lambda device: None)
        assert devices.effective_profile(3 * gib, "cuda:0") is MemoryProfile.LOW
        set_memory_profile("high")
        assert devices.effective_profile(3 * gib, "cuda:0") is MemoryProfile.HIGH
    finally:
        set_memory_profile(None)


def test_use_offloads_after_the_block_only_under_low(models_root, tiny_bert_source, specs, family, monkeypatch):
    """On a CPU-only machine the compute device is the offload device, so what can be observed is
    the decision and the call; the CUDA test below observes the weights actually moving."""
    specs(key="Profile-Bert", family=family, folder="LLM")
    install(tiny_bert_source, models_root / "LLM" / "Profile-Bert")
    handle = acquire("Profile-Bert", family, load_bert, device="cpu")
    offloads = []
    monkeypatch.setattr(handle, "offload", lambda: offloads.append(handle.device))

    set_memory_profile("high")
    with handle.use() as model:
        with handle.use():  # nested use: offload waits for the outer block
            pass
        assert offloads == []
        bert_forward(model)
    assert offloads == []

    set_memory_profile("low")
    with handle.use():
        with handle.use():
            pass
        assert offloads == []
    assert offloads == [torch.device("cpu")]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to observe weights moving")
def test_use_moves_weights_to_gpu_and_back_under_low(models_root, tiny_bert_source, specs, family, monkeypatch):
    specs(key="Gpu-Bert", family=family, folder="LLM")
    install(tiny_bert_source, models_root / "LLM" / "Gpu-Bert")
    handle = acquire("Gpu-Bert", family, load_bert, dtype=torch.float32, device="cuda")
    assert handle.device == torch.device("cuda", torch.cuda.current_device())
    assert not handle.is_resident  # built on the CPU

    set_memory_profile("low")
    with handle.use() as model:
        assert handle.is_resident and next(model.parameters()).is_cuda
        reference = bert_forward(model).cpu()
    assert not handle.is_resident
    assert all(p.device.type == "cpu" for p in handle.obj.parameters())

    set_memory_profile("high")
    with handle.use() as model:
        assert torch.allclose(bert_forward(model).cpu(), reference, atol=1e-5)
    assert handle.is_resident  # high keeps it on the GPU

    # Outside ComfyUI the store makes room itself: with the device (made to look) full, using
    # another model offloads the idle resident one first.
    specs(key="Gpu-Bert-2", family=family, folder="LLM")
    install(tiny_bert_source, models_root / "LLM" / "Gpu-Bert-2")
    other = acquire("Gpu-Bert-2", family, load_bert, dtype=torch.float32, device="cuda")
    monkeypatch.setattr(cache, "free_memory_bytes", lambda device: 0 if handle._on_device() else 10 * 1024**3)
    with other.use() as model:
        assert other.is_resident and not handle.is_resident
        bert_forward(model)

    free(family)
    for model in (handle, other):  # freeing gives the GPU memory back
        assert all(p.device.type == "cpu" for p in model.obj.parameters())


# ---- inside ComfyUI -------------------------------------------------------------------------

def _comfyui_checkout() -> Path | None:
    for candidate in (os.environ.get("COMFYUI_PATH"), str(Path.home() / "comfy" / "ComfyUI")):
        if candidate and (Path(candidate).expanduser() / "folder_paths.py").is_file():
            return Path(candidate).expanduser()
    return None


def test_inside_comfyui(tmp_path):
    """Runs this file's inside-ComfyUI tests in a child process that imports a real ComfyUI.

    A child process because importing ComfyUI makes this process "inside ComfyUI" for good
    (``folder_paths`` and ``comfy.model_management`` in ``sys.modules``), which would change how
    every later test resolves models.
    """
    checkout = _comfyui_checkout()
    if checkout is None:
        pytest.skip("no ComfyUI checkout (COMFYUI_PATH or ~/comfy/ComfyUI)")
    pytest.importorskip("yaml")
    env = {**os.environ, INSIDE_COMFY_ENV: str(checkout), "HF_HUB_OFFLINE": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", "TestComfyChild",
         "--basetemp", str(tmp_path / "child")],
        cwd=Path(__file__).resolve().parent.parent, env=env, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "5 passed" in output, output[-3000:]


@pytest.fixture(scope="module")
def comfy(tmp_path_factory):
    """Import a real ComfyUI the way its own unit tests do (``--cpu`` unless there is a GPU; a
    models directory of our choosing)."""
    checkout = os.environ[INSIDE_COMFY_ENV]
    models_dir = tmp_path_factory.mktemp("comfy-models")
    sys.path.insert(0, checkout)
    from comfy.cli_args import args

    args.cpu = not torch.cuda.is_available()
    args.models_directory = str(models_dir)
    import folder_paths
    import comfy.model_management as mm

    # The pack's folders are registered by the first test, after a user's extra_model_paths.yaml
    # is loaded, in the order ComfyUI does both.
    return types.SimpleNamespace(folder_paths=folder_paths, mm=mm, models_dir=Path(models_dir))


class ComfyChildTests:
    """Run only in the child process of test_inside_comfyui, with a real ComfyUI imported
    (``Test`` prefix added there, so pytest collects them there and nowhere else)."""

    def test_registers_folders_without_clobbering_user_paths(self, comfy, tmp_path):
        from utils.extra_config import load_extra_path_config

        folder_paths = comfy.folder_paths
        models_dir = folder_paths.models_dir
        assert models_dir == str(comfy.models_dir)
        core_keys = {key: folder_paths.get_folder_paths(key) for key in ("diffusers", "checkpoints", "clip_vision")}

        # A user's extra_model_paths.yaml, loaded the way ComfyUI loads it: before custom nodes.
        extra = tmp_path / "big-disk"
        yaml_file = tmp_path / "extra_model_paths.yaml"
        yaml_file.write_text(f"mine:\n  base_path: {extra}\n  LLM: llm\n  catvton: tryon\n  diffusers: pipelines\n")
        load_extra_path_config(str(yaml_file))

        registered = paths.register_comfy_folders()
        assert {"LLM", "sam2", "catvton", "ipadapter", "fonts", "objectclear"} <= set(registered)
        after = {key: folder_paths.get_folder_paths(key) for key in registered}
        # The user's folders stay first (downloads go there); the models-dir folder is added after them.
        assert after["LLM"] == [str(extra / "llm"), os.path.join(models_dir, "LLM")]
        assert after["catvton"] == [str(extra / "tryon"), os.path.join(models_dir, "catvton")]
        assert after["sam2"] == [os.path.join(models_dir, "sam2")]
        # Core's keys are reused, not re-registered.
        assert folder_paths.get_folder_paths("diffusers") == core_keys["diffusers"] + [str(extra / "pipelines")]
        assert folder_paths.get_folder_paths("checkpoints") == core_keys["checkpoints"]

        paths.register_comfy_folders()  # idempotent
        assert {key: folder_paths.get_folder_paths(key) for key in registered} == after
        assert paths.folder_dirs("LLM") == [extra / "llm", comfy.models_dir / "LLM"]
        assert paths.download_dir("catvton") == extra / "tryon"

    def test_resolve_searches_extra_paths(self, comfy, tmp_path, family, specs, tiny_bert_source):
        specs(key="Extra-Bert", family=family, folder="LLM")
        extra = tmp_path / "another-disk" / "LLM"
        comfy.folder_paths.add_model_folder_path("LLM", str(extra))
        install(tiny_bert_source, extra / "Extra-Bert")
        install(tiny_bert_source, comfy.models_dir / "LLM" / "in-models-dir")
        assert resolve("Extra-Bert", family).path == extra / "Extra-Bert"
        assert resolve("in-models-dir", family).path == comfy.models_dir / "LLM" / "in-models-dir"
        assert {"Extra-Bert", "in-models-dir"} <= set(available_choices(family))

        # A spec whose folder key core does not have is registered on first use.
        specs(key="Late-Model", family=family, folder="agentic_edit_late_folder")
        with pytest.raises(ModelNotFoundError) as info:
            resolve("Late-Model", family)
        late_dir = os.path.join(comfy.folder_paths.models_dir, "agentic_edit_late_folder")
        assert comfy.folder_paths.get_folder_paths("agentic_edit_late_folder") == [late_dir]
        assert late_dir in str(info.value)

    def test_evicts_and_reloads_our_model(self, comfy, tmp_path, family, specs, tiny_bert_source):
        mm = comfy.mm
        set_memory_profile(None)
        specs(key="Evict-Bert", family=family, folder="LLM")
        install(tiny_bert_source, comfy.models_dir / "LLM" / "Evict-Bert")
        handle = acquire("Evict-Bert", family, load_bert)
        assert handle.device == torch.device(mm.get_torch_device()) and handle.comfy_registered
        patcher = handle._comfy.patcher

        with handle.use() as model:
            assert all(p.device == handle.device for p in model.parameters())
            reference = bert_forward(model).cpu()
        assert handle.is_resident and any(p is patcher for p in mm.loaded_models())

        mm.unload_all_models()  # what ComfyUI does when another model needs the memory
        assert not handle.is_resident and not any(p is patcher for p in mm.loaded_models())
        assert all(p.device == handle.offload_device for p in handle.obj.parameters())

        with handle.use() as model:  # loads again through ComfyUI
            assert handle.is_resident
            assert torch.allclose(bert_forward(model).cpu(), reference, atol=1e-5)
        assert any(p is patcher for p in mm.loaded_models())

        mm.free_memory(1e30, handle.device)
        assert not handle.is_resident

        with handle.use():
            pass
        free(family)
        assert not any(p is patcher for p in mm.loaded_models())

    def test_an_unload_comfy_decides_releases_the_engines_device_caches(self, comfy, family, specs,
                                                                      tiny_bert_source):
        """Recorded CUDA graphs and kept embeddings go when ComfyUI unloads the weights on its own,
        not at the engine's next call."""
        class CachedBert:
            def __init__(self, model):
                self.model, self.released = model, 0

            def torch_modules(self):
                return [self.model]

            def release_device_caches(self):
                self.released += 1

        mm = comfy.mm
        set_memory_profile(None)
        specs(key="Cached-Bert", family=family, folder="LLM")
        install(tiny_bert_source, comfy.models_dir / "LLM" / "Cached-Bert")
        handle = acquire("Cached-Bert", family, lambda *a: CachedBert(load_bert(*a)))
        with handle.use() as holder:
            bert_forward(holder.model)
        assert handle.obj.released == 0
        mm.unload_all_models()
        assert handle.obj.released == 1 and not handle.is_resident
        free(family)

    def test_low_profile_unloads_through_comfy(self, comfy, family, specs, tiny_bert_source):
        mm = comfy.mm
        specs(key="Low-Bert", family=family, folder="LLM")
        install(tiny_bert_source, comfy.models_dir / "LLM" / "Low-Bert")
        handle = acquire("Low-Bert", family, load_bert)
        set_memory_profile("low")
        try:
            with handle.use() as model:
                assert handle.is_resident
                bert_forward(model)
            assert not handle.is_resident
            assert not any(p is handle._comfy.patcher for p in mm.loaded_models())
        finally:
            set_memory_profile(None)
            free(family)


if os.environ.get(INSIDE_COMFY_ENV):
    TestComfyChild = ComfyChildTests

"""Cheap swapping in the model store: host copies (pinned when RAM allows), moving out an unchanged
model for free, partial residency, the load-once counter, shared components, and memory-profile
decisions under a per-process memory cap (simulated: this machine has no GPU)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from agentic_edit.models import (MemoryProfile, ModelSpec, acquire, free, load_device, register_spec,
                                 set_memory_profile, store_stats)
from agentic_edit.models import cache, devices, offload, paths, registry, shared, sizes
from agentic_edit.models.resolve import ResolvedModel
from tests.tiny_models.store_fixture import build_tiny_bert

GIB = 1024**3


@pytest.fixture(scope="module")
def bert_source(tmp_path_factory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("swap-bert") / "tiny-bert")


@pytest.fixture
def store(tmp_path, monkeypatch, bert_source):
    """A models root holding one tiny BERT under a fresh key and family; freed afterwards."""
    root = tmp_path / "models"
    family, key = f"swap_{uuid.uuid4().hex[:8]}", f"Swap-Bert-{uuid.uuid4().hex[:6]}"
    shutil.copytree(bert_source, root / "LLM" / key)
    monkeypatch.setenv(paths.MODELS_DIR_ENV, str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(devices.PROFILE_ENV, raising=False)
    register_spec(ModelSpec(key=key, family=family, folder="LLM", required_files=("config.json", "*.safetensors")))
    set_memory_profile(None)
    yield SimpleNamespace(root=root, family=family, key=key)
    free(family)
    registry.unregister_spec(key)
    set_memory_profile(None)


def load_bert(resolved, device, dtype):
    from transformers import BertModel

    return BertModel.from_pretrained(resolved.path, dtype=dtype).eval()


def forward(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 5, 9, 2]])).last_hidden_state


# ---- load once --------------------------------------------------------------------------------

def test_build_counter_counts_each_key_once_across_uses_and_profiles(store):
    before = store_stats.snapshot()
    handle = acquire(store.key, store.family, load_bert, device="cpu")
    for profile in ("high", "low", "auto", "low"):
        set_memory_profile(profile)
        again = acquire(store.key, store.family, load_bert, device="cpu")
        assert again is handle
        with again.use() as model:
            forward(model)
    delta = store_stats.difference(store_stats.snapshot(), before)
    assert delta["builds"] == 1 and list(delta["per_key_builds"].values()) == [1]
    assert store_stats.build_counts()[handle.key] >= 1
    assert delta["build_bytes"] == handle.size_bytes and delta["build_s"] > 0

    free(store.family)  # a fresh load after free is a second build, and counted as one
    acquire(store.key, store.family, load_bert, device="cpu")
    assert store_stats.difference(store_stats.snapshot(), before)["builds"] == 2


# ---- host copies ------------------------------------------------------------------------------

def test_pin_decision_follows_ram_devices_and_switch(monkeypatch):
    monkeypatch.delenv(offload.PIN_ENV, raising=False)
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert offload.should_pin(8 * GIB, cuda, cpu, available=64 * GIB, total=128 * GIB)[0]
    # 128 GiB machine: 15 % (19.2 GiB) must stay available.
    ok, why = offload.should_pin(16 * GIB, cuda, cpu, available=30 * GIB, total=128 * GIB)
    assert not ok and "must stay free" in why
    # Small machine: the 4 GiB floor applies.
    assert offload.should_pin(3 * GIB, cuda, cpu, available=8 * GIB, total=16 * GIB)[0]
    assert not offload.should_pin(5 * GIB, cuda, cpu, available=8 * GIB, total=16 * GIB)[0]
    assert not offload.should_pin(GIB, cpu, cpu, available=64 * GIB, total=128 * GIB)[0]
    monkeypatch.setattr(offload, "available_ram_bytes", lambda: None)   # RAM unknown: no pinning
    assert not offload.should_pin(GIB, cuda, cpu)[0]
    monkeypatch.setenv(offload.PIN_ENV, "0")
    assert offload.should_pin(GIB, cuda, cpu, available=64 * GIB, total=128 * GIB) == (False, f"{offload.PIN_ENV}=0")


def test_host_copy_is_one_aligned_buffer_and_ties_stay_tied():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 6), torch.nn.Linear(6, 10, bias=True),
                                torch.nn.BatchNorm1d(10))
    model[1].weight = model[0].weight  # tied, as embeddings and output heads often are
    tensors = offload.model_tensors([model])
    assert sum(t is model[0].weight for t in tensors) == 1   # one copy of a tied weight
    values = [t.detach().clone() for t in tensors]
    host = offload.capture(tensors, pin=False)       # on a machine without CUDA: pageable
    assert not host.pinned
    base = host.buffer.data_ptr()
    for tensor, value in zip(tensors, values):
        assert torch.equal(tensor, value)            # same values, now living in the buffer
        assert base <= tensor.data_ptr() < base + host.buffer.numel()
        assert (tensor.data_ptr() - base) % offload.ALIGN == 0
    assert host.nbytes >= sum(t.numel() * t.element_size() for t in tensors)
    assert model[1].weight is model[0].weight
    assert host.nbytes < sum(t.numel() * t.element_size() for t in tensors) + offload.ALIGN * len(tensors)


def _as_if_resident(host: offload.HostCopy, tensors: list[torch.Tensor]) -> None:
    """What ``move_in`` leaves behind: each tensor on its own memory, recorded as issued."""
    for tensor in tensors:
        offload._set(tensor, host.view(tensor).clone())
        host.issued[id(tensor)] = (tensor.data_ptr(), tensor._version)


def test_moving_out_copies_only_what_changed():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    tensors = offload.model_tensors([model])
    host = offload.capture(tensors, pin=False)
    _as_if_resident(host, tensors)
    with torch.no_grad():
        model[1].weight.add_(1.0)                    # changed in place (a fused LoRA, say)
    changed = model[1].weight.detach().clone()
    model[0].bias.data = torch.zeros(8)              # replaced
    result = offload.move_out(tensors, lambda t: host)
    assert result.nbytes == (8 * 4 + 8) * 4 and result.tensors == len(tensors)
    assert all(t.data_ptr() == host.view(t).data_ptr() for t in tensors)
    assert torch.equal(model[1].weight, changed) and torch.equal(model[0].bias, torch.zeros(8))

    _as_if_resident(host, tensors)                   # unchanged this time: nothing copied
    assert offload.move_out(tensors, lambda t: host).nbytes == 0
    _as_if_resident(host, tensors)                   # and with trust switched off, everything is
    assert offload.move_out(tensors, lambda t: host, trust_clean=False).nbytes == sum(
        t.numel() * 4 for t in tensors)


def test_offload_through_the_store_keeps_outputs(store, monkeypatch):
    """On the CPU the offload device is the compute device; force a host copy through the same code
    path by making the offload device look different, then check outputs are unchanged."""
    handle = acquire(store.key, store.family, load_bert, device="cpu")
    reference = forward(handle.obj)
    handle._ensure_host(handle.tensors())
    assert handle.pin_decision is not None and handle.pin_decision[0] is False
    assert all(cache._host_of(t) is not None for t in handle.tensors())
    assert torch.equal(forward(handle.obj), reference)
    free(store.family)
    assert not any(cache._host_of(t) for t in handle.tensors())  # host copies go with the model


# ---- partial residency ------------------------------------------------------------------------

def test_streamer_keeps_a_prefix_resident_within_the_budget():
    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(6)])
    unit_bytes = (16 * 16 + 16) * 4
    tensors = offload.model_tensors([model])
    host = offload.capture(tensors, pin=False)
    reference = model(torch.ones(2, 16))
    streamer = offload.Streamer(lambda t: host, [model], torch.device("cpu"), budget=2 * unit_bytes + 10)
    assert streamer.resident == [model[0], model[1]] and streamer.streamed == list(model)[2:]
    assert streamer.resident_bytes == 2 * unit_bytes and streamer.streamed_bytes == 4 * unit_bytes
    streamer.start()
    assert all(len(m._forward_pre_hooks) == 1 for m in streamer.streamed)
    assert torch.equal(model(torch.ones(2, 16)), reference)
    streamer.stop()
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model)
    # A budget of zero still keeps the first unit resident (libraries read the first parameter's device).
    assert offload.Streamer(lambda t: host, [model], torch.device("cpu"), budget=0).resident == [model[0]]


# ---- sizes and profiles under a cap -------------------------------------------------------------

def test_weight_size_estimate_reads_headers_and_counts_variants_once(tmp_path, bert_source):
    folder = tmp_path / "m"
    shutil.copytree(bert_source, folder)
    fp32 = sizes.estimate_weight_bytes(folder, torch.float32)
    params = sum(t.numel() for t in load_bert(SimpleNamespace(path=folder), "cpu", torch.float32).state_dict().values())
    assert fp32 == pytest.approx(params * 4, rel=0.05)
    shutil.copy(folder / "model.safetensors", folder / "model.fp16.safetensors")   # a variant: not twice
    assert sizes.estimate_weight_bytes(folder, torch.bfloat16) == pytest.approx(fp32 / 2, rel=0.05)
    assert sizes.estimate_weight_bytes(tmp_path / "empty-nothing", None) is None


class FakeCuda:
    """torch.cuda's memory queries for one 80 GiB device capped by a per-process fraction."""

    def __init__(self, fraction: float, allocated: int, reserved: int, driver_free: int):
        self.fraction, self.allocated, self.reserved, self.driver_free = fraction, allocated, reserved, driver_free

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=80 * GIB))
        monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda i=None: self.fraction)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=None: (self.driver_free, 80 * GIB))
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda i=None: self.allocated)
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i=None: self.reserved)


def test_free_memory_respects_the_per_process_cap(monkeypatch):
    cap24 = 24 / 80
    FakeCuda(cap24, allocated=16 * GIB, reserved=18 * GIB, driver_free=60 * GIB).install(monkeypatch)
    assert devices.device_cap_bytes("cuda:0") == int(80 * GIB * cap24)
    assert devices.free_memory_bytes("cuda:0") == pytest.approx(8 * GIB, abs=1024)   # the cap, not the card
    FakeCuda(1.0, allocated=16 * GIB, reserved=18 * GIB, driver_free=60 * GIB).install(monkeypatch)
    assert devices.free_memory_bytes("cuda:0") == 62 * GIB   # driver free + the allocator's unused blocks

    # auto under 24 GB: a 15.5 GiB Qwen leaves too little beside it (offload after use), SAM-2 does not.
    set_memory_profile("auto")
    try:
        FakeCuda(cap24, allocated=int(16.4 * GIB), reserved=17 * GIB, driver_free=60 * GIB).install(monkeypatch)
        assert devices.effective_profile(int(15.5 * GIB), "cuda:0") is MemoryProfile.LOW
        FakeCuda(cap24, allocated=int(1.3 * GIB), reserved=2 * GIB, driver_free=60 * GIB).install(monkeypatch)
        assert devices.effective_profile(int(0.9 * GIB), "cuda:0") is MemoryProfile.HIGH
    finally:
        set_memory_profile(None)


def test_a_cap_set_through_the_store_is_read_back_on_a_torch_without_the_getter(monkeypatch):
    FakeCuda(1.0, allocated=0, reserved=0, driver_free=80 * GIB).install(monkeypatch)
    monkeypatch.delattr(torch.cuda, "get_per_process_memory_fraction")
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i=None: calls.append((f, i)))
    monkeypatch.setattr(devices, "_fractions", {})
    devices.set_memory_fraction(0.15, "cuda:0")
    assert calls == [(0.15, 0)]
    assert devices.device_cap_bytes("cuda:0") == int(80 * GIB * 0.15)
    assert devices.free_memory_bytes("cuda:0") == int(80 * GIB * 0.15)


def test_load_device_loads_on_cpu_when_the_model_does_not_fit(store, monkeypatch):
    resolved = ResolvedModel(path=store.root / "LLM" / store.key, spec=None, source="path")
    nbytes = sizes.estimate_weight_bytes(resolved.path, torch.float32)
    monkeypatch.setattr(cache, "free_memory_bytes", lambda device: nbytes + 2 * cache.ROOM_HEADROOM_BYTES)
    monkeypatch.setattr(cache, "_normalize_device", lambda device: torch.device("cuda", 0))
    assert load_device(resolved, "cuda", torch.float32) == torch.device("cuda", 0)
    monkeypatch.setattr(cache, "free_memory_bytes", lambda device: nbytes)       # no room for the headroom
    assert load_device(resolved, "cuda", torch.float32) == torch.device("cpu")
    assert load_device(resolved, "cpu", torch.float32) == torch.device("cpu")


def test_making_room_offloads_idle_models_least_recently_used_first(monkeypatch):
    """Three idle models 'on the GPU' (simulated), a load that needs two of them out."""
    offloaded = []

    class Idle:
        def __init__(self, name, used, nbytes):
            self.name, self.last_used, self.nbytes, self.device, self._users = name, used, nbytes, torch.device("cuda", 0), 0
            self.resolved = SimpleNamespace(path=Path(name))

        def _device_bytes(self):
            return 0 if self.name in offloaded else self.nbytes

        def offload(self):
            offloaded.append(self.name)

    models = [Idle("sdxl", 2.0, 7 * GIB), Idle("sam", 1.0, GIB), Idle("busy", 0.5, 4 * GIB)]
    models[2]._users = 1
    monkeypatch.setattr(cache, "loaded_models", lambda family=None: models)
    monkeypatch.setattr(cache, "free_memory_bytes",
                        lambda device: 24 * GIB - sum(m._device_bytes() for m in models) - 4 * GIB)
    free_after = cache._make_room_outside_comfy(int(15.5 * GIB), torch.device("cuda", 0), keep=None)
    assert offloaded == ["sam", "sdxl"] and free_after == 16 * GIB   # the model in use stays


# ---- shared components ------------------------------------------------------------------------

def test_shared_component_loads_once_per_path_and_dtype(tmp_path):
    calls = []

    def load():
        calls.append(1)
        return torch.nn.Linear(2, 2)

    folder = tmp_path / "text_encoder"
    folder.mkdir()
    link = tmp_path / "alias"
    link.symlink_to(folder)
    a = shared.shared_component(folder, torch.float16, load)
    assert shared.shared_component(link, torch.float16, load) is a          # same files through a symlink
    assert shared.shared_component(folder, torch.float32, load) is not a    # another dtype
    assert shared.shared_component(tmp_path / "other", torch.float16, load) is not a
    assert len(calls) == 3
    kept = shared.component_key(folder, torch.float16)
    assert shared.shared_loads()[kept] == 1
    del a
    import gc

    gc.collect()
    assert kept not in shared.live_components()   # weakly held: gone with the last engine holding it
    with pytest.raises(TypeError, match="not a torch module"):
        shared.shared_component(tmp_path / "bad", torch.float16, lambda: object())


def test_two_inpaint_pipelines_on_the_same_files_share_their_text_encoders(tiny_models_dir, tmp_path):
    from agentic_edit.engines.inpaint_loader import SDXL, load_folder

    folder = tiny_models_dir / "diffusers" / "stable-diffusion-xl-1.0-inpainting-0.1"
    alias = tmp_path / "objectclear-like"
    alias.symlink_to(folder)      # another engine's folder holding the same files
    before = store_stats.snapshot()
    first = load_folder(folder, SDXL, torch.float32)
    second = load_folder(alias, SDXL, torch.float32)
    assert first.text_encoder is second.text_encoder and first.text_encoder_2 is second.text_encoder_2
    assert first.unet is not second.unet
    assert store_stats.difference(store_stats.snapshot(), before)["shared_hits"] == 2

    # Offloading one model leaves alone the tensors it shares with a model that is in use.
    using = SimpleNamespace(_users=1, tensors=lambda: offload.model_tensors([second.text_encoder]))
    idle = SimpleNamespace(_users=0, tensors=lambda: [])
    original = cache.loaded_models
    try:
        cache.loaded_models = lambda family=None: [using, idle]
        busy = cache._tensors_in_use(exclude=idle)
    finally:
        cache.loaded_models = original
    assert {id(t) for t in offload.model_tensors([first.text_encoder])} <= busy


# ---- on a GPU: the real round trip ----------------------------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to move weights")
def test_round_trip_on_gpu_is_exact_and_moving_out_unchanged_weights_copies_nothing(store):
    set_memory_profile("low")
    handle = acquire(store.key, store.family, load_bert, dtype=torch.float32, device="cuda")
    with handle.use() as model:
        reference = model(input_ids=torch.tensor([[1, 5, 9, 2]], device="cuda")).last_hidden_state.cpu()
    assert not handle.is_resident and cache._host_of(handle.tensors()[0]) is not None
    before = store_stats.snapshot()
    with handle.use() as model:
        again = model(input_ids=torch.tensor([[1, 5, 9, 2]], device="cuda")).last_hidden_state.cpu()
    delta = store_stats.difference(store_stats.snapshot(), before)
    assert torch.equal(again, reference)
    assert delta["moves_in"] == 1 and delta["offloads"] == 1 and delta["offload_bytes"] == 0
    assert cache._host_of(handle.tensors()[0]).pinned == handle.pin_decision[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU to stream weights")
def test_a_model_that_does_not_fit_is_streamed_with_the_same_outputs(store, monkeypatch):
    set_memory_profile("high")
    handle = acquire(store.key, store.family, load_bert, dtype=torch.float32, device="cuda")
    ids = torch.tensor([[1, 5, 9, 2]], device="cuda")
    with handle.use() as model:
        reference = model(input_ids=ids).last_hidden_state.cpu()
    handle.offload()
    # Pretend only a sliver is free: the store keeps a prefix resident and streams the rest.
    monkeypatch.setattr(cache, "free_memory_bytes", lambda device: handle.size_bytes // 2 + cache.ROOM_HEADROOM_BYTES)
    before = store_stats.snapshot()
    with handle.use() as model:
        assert handle.is_streaming and not handle.is_resident
        streamed = model(input_ids=ids).last_hidden_state.cpu()
    assert torch.equal(streamed, reference)
    assert store_stats.difference(store_stats.snapshot(), before)["streamed_bytes"] > 0

"""The Qwen2.5-VL speed path (engines/qwen_fast.py) gives the bare model's outputs.

A tiny random Qwen2.5-VL (tests/tiny_models recipe) with a 4-block vision tower, two windowed and
two full-attention blocks. Window 112 px = 4 merged tokens = 8 patches a side, so a 20x28-patch grid
has 12 windows of three sizes (64 patches inside, 32 on the right and bottom edges, 16 in the corner).
Everything runs in float32 on the CPU, where the grouped attention is exactly the bare loop's maths.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agentic_edit.engines import qwen_fast
from tests.tiny_models.qwen2_5_vl import build_processor, tiny_config

PATCH_FEATURES = 3 * 2 * 14 * 14      # channels x temporal patch x patch x patch
WINDOWED_BLOCKS, FULL_BLOCKS = 2, 2
# grid (t, h, w) per image -> SDPA calls per windowed block and per full block, bare and batched.
# 20x28 patches = 10x14 merged: windows of 4x4, 4x2, 2x4 and 2x2 merged tokens = 64, 32, 32, 16 patches.
# 6x10 = 3x5 merged: windows of 3x4 and 3x1 = 48 and 12 patches. 4x6: one window. t=2: a window per frame.
GRIDS = {
    "edge windows": ([[1, 20, 28]], dict(bare=(12, 1), batched=(3, 1))),
    "two images": ([[1, 20, 28], [1, 6, 10]], dict(bare=(14, 2), batched=(5, 2))),
    "under one window": ([[1, 4, 6]], dict(bare=(1, 1), batched=(1, 1))),
    "two frames": ([[2, 8, 8]], dict(bare=(2, 2), batched=(1, 1))),
}


def _model(tokenizer, depth=WINDOWED_BLOCKS + FULL_BLOCKS, full_blocks=(1, 3)):
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = tiny_config(tokenizer)
    config.vision_config.depth = depth
    config.vision_config.fullatt_block_indexes = list(full_blocks)
    torch.manual_seed(0)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


@pytest.fixture(scope="module")
def processor():
    return build_processor()


@pytest.fixture()
def model(processor):
    return _model(processor.tokenizer)


@pytest.fixture(scope="module")
def inputs(processor):
    """A real processor output for a 280x392 image (a 20x28 patch grid: edge windows included)."""
    rgb = (np.random.default_rng(0).random((280, 392, 3)) * 255).astype(np.uint8)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "find the red cup"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encoded = processor(text=[text], images=[rgb], return_tensors="pt",
                        images_kwargs={"size": {"shortest_edge": 56 * 56, "longest_edge": 200 * 28 * 28}})
    assert encoded["image_grid_thw"].tolist() == [[1, 20, 28]]
    return encoded


class SdpaCounter:
    def __init__(self, monkeypatch):
        self.calls = 0
        original = torch.nn.functional.scaled_dot_product_attention

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counted)


def _vision(model, grid):
    torch.manual_seed(1)
    pixels = torch.randn(int(torch.tensor(grid).prod(-1).sum()), PATCH_FEATURES)
    with torch.inference_mode():
        out = model.model.visual(pixels, grid_thw=torch.tensor(grid))
    return out.last_hidden_state, out.pooler_output


@pytest.mark.parametrize("case", list(GRIDS))
def test_vision_tower_equals_bare_with_one_call_per_window_size(model, monkeypatch, case):
    grid, calls = GRIDS[case]
    counter = SdpaCounter(monkeypatch)
    bare_hidden, bare_merged = _vision(model, grid)
    bare_calls = counter.calls
    assert qwen_fast.enable_batched_window_attention(model, "grouped") == qwen_fast.GROUPED
    counter.calls = 0
    hidden, merged = _vision(model, grid)

    torch.testing.assert_close(hidden, bare_hidden, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged, bare_merged, rtol=1e-5, atol=1e-6)
    assert merged.shape == (sum(t * h * w for t, h, w in grid) // 4, 32)
    windowed, full = calls["bare"]
    assert bare_calls == WINDOWED_BLOCKS * windowed + FULL_BLOCKS * full
    windowed, full = calls["batched"]
    assert counter.calls == WINDOWED_BLOCKS * windowed + FULL_BLOCKS * full


def test_window_layout_is_read_from_the_device_once_per_forward(processor, monkeypatch):
    """Device-to-host reads (``.tolist()``, a sync on a GPU) must not grow with the number of blocks."""
    reads = {"n": 0}
    original = torch.Tensor.tolist

    def counted(self):
        reads["n"] += 1
        return original(self)

    def reads_of(model):
        reads["n"] = 0
        _vision(model, grid)
        return reads["n"]

    grid = [[1, 20, 28]]
    shallow = _model(processor.tokenizer)
    deep = _model(processor.tokenizer, depth=8, full_blocks=[1, 3, 5, 7])
    monkeypatch.setattr(torch.Tensor, "tolist", counted)
    assert reads_of(deep) > reads_of(shallow)                 # the bare loop reads in every block
    for model in (shallow, deep):
        qwen_fast.enable_batched_window_attention(model, "grouped")
    assert reads_of(deep) == reads_of(shallow)

    built = []
    monkeypatch.setattr(qwen_fast, "_build_layout", lambda *a: built.append(a) or pytest.fail("rebuilt"))
    _vision(deep, grid)   # same grid again: the cached index tensors are reused
    assert built == []


def test_full_model_logits_and_greedy_tokens_equal_bare(model, inputs):
    with torch.inference_mode():
        bare_logits = model(**inputs).logits
        bare = model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    assert int(model.model.rope_deltas.abs().sum()) > 0      # the image really shifts the mrope positions

    qwen_fast.enable_batched_window_attention(model, "grouped")
    with torch.inference_mode():
        logits = model(**inputs).logits
        batched = model.generate(**inputs, max_new_tokens=12, min_new_tokens=12, do_sample=False)
    torch.testing.assert_close(logits, bare_logits, rtol=1e-5, atol=1e-5)
    assert batched.tolist() == bare.tolist()

    static = qwen_fast.fast_generate(model, inputs, 12, compile=False, min_new_tokens=12, do_sample=False)
    assert static.tolist() == bare.tolist()
    qwen_fast.disable_batched_window_attention(model)
    static_bare_vision = qwen_fast.fast_generate(model, inputs, 12, compile=False, min_new_tokens=12,
                                                 do_sample=False)
    assert static_bare_vision.tolist() == bare.tolist()


@pytest.mark.slow
def test_compiled_decode_step_gives_the_same_tokens(model, inputs):
    with torch.inference_mode():
        bare = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    qwen_fast.enable_batched_window_attention(model)
    # The "eager" dynamo backend traces the decode step as inductor would, without minutes of C++ builds.
    compiled = qwen_fast.fast_generate(model, inputs, 8, compile=True, compile_mode=None, compile_backend="eager",
                                       min_new_tokens=8, do_sample=False)
    assert compiled.tolist() == bare.tolist()
    assert hasattr(model, "_compiled_call")   # transformers really took the compiled decode path


def test_varlen_backend_hands_packed_tensors_to_the_kernel(model, monkeypatch):
    """Off CUDA, varlen runs as grouped; here a reference kernel stands in for flash varlen to check the glue."""
    seen = []

    def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None):
        assert q.dim() == 3 and q.is_contiguous() and cu_q.dtype == torch.int32 and isinstance(max_q, int)
        bounds = cu_q.tolist()
        seen.append(max_q == max(b - a for a, b in zip(bounds, bounds[1:])))
        parts = [torch.nn.functional.scaled_dot_product_attention(
            *(t[a:b].transpose(0, 1)[None] for t in (q, k, v)), scale=scale)[0].transpose(0, 1)
            for a, b in zip(bounds, bounds[1:])]
        return torch.cat(parts)

    grid = GRIDS["two images"][0]
    bare = _vision(model, grid)
    monkeypatch.setattr(qwen_fast, "_varlen_kernel", lambda: reference_varlen)
    monkeypatch.setattr(qwen_fast, "_varlen_usable", lambda query: True)
    assert qwen_fast.enable_batched_window_attention(model, "varlen") == qwen_fast.VARLEN
    batched = _vision(model, grid)
    for got, want in zip(batched, bare):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert seen and all(seen)


def test_varlen_falls_back_to_grouped_off_cuda(model):
    grid = GRIDS["edge windows"][0]
    bare = _vision(model, grid)
    qwen_fast.enable_batched_window_attention(model, "varlen")
    for got, want in zip(_vision(model, grid), bare):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_enable_touches_only_the_vision_tower_and_disable_restores_it(model):
    assert not qwen_fast.batched_window_attention_enabled(model)
    qwen_fast.enable_batched_window_attention(model, "grouped")
    qwen_fast.enable_batched_window_attention(model, "varlen")      # switching backends keeps the original
    assert qwen_fast.batched_window_attention_enabled(model)
    assert model.config.text_config._attn_implementation == "sdpa"
    assert model.model.language_model.config._attn_implementation == "sdpa"
    qwen_fast.disable_batched_window_attention(model)
    assert not qwen_fast.batched_window_attention_enabled(model)
    assert model.model.visual.config._attn_implementation == "sdpa"
    qwen_fast.disable_batched_window_attention(model)                # a second disable is harmless


def test_bad_backend_and_foreign_models_are_refused(model, monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        qwen_fast.enable_batched_window_attention(model, "fast")
    with pytest.raises(qwen_fast.UnsupportedModelError, match="vision tower"):
        qwen_fast.enable_batched_window_attention(torch.nn.Linear(2, 2))
    # A transformers whose vision attention always loops over windows: refused, model untouched.
    monkeypatch.setattr(qwen_fast.inspect, "getsource", lambda obj: "def forward(self): pass")
    with pytest.raises(qwen_fast.UnsupportedModelError, match="cannot be enabled"):
        qwen_fast.enable_batched_window_attention(model)
    assert model.model.visual.config._attn_implementation == "sdpa"


def test_fast_generation_config(model):
    base = model.generation_config
    config = qwen_fast.fast_generation_config(model, 12, compile=False, do_sample=False, min_new_tokens=12)
    assert config.max_new_tokens == 12 and config.min_new_tokens == 12 and config.do_sample is False
    assert config.disable_compile and config.cache_implementation is None   # the cache is passed in
    assert base.min_new_tokens in (None, 0)                                 # the model's own config is untouched
    compiled = qwen_fast.fast_generation_config(model, 5, compile=True)
    assert not compiled.disable_compile and compiled.compile_config.mode == "reduce-overhead"
    assert compiled.compile_config._compile_all_devices                     # this model is on the CPU
    with pytest.raises(ValueError, match="max_new_tokens"):
        qwen_fast.fast_generation_config(model, 0)
    with pytest.raises(ValueError, match="not generation settings"):
        qwen_fast.fast_generation_config(model, 5, stopping_criterium=1)
    with pytest.raises(ValueError, match="input_ids"):
        qwen_fast.fast_generate(model, {}, 5)
    with pytest.raises(ValueError, match="cache_bucket"):
        qwen_fast.fast_generate(model, {"input_ids": torch.ones(1, 3, dtype=torch.long)}, 5, cache_bucket=0)


def test_static_cache_is_kept_per_model_and_grows_in_buckets(model, inputs):
    """One cache object per model: CUDA graphs of the compiled step keep pointing at the same memory."""
    prompt = inputs["input_ids"].shape[1]
    first = qwen_fast.fast_generate(model, inputs, 4, compile=False, min_new_tokens=4, do_sample=False)
    slot = qwen_fast._STATIC_CACHES[model]
    assert slot.length == -(-(prompt + 4) // qwen_fast.DEFAULT_CACHE_BUCKET) * qwen_fast.DEFAULT_CACHE_BUCKET
    again = qwen_fast.fast_generate(model, inputs, 4, compile=False, min_new_tokens=4, do_sample=False)
    assert qwen_fast._STATIC_CACHES[model] is slot and again.tolist() == first.tolist()   # reset, reused

    longer = qwen_fast.fast_generate(model, inputs, 4, compile=False, min_new_tokens=4, do_sample=False,
                                     cache_bucket=prompt + 100)
    grown = qwen_fast._STATIC_CACHES[model]
    assert grown is not slot and grown.length == prompt + 100 and longer.tolist() == first.tolist()
    qwen_fast.fast_generate(model, inputs, 4, compile=False, min_new_tokens=4, do_sample=False)
    assert qwen_fast._STATIC_CACHES[model] is grown                       # a shorter call fits: no shrinking
    qwen_fast.release_static_cache(model)
    assert model not in qwen_fast._STATIC_CACHES

"""Add-it's extended attention on a tiny random FLUX transformer (tests/tiny_models/flux.py config):
with the extension off the processors compute diffusers' FLUX step; with it on the source stream is
untouched, the target attends to the source's image tokens with its own keys scaled by gamma (checked
against an explicit softmax); the automatic gamma's search; the subject map's recording."""

from __future__ import annotations

import pytest
import torch

from agentic_edit.engines import addit_attention as attention
from agentic_edit.engines.addit_run import image_ids
from tests.tiny_models.flux import tiny_transformer_config

TEXT, GRID_H, GRID_W = 6, 3, 5  # 6 text tokens, a 3x5 token grid (a 48x80-pixel image)


@pytest.fixture(scope="module")
def transformer():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**tiny_transformer_config()).eval()
    with torch.no_grad():  # random (not zero-initialised) output layers, so every block shows in the output
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def _inputs(seed: int = 1, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    tokens = GRID_H * GRID_W
    return {"hidden_states": torch.randn(batch, tokens, 16, generator=g),
            "encoder_hidden_states": torch.randn(batch, TEXT, 32, generator=g),
            "pooled_projections": torch.randn(batch, 32, generator=g),
            "timestep": torch.full((batch,), 0.7), "guidance": torch.tensor([1.0, 3.5][:batch]),
            "txt_ids": torch.zeros(TEXT, 3), "img_ids": image_ids(GRID_H, GRID_W, "cpu", torch.float32)}


@torch.no_grad()
def _run(transformer, inputs, state=None):
    if state is None:
        attention.uninstall(transformer)
    else:
        attention.install(transformer, state)
    try:
        return transformer(**inputs, return_dict=False)[0]
    finally:
        attention.uninstall(transformer)


def test_with_the_extension_off_the_step_is_plain_flux(transformer):
    inputs = _inputs()
    plain = _run(transformer, inputs)
    ours = _run(transformer, inputs, attention.AdditState(text_len=TEXT))
    torch.testing.assert_close(ours, plain, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kinds", [{attention.DOUBLE}, {attention.SINGLE}, {attention.DOUBLE, attention.SINGLE}])
def test_the_target_attends_to_the_source_and_the_source_is_untouched(transformer, kinds):
    inputs = _inputs()
    plain = _run(transformer, inputs)
    extended = _run(transformer, inputs, attention.AdditState(text_len=TEXT, extend=set(kinds), gamma=1.05))
    torch.testing.assert_close(extended[0], plain[0], rtol=1e-5, atol=1e-6)   # the source never looks at the target
    assert (extended[1] - plain[1]).abs().max() > 1e-4                         # the target does look at the source

    other = dict(inputs, hidden_states=inputs["hidden_states"].clone())
    other["hidden_states"][0] += 1.0  # a different source image
    state = attention.AdditState(text_len=TEXT, extend=set(kinds), gamma=1.05)
    assert (_run(transformer, other, state)[1] - extended[1]).abs().max() > 1e-4
    # without the extension the target ignores the source entirely
    off = attention.AdditState(text_len=TEXT)
    torch.testing.assert_close(_run(transformer, other, off)[1], plain[1], rtol=1e-5, atol=1e-6)


def _explicit_reference(attn, hidden, rotary, text, gamma):
    """The single-block attention of the two streams written out: target keys [source image ; gamma * target]."""
    from diffusers.models.embeddings import apply_rotary_emb

    def heads(x):
        return x.unflatten(-1, (-1, attn.head_dim))

    q = apply_rotary_emb(attn.norm_q(heads(attn.to_q(hidden))), rotary, sequence_dim=1)
    k = apply_rotary_emb(attn.norm_k(heads(attn.to_k(hidden))), rotary, sequence_dim=1)
    v = heads(attn.to_v(hidden))
    scale = attn.head_dim ** -0.5

    def softmax_attend(q, k, v, key_scale):
        logits = torch.einsum("qhd,khd->hqk", q, k) * scale * key_scale[None, None, :]
        return torch.einsum("hqk,khd->qhd", logits.softmax(-1), v)

    source = softmax_attend(q[0], k[0], v[0], torch.ones(k.shape[1]))
    keys = torch.cat([k[0, text:], k[1]])
    key_scale = torch.cat([torch.ones(k.shape[1] - text), torch.full((k.shape[1],), gamma)])
    target = softmax_attend(q[1], keys, torch.cat([v[0, text:], v[1]]), key_scale)
    return torch.stack([source, target]).flatten(2)


@pytest.mark.parametrize("gamma", [1.0, 1.2, 2.0])
@torch.no_grad()
def test_gamma_scales_the_targets_own_keys(transformer, gamma):
    block = transformer.single_transformer_blocks[0]
    tokens = TEXT + GRID_H * GRID_W
    hidden = torch.randn(2, tokens, 32, generator=torch.Generator().manual_seed(3))
    ids = torch.cat([torch.zeros(TEXT, 3), image_ids(GRID_H, GRID_W, "cpu", torch.float32)])
    rotary = transformer.pos_embed(ids)
    state = attention.AdditState(text_len=TEXT, extend={attention.SINGLE}, gamma=gamma)
    ours = attention.AdditAttnProcessor(state, attention.SINGLE)(block.attn, hidden, image_rotary_emb=rotary)
    torch.testing.assert_close(ours, _explicit_reference(block.attn, hidden, rotary, TEXT, gamma),
                               rtol=1e-4, atol=1e-5)


def test_the_mass_ratio_grows_with_gamma_and_the_automatic_gamma_hits_its_target(transformer):
    inputs = _inputs()
    state = attention.AdditState(text_len=TEXT, extend={attention.DOUBLE, attention.SINGLE})

    def measure(gamma):
        state.gamma = gamma
        state.reset_records()
        state.record_mass = True
        _run(transformer, inputs, state)
        state.record_mass = False
        return state.mass_ratio

    ratios = [measure(g) for g in (0.8, 1.0, 1.2, 1.6)]
    assert all(a < b for a, b in zip(ratios, ratios[1:])), ratios
    target = (ratios[1] + ratios[2]) / 2  # reachable inside [1, 1.2]: Brent's method must find it
    gamma, tried = attention.solve_gamma(measure, 1.0, 1.2, target_ratio=target, tolerance=1e-3)
    assert 1.0 < gamma < 1.2 and abs(measure(gamma) - target) < 0.02 * target, tried
    # out of reach: clamped to the bounds after one or two evaluations
    assert attention.solve_gamma(measure, 1.0, 1.2, target_ratio=ratios[1] * 0.5)[0] == 1.0
    low_high = attention.solve_gamma(measure, 1.0, 1.2, target_ratio=ratios[3] * 10)
    assert low_high[0] == 1.2 and len(low_high[1]) == 2


def test_solve_gamma_bisects_without_scipy(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    gamma, _ = attention.solve_gamma(lambda g: 10 * (g - 1) + 1, 1.0, 1.2, target_ratio=1.5, tolerance=1e-4)
    assert gamma == pytest.approx(1.05, abs=1e-3)


def test_the_subject_map_is_recorded_on_every_block(transformer):
    state = attention.AdditState(text_len=TEXT, subject_tokens=[2, 3], record_subject=True)
    _run(transformer, _inputs(), state)
    assert state.subject_layers == 4  # 2 double + 2 single blocks
    assert state.subject_map.shape == (GRID_H * GRID_W,)
    # softmax over the text tokens: two of six tokens take a share in (0, 2) per layer
    assert torch.all(state.subject_map > 0) and torch.all(state.subject_map < 2 * 4)


def test_block_streamer_runs_each_block_from_a_fresh_copy_and_computes_the_same(transformer):
    import copy

    from agentic_edit.engines.addit_loader import BlockStreamer

    inputs = _inputs()
    expected = _run(transformer, inputs)
    streamed = copy.deepcopy(transformer)
    blocks = [*streamed.transformer_blocks, *streamed.single_transformer_blocks]
    streamer = BlockStreamer(blocks, torch.device("cpu"))
    seen = []

    def check(module, args):  # runs after the streamer's own pre-hook: the block holds device copies now
        index = blocks.index(module)
        seen.append(all(t.data_ptr() != host.data_ptr() for t, host in streamer.host[index]))

    for block in blocks:
        block.register_forward_pre_hook(check)
    torch.testing.assert_close(_run(streamed, inputs), expected)
    assert seen == [True] * len(blocks)
    assert set(streamer.pending) == {0}  # the first block is already prefetched for the next step
    assert all(t.data_ptr() == host.data_ptr() for i in range(1, len(blocks)) for t, host in streamer.host[i])
    streamer.release()
    assert streamer.pending == {} and streamer.host_bytes > 0

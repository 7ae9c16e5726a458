"""engines/compiled_vae.py: when the VAE is compiled, that the plain forward comes back, and (on CUDA)
that the compiled round trip matches the eager one."""

from __future__ import annotations

import pytest
import torch

from agentic_edit.engines.compiled_vae import compiled_vae, why_not_compiled
from tests.tiny_models.sd_inpaint import tiny_vae


@pytest.fixture
def vae():
    torch.manual_seed(0)
    return tiny_vae().eval()


@pytest.fixture
def compile_on(monkeypatch):
    monkeypatch.setenv("AGENTIC_EDIT_COMPILE", "1")


def test_off_unless_asked(vae, monkeypatch):
    monkeypatch.delenv("AGENTIC_EDIT_COMPILE", raising=False)
    assert "AGENTIC_EDIT_COMPILE" in why_not_compiled(vae)
    assert why_not_compiled(vae, enabled=False) == "turned off by the caller"


def test_cpu_vae_stays_eager_and_untouched(vae, compile_on):
    assert why_not_compiled(vae) == "the VAE is not on a CUDA device"
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = vae.decode(vae.encode(image).latent_dist.mean).sample
        with compiled_vae(vae) as compiled:
            assert compiled is False
            assert "forward" not in vae.encoder.__dict__
            got = vae.decode(vae.encode(image).latent_dist.mean).sample
    assert torch.equal(got, expected)


def test_hooks_inside_keep_it_eager(vae, compile_on):
    # The store's streaming hooks units inside the model: a compiled forward would not see the moves.
    handle = vae.decoder.up_blocks[0].register_forward_pre_hook(lambda *_: None)
    try:
        assert "hooked" in why_not_compiled(vae)
    finally:
        handle.remove()
    # A hook on the decoder itself runs outside its forward, so it does not count.
    handle = vae.decoder.register_forward_pre_hook(lambda *_: None)
    try:
        assert why_not_compiled(vae) == "the VAE is not on a CUDA device"
    finally:
        handle.remove()


def test_fp16_upcasting_vae_stays_eager(vae, compile_on):
    vae.register_to_config(force_upcast=True)
    assert why_not_compiled(vae.to(torch.float16)) == "the VAE upcasts fp16 to fp32 on every call"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="compiles for a CUDA device")
def test_compiled_round_trip_matches_eager_and_restores_forward(vae, compile_on, monkeypatch):
    # fp32 without TF32 convolutions, so that the comparison is about the program, not about rounding.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    vae = vae.to("cuda")
    image = torch.rand(1, 3, 64, 48, device="cuda") * 2 - 1
    with torch.no_grad():
        expected = vae.decode(vae.encode(image).latent_dist.mean).sample
        for _ in range(2):  # the second call reuses the program
            with compiled_vae(vae) as compiled:
                assert compiled is True, why_not_compiled(vae)
                assert "forward" in vae.encoder.__dict__ and "forward" in vae.decoder.__dict__
                got = vae.decode(vae.encode(image).latent_dist.mean).sample
            assert "forward" not in vae.encoder.__dict__ and "forward" not in vae.decoder.__dict__
    error = ((got - expected).norm() / expected.norm()).item()
    assert error < 1e-4, f"compiled vs eager relative error {error:.2e}"

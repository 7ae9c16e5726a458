"""engines/sdpa_choice.py: which SDPA backend the CatVTON loop puts first, read from
AGENTIC_EDIT_SDPA and the device, and that the process-wide SDPA flags come back as they were."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from agentic_edit.engines import sdpa_choice


def _state():
    return torch._C._get_sdp_priority_order(), sdpa_choice._enabled()


@pytest.mark.parametrize("value, expected", [(None, "auto"), ("", "auto"), ("AUTO", "auto"), ("torch", "torch"),
                                             ("0", "torch"), ("off", "torch"), (" cuDNN ", "cudnn"),
                                             ("flash", "flash"), ("efficient", "efficient"), ("math", "math")])
def test_the_setting_is_read_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(sdpa_choice.ENV, raising=False)
    else:
        monkeypatch.setenv(sdpa_choice.ENV, value)
    assert sdpa_choice.setting() == expected


def test_an_unknown_setting_warns_once_and_counts_as_auto(monkeypatch, caplog):
    monkeypatch.setenv(sdpa_choice.ENV, "fastest-please")
    with caplog.at_level(logging.WARNING, logger=sdpa_choice.__name__):
        assert sdpa_choice.setting() == "auto" and sdpa_choice.setting() == "auto"
    assert sum("fastest-please" in r.getMessage() for r in caplog.records) == 1


def test_auto_leaves_the_order_alone_off_hopper(monkeypatch):
    monkeypatch.delenv(sdpa_choice.ENV, raising=False)
    before = _state()
    assert sdpa_choice.preferred_backend(torch.device("cpu")) is None
    assert sdpa_choice.preferred_backend(None) is None
    with sdpa_choice.preferred_attention("cpu") as chosen:
        assert chosen is None and _state() == before


def test_auto_puts_cudnn_first_on_compute_capability_9(monkeypatch):
    monkeypatch.delenv(sdpa_choice.ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    for capability, expected in (((9, 0), "cudnn"), ((8, 9), None), ((8, 0), None), ((12, 0), None)):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert sdpa_choice.preferred_backend(torch.device("cuda", 0)) == expected, capability


@pytest.mark.skipif(not sdpa_choice.can_set_priority(), reason="this PyTorch's sdpa_kernel has no priority order")
def test_a_named_backend_goes_first_for_the_block_and_the_flags_come_back(monkeypatch):
    monkeypatch.setenv(sdpa_choice.ENV, "cudnn")
    before = _state()
    with sdpa_choice.preferred_attention("cpu") as chosen:
        order, enabled = _state()
        assert chosen == "cudnn" and order[0] == int(SDPBackend.CUDNN_ATTENTION)
        assert all(enabled.values())          # the others stay enabled behind it, as fallbacks
        q = torch.randn(1, 2, 16, 8)
        assert torch.allclose(F.scaled_dot_product_attention(q, q, q),
                              torch.softmax(q @ q.transpose(-1, -2) / 8 ** 0.5, -1) @ q, atol=1e-5)
    assert _state() == before


@pytest.mark.skipif(not sdpa_choice.can_set_priority(), reason="this PyTorch's sdpa_kernel has no priority order")
def test_backends_switched_off_globally_stay_off(monkeypatch):
    monkeypatch.setenv(sdpa_choice.ENV, "math")
    with sdpa_kernel([SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION]):   # flash and cuDNN off
        with sdpa_choice.preferred_attention("cpu"):
            _, enabled = _state()
            assert enabled == {"cudnn": False, "flash": False, "efficient": True, "math": True}
        # auto does not switch a backend on that the user switched off
        monkeypatch.setattr(sdpa_choice, "preferred_backend", lambda device: "cudnn")
        monkeypatch.setenv(sdpa_choice.ENV, "auto")
        with sdpa_choice.preferred_attention("cpu") as chosen:
            assert chosen is None and not sdpa_choice._enabled()["cudnn"]


def test_the_try_on_loop_runs_under_the_choice_and_restores_the_flags(tiny_models_dir, monkeypatch,
                                                                      photo_astronaut, photo_coffee):
    """The engine's denoise loop enters ``preferred_attention`` (seen from inside the UNet) and the
    result is the same function: on the CPU the math backend first gives the default's image."""
    from agentic_edit.engines import catvton_loader as loader
    from agentic_edit.engines.catvton import CatVTONEngine
    from agentic_edit.models import free

    monkeypatch.setenv("AGENTIC_EDIT_MODELS_DIR", str(tiny_models_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    person = photo_astronaut.astype(np.float32) / 255.0
    mask = np.zeros(person.shape[:2], np.float32)
    mask[230:420, 130:380] = 1.0
    try:
        engine = CatVTONEngine()
        default = engine.try_on(person, photo_coffee, mask, steps=2, seed=5, height=64, width=48)
        unet = engine.load_unet().obj.unet
        orders = []
        hook = unet.register_forward_pre_hook(lambda module, args: orders.append(torch._C._get_sdp_priority_order()))
        monkeypatch.setenv(sdpa_choice.ENV, "math")
        before = _state()
        try:
            forced = engine.try_on(person, photo_coffee, mask, steps=2, seed=5, height=64, width=48)
        finally:
            hook.remove()
        assert _state() == before
        if sdpa_choice.can_set_priority():
            assert orders and all(order[0] == int(SDPBackend.MATH) for order in orders)
        assert np.abs(forced.image - default.image).max() < 1e-3
    finally:
        for family in (loader.UNET_FAMILY, loader.VAE_FAMILY):
            free(family)

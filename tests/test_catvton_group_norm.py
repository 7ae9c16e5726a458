"""bench/split_group_norm.py (a bench experiment): GroupNorm through torch.var_mean and one addcmul gives
F.group_norm's result (float32: to rounding; fp16/bf16: within their rounding), and the swap keeps
the parameters and state-dict names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.split_group_norm import SplitGroupNorm, split_group_norm, use_split_group_norm


def _rel(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-6), (torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("affine", [True, False])
def test_split_statistics_give_group_norm(dtype, tolerance, affine):
    generator = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 16, 9, 7, generator=generator) * 3 + 1.5).to(dtype)
    weight = torch.randn(16, generator=generator).to(dtype) if affine else None
    bias = torch.randn(16, generator=generator).to(dtype) if affine else None
    reference = F.group_norm(x.double(), 4, None if weight is None else weight.double(),
                             None if bias is None else bias.double(), 1e-5)
    out = split_group_norm(x, 4, weight, bias, 1e-5)
    assert out.dtype == dtype and out.shape == x.shape
    assert _rel(out, reference) < tolerance
    native = F.group_norm(x, 4, weight, bias, 1e-5) if dtype == torch.float32 else None
    if native is not None:
        assert _rel(out, native) < 1e-6


def test_the_swap_keeps_parameters_and_names_and_cpu_takes_pytorchs_kernel():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.GroupNorm(2, 8), torch.nn.SiLU(),
                                torch.nn.GroupNorm(4, 8, affine=False))
    keys, weight = list(model.state_dict()), model[1].weight
    x = torch.randn(2, 3, 5, 5)
    before = model(x)
    assert use_split_group_norm(model) == 2 and use_split_group_norm(model) == 0
    assert isinstance(model[1], SplitGroupNorm) and model[1].weight is weight and list(model.state_dict()) == keys
    assert torch.equal(model(x), before)      # on the CPU: F.group_norm, bit for bit

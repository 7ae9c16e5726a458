"""GroupNorm whose statistics use the whole GPU: for UNets at large latents with a small batch.

Why: PyTorch's CUDA GroupNorm computes each (sample, group) mean and variance in one thread block.
CatVTON's UNet at 1024x768 (frame 2 x 320 x 256 x 96, 32 groups) has 64 such rows of 245 760
values, so 64 blocks share a 132-SM H100 and the statistics kernel runs at a fraction of the memory
bandwidth: 6.2 of the ~70 ms of a step for its 61 GroupNorms (bench/bench_catvton.py --profile,
bench/results/catvton_h100_2026-11-24_sdpa.json). ``torch.var_mean`` over the same rows splits each
row across many blocks; the normalisation is then one fused ``addcmul`` (x * scale + shift, with
the per-channel scale and shift folded from the statistics and the affine weights in float32).

Measured (H100, fp16, CatVTON 1024x768, bench/bench_catvton.py --variants auto,groupnorm,
bench/results/catvton_h100_2026-11-24_groupnorm.json): the statistics fall from 6.1 to 1.7 ms a
step, but the mixed-dtype addcmul (3.0 ms against PyTorch's 1.4 ms apply) and the small per-call
kernels take most of it back: 69.5 -> 68.2 ms a step, latents rel err 4.4e-3. So the engine does
NOT use it (not worth a numerics change); the bench keeps it as a variant. A single fused kernel
(Triton, or torch.compile, which does this) is what would keep the ~4 ms.

Same function up to fp16/bf16 rounding: the statistics are accumulated in float32 (as PyTorch's
kernel does) but handed back in the input's dtype, and scale/shift are rounded to it.
``use_split_group_norm(module)`` swaps every ``nn.GroupNorm`` of a module for ``SplitGroupNorm``
(same parameters, same state-dict names); CPU tensors, and batches where the rows already fill the
GPU, take ``F.group_norm``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# At or above this many (sample, group) rows PyTorch's own kernel has enough blocks.
MIN_ROWS_NATIVE = 512


def split_group_norm(x: torch.Tensor, groups: int, weight, bias, eps: float) -> torch.Tensor:
    """``F.group_norm(x, groups, weight, bias, eps)`` for a contiguous ``x`` of 3+ dims, through
    ``torch.var_mean`` and one ``addcmul`` (any device; used on CUDA)."""
    n, c = x.shape[:2]
    per_group = c // groups
    rows = x.view(n, groups, per_group, -1)
    var, mean = torch.var_mean(x.view(n, groups, -1), dim=-1, correction=0)
    rstd = var.float().add_(eps).rsqrt_()[:, :, None]                      # [n, groups, 1], float32
    scale = rstd if weight is None else rstd * weight.view(groups, per_group)
    shift = -mean[:, :, None] * scale if bias is None else torch.addcmul(bias.view(groups, per_group),
                                                                         mean[:, :, None], scale, value=-1)
    scale = scale.expand(n, groups, per_group)
    out = torch.empty_like(x)
    # Computed in float32 (scale and shift are), written in x's dtype: one pass over x.
    torch.addcmul(shift[..., None], rows, scale[..., None], out=out.view_as(rows))
    return out


class SplitGroupNorm(torch.nn.GroupNorm):
    """``nn.GroupNorm`` with the statistics computed by a split reduction on CUDA (see the module doc)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (not x.is_cuda or x.dim() < 3 or x.shape[0] * self.num_groups >= MIN_ROWS_NATIVE
                or x.dtype not in (torch.float16, torch.bfloat16) or not x.is_contiguous()):
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return split_group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


def use_split_group_norm(module: torch.nn.Module) -> int:
    """Make every ``nn.GroupNorm`` in ``module`` a ``SplitGroupNorm`` in place (parameters kept).
    Returns how many were changed."""
    changed = 0
    for child in module.modules():
        if type(child) is torch.nn.GroupNorm:
            child.__class__ = SplitGroupNorm
            changed += 1
    return changed


__all__ = ["MIN_ROWS_NATIVE", "SplitGroupNorm", "split_group_norm", "use_split_group_norm"]

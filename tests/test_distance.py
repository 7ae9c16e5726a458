"""engines/distance.py: the strip-wise transform equals scipy's within the limit and exceeds the limit
beyond it, and the mask tools built on it give the same masks split or not."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from agentic_edit.engines import crop_stitch, distance, mask_ops


@pytest.fixture
def always_split(monkeypatch):
    """Split any array into 4 strips, whatever this machine's core count."""
    monkeypatch.setattr(distance, "MIN_PIXELS_TO_SPLIT", 0)
    monkeypatch.setattr(distance, "_workers", lambda: 4)


def speckled(shape, share, seed=0):
    return np.random.default_rng(seed).random(shape) < share


@pytest.mark.parametrize("limit", [1.0, 2.5, 6.0])
@pytest.mark.parametrize("share", [0.002, 0.05, 0.5])
def test_exact_within_the_limit_and_beyond_it_above_the_limit(always_split, limit, share):
    zeros = speckled((200, 90), share)
    free = ~zeros
    expected = ndimage.distance_transform_edt(free)
    got = distance.distance_to_zeros(free, limit)
    within = expected <= limit
    assert np.array_equal(got[within], expected[within])   # bit-identical, not just close
    assert (got[~within] > limit).all()


def test_a_strip_without_zeros_is_beyond_any_limit(always_split):
    free = np.ones((120, 40), dtype=bool)
    free[5, 7] = False   # one zero, in the first strip only
    got = distance.distance_to_zeros(free, 2.0)
    assert got[5, 7] == 0 and got[6, 7] == 1
    assert np.isinf(got[60:]).all()


def test_small_arrays_are_not_split(monkeypatch):
    calls = []
    monkeypatch.setattr(distance, "_transform", lambda array: calls.append(array.shape) or np.zeros(array.shape))
    distance.distance_to_zeros(np.ones((64, 64), dtype=bool), 3.0)
    assert calls == [(64, 64)]


def test_mask_tools_give_the_same_masks_split_or_not(monkeypatch):
    mask = speckled((160, 120), 0.3, seed=3).astype(np.float32)
    mask[40:100, 30:90] = 1.0
    plain = (mask_ops.grow(mask, 4.0), mask_ops.shrink(mask, 2.0), crop_stitch.outward_feather(mask, 6.0))
    monkeypatch.setattr(distance, "MIN_PIXELS_TO_SPLIT", 0)
    monkeypatch.setattr(distance, "_workers", lambda: 3)
    split = (mask_ops.grow(mask, 4.0), mask_ops.shrink(mask, 2.0), crop_stitch.outward_feather(mask, 6.0))
    for a, b in zip(plain, split):
        assert np.array_equal(a, b)

"""ComfyUI tensors <-> the numpy arrays engines use. Plain torch: importable without ComfyUI.

IMAGE is ``float32 [B, H, W, C]`` in 0..1 (C is 3, sometimes 4), MASK is ``float32 [B, H, W]``
(a single ``[H, W]`` mask is accepted and treated as a batch of one). Batches are kept: every
helper here works per item and gives the batch back.
"""

from __future__ import annotations

import numpy as np
import torch

from ..engines.imaging import ImageInputError, to_rgb_array


def image_batch_to_arrays(image: torch.Tensor, name: str = "image") -> list[np.ndarray]:
    """IMAGE ``[B,H,W,C]`` -> list of float32 RGB arrays ``[H,W,3]`` (alpha composited)."""
    if not isinstance(image, torch.Tensor):
        raise ImageInputError(f"{name}: expected an IMAGE tensor, got {type(image).__name__}")
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4:
        raise ImageInputError(f"{name}: expected an IMAGE of shape [B, H, W, C], got {tuple(image.shape)}")
    data = image.detach().to("cpu", torch.float32).numpy()
    return [to_rgb_array(item, name=f"{name}[{i}]") for i, item in enumerate(data)]


def arrays_to_image_batch(arrays: list[np.ndarray]) -> torch.Tensor:
    """list of ``[H,W,3]`` float arrays (all one size) -> IMAGE ``[B,H,W,3]``."""
    sizes = {a.shape[:2] for a in arrays}
    if len(sizes) > 1:
        raise ImageInputError(f"cannot stack images of different sizes into one batch: {sorted(sizes)}")
    return torch.from_numpy(np.stack([np.asarray(a, dtype=np.float32) for a in arrays]))


def mask_batch_to_arrays(mask: torch.Tensor | None, count: int, size: tuple[int, int],
                         name: str = "mask") -> list[np.ndarray] | None:
    """MASK ``[B,H,W]`` (or ``[H,W]``) -> ``count`` float arrays of ``size`` (H, W).

    A batch of one is broadcast over ``count`` images; another batch size must equal ``count``.
    """
    if mask is None:
        return None
    if mask.ndim == 2:
        mask = mask.unsqueeze(0)
    if mask.ndim == 4 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 3:
        raise ImageInputError(f"{name}: expected a MASK of shape [B, H, W], got {tuple(mask.shape)}")
    height, width = size
    if tuple(mask.shape[1:]) != (height, width):
        raise ImageInputError(
            f"{name}: the mask is {mask.shape[2]}x{mask.shape[1]} but the image is {width}x{height}; "
            "resize one to the other before connecting them")
    if mask.shape[0] not in (1, count):
        raise ImageInputError(
            f"{name}: {mask.shape[0]} masks for {count} images; give one mask, or one per image")
    data = mask.detach().to("cpu", torch.float32).clamp(0, 1).numpy()
    return [data[0 if data.shape[0] == 1 else i] for i in range(count)]


def arrays_to_mask_batch(arrays: list[np.ndarray]) -> torch.Tensor:
    """list of ``[H,W]`` float arrays -> MASK ``[B,H,W]``."""
    return torch.from_numpy(np.stack([np.asarray(a, dtype=np.float32) for a in arrays]))

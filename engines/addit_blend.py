"""Where did Add-it put the new object? The subject's attention map -> a mask -> a latent blend mask.

At the blend step the processors have summed, over the layers, the target image tokens' attention
to the subject word's text tokens (``addit_attention``). Here that token map is

1. reshaped to the token grid, smoothed with a small Gaussian, scaled to 0..1 and upsampled to the
   image size;
2. thresholded with Otsu's method (the map is bimodal: the object vs the rest);
3. optionally refined with SAM-2 on the decoded x0 prediction, prompted with the Otsu mask's box and
   a few positive points at the map's strongest pixels (``sam_prompts``);
4. brought back to the latent token grid for blending: a token whose cell the mask touches at all
   (mean > 0.01) takes the target's latent, the others the source's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import Box, Point


def gaussian_smooth(grid: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a [h, w] map (reflect padding)."""
    if sigma <= 0:
        return grid
    radius = max(1, int(round(2 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(grid)
    x = grid[None, None].float()
    pad_h, pad_w = min(radius, grid.shape[0] - 1), min(radius, grid.shape[1] - 1)
    if pad_w:
        x = F.conv1d(F.pad(x, (pad_w, pad_w, 0, 0), mode="reflect").flatten(0, 2)[:, None],
                     kernel[None, None, radius - pad_w: radius + pad_w + 1]).view(1, 1, grid.shape[0], -1)
    if pad_h:
        x = F.pad(x, (0, 0, pad_h, pad_h), mode="reflect").transpose(2, 3)
        x = F.conv1d(x.flatten(0, 2)[:, None], kernel[None, None, radius - pad_h: radius + pad_h + 1])
        x = x.view(1, 1, grid.shape[1], -1).transpose(2, 3)
    return x[0, 0]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of ``values`` (in 0..1)."""
    histogram, edges = np.histogram(values.ravel(), bins=bins, range=(0.0, 1.0))
    weights = histogram.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(weights)
    w1 = w0[-1] - w0
    m0 = np.cumsum(weights * centres)
    mean0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mean1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between)) + 1])


def attention_to_image(token_map: torch.Tensor, grid_h: int, grid_w: int, height: int, width: int,
                       sigma: float = 1.0) -> np.ndarray:
    """The subject's token map as a 0..1 float32 [height, width] heat map."""
    grid = gaussian_smooth(token_map.float().reshape(grid_h, grid_w).cpu(), sigma)
    grid = grid - grid.min()
    grid = grid / grid.max().clamp_min(1e-12)
    image = F.interpolate(grid[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return image[0, 0].clamp(0, 1).numpy().astype(np.float32)


def otsu_mask(heat: np.ndarray) -> np.ndarray:
    """Binary float32 mask of the heat map above its Otsu threshold (empty for a flat map)."""
    if float(heat.max() - heat.min()) < 1e-6:
        return np.zeros_like(heat, dtype=np.float32)
    return (heat > otsu_threshold(heat)).astype(np.float32)


def sam_prompts(heat: np.ndarray, mask: np.ndarray, points: int = 3) -> tuple[Box, list[Point]] | None:
    """SAM-2 prompts from the attention: the box around the Otsu mask and the ``points`` hottest
    pixels inside it, spread apart (each next one at least a tenth of the box's side from the others)."""
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        return None
    box = Box(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    spacing = max(1.0, 0.1 * max(box.width, box.height))
    order = np.argsort(heat[ys, xs])[::-1]
    chosen: list[Point] = []
    for i in order:
        x, y = float(xs[i]) + 0.5, float(ys[i]) + 0.5
        if all((x - p.x) ** 2 + (y - p.y) ** 2 >= spacing ** 2 for p in chosen):
            chosen.append(Point(x, y))
            if len(chosen) == points:
                break
    return box, chosen


def latent_blend_mask(mask: np.ndarray, grid_h: int, grid_w: int, threshold: float = 0.01) -> torch.Tensor:
    """[grid_h * grid_w] 0/1 float mask of the token cells the image mask touches (row-major, as FLUX
    packs its tokens)."""
    pixels = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
    cells = F.adaptive_avg_pool2d(pixels, (grid_h, grid_w))[0, 0]
    return (cells > threshold).float().flatten()

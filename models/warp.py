"""Warping and fusion of the references, in torch, exactly as the original computes them.

This is the reference that the runtime's Numba kernel (``iplap.runtime.warp``) is tested
against, and the last step of the torch renderer.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

#: Added to the sum of fusion weights before dividing, as in the original.
FUSION_EPS = 1e-5


def flow_to_deformation(flow: torch.Tensor) -> torch.Tensor:
    """Flow in pixels (B, 2, H, W) -> sampling grid (B, H, W, 2) in [-1, 1] (x, y)."""
    _, _, h, w = flow.shape
    flow_norm = 2 * torch.cat([flow[:, :1] / (w - 1), flow[:, 1:] / (h - 1)], 1)
    x = 2 * (torch.arange(w).to(flow) / (w - 1)) - 1
    y = 2 * (torch.arange(h).to(flow) / (h - 1)) - 1
    grid = torch.stack([x[None, :].expand(h, w), y[:, None].expand(h, w)], dim=2)
    return grid[None] + flow_norm.permute(0, 2, 3, 1)


def warp(source: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
    """Bilinear ``grid_sample`` (zeros, align_corners=False); the deformation is resized
    to the source's size with bilinear interpolation (align_corners=False) when they differ."""
    _, h_def, w_def, _ = deformation.shape
    h, w = source.shape[2:]
    if (h_def, w_def) != (h, w):
        deformation = F.interpolate(deformation.permute(0, 3, 1, 2), size=(h, w), mode="bilinear",
                                    align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(source, deformation, mode="bilinear", padding_mode="zeros", align_corners=False)


def fuse_warped(h1: torch.Tensor, h2: torch.Tensor, ref_img: torch.Tensor, flow: torch.Tensor,
                weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Warp every reference and take the weighted mean over references.

    Shapes (B, N, ...): h1 (32, 128, 128), h2 (256, 64, 64), ref_img (3, 128, 128),
    flow (2, 128, 128), weight (1, 128, 128). Returns fused h1, h2, reference, each (B, C, H, W).
    """
    n_ref, small = h1.shape[1], tuple(h2.shape[-2:])  # small: 64 x 64 in IP_LAP
    h1_sum = h2_sum = ref_sum = denominator = 0.0
    for n in range(n_ref):  # accumulate in the original's order
        deformation = flow_to_deformation(flow[:, n])
        w = weight[:, n]
        denominator = denominator + w
        h1_sum = h1_sum + warp(h1[:, n], deformation) * w
        h2_sum = h2_sum + warp(h2[:, n], deformation) * F.interpolate(w, size=small, mode="nearest")
        ref_sum = ref_sum + warp(ref_img[:, n], deformation) * w
    denominator = denominator + FUSION_EPS
    return (h1_sum / denominator, h2_sum / F.interpolate(denominator, size=small, mode="nearest"),
            ref_sum / denominator)

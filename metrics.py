"""Accuracy metrics shared by calibration, benchmarks and tests (numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB (``inf`` for identical inputs)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak ** 2 / mse)


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Structural similarity (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1=0.01,
    K2=0.03, averaged over pixels and channels. Images are (H, W) or (H, W, C)."""
    x = np.asarray(a, np.float64)
    y = np.asarray(b, np.float64)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: {x.shape} and {y.shape}")
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2

    def blur(img):
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def landmark_error_px(predicted: np.ndarray, reference: np.ndarray, size: int = 128) -> tuple[float, float]:
    """Max and mean distance between landmark sets (..., 2, K) normalised to a crop, in pixels
    of a ``size`` px crop."""
    p = np.asarray(predicted, np.float64)
    r = np.asarray(reference, np.float64)
    dist = np.hypot(p[..., 0, :] - r[..., 0, :], p[..., 1, :] - r[..., 1, :]) * size
    return float(dist.max()), float(dist.mean())

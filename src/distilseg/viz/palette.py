"""Class-map coloring and overlays (pure numpy, no matplotlib).

Why a 256-entry lookup table: a mask is uint8, so ``lut[mask]`` colors any image in one vectorized
gather; entries past the palette and the ignore value 255 stay black.
"""
from __future__ import annotations

import numpy as np

__all__ = ["palette_lut", "colorize", "overlay", "default_palette"]


def default_palette(num_classes: int) -> np.ndarray:
    """A deterministic ``(K, 3) uint8`` palette (Pascal VOC bit pattern) for datasets without one."""
    out = np.zeros((num_classes, 3), dtype=np.uint8)
    for i in range(num_classes):
        c, r, g, b = i, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= ((c >> 0) & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        out[i] = (r, g, b)
    return out


def palette_lut(palette: np.ndarray) -> np.ndarray:
    """``(256, 3) uint8`` table: ``lut[i] = palette[i]`` for class ids, black for the rest and 255."""
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise ValueError(f"palette must be K x 3, got shape {pal.shape}")
    lut = np.zeros((256, 3), dtype=np.uint8)
    k = min(len(pal), 256)
    lut[:k] = np.clip(pal[:k], 0, 255).astype(np.uint8)
    lut[255] = 0
    return lut


def _as_index(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be H x W, got shape {mask.shape}")
    if mask.dtype == np.uint8:
        return mask
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"mask must hold integer class ids, got dtype {mask.dtype}")
    return np.where((mask < 0) | (mask > 255), 255, mask).astype(np.uint8)


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """``H x W`` class ids -> ``H x W x 3 uint8`` colors; 255 and ids outside the palette are black."""
    return palette_lut(palette)[_as_index(mask)]


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colors onto ``image``: ``rint((1 - alpha) * image + alpha * color)`` (ties to even).

    Pixels whose id is 255 or outside the palette keep the image unchanged (nothing to show there).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H x W x 3 uint8, got shape {image.shape} dtype {image.dtype}")
    idx = _as_index(mask)
    if idx.shape != image.shape[:2]:
        raise ValueError(f"mask {idx.shape} and image {image.shape[:2]} differ in size")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    colors = palette_lut(palette)[idx].astype(np.float32)
    blended = np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * colors)
    out = np.clip(blended, 0, 255).astype(np.uint8)
    labelled = idx < min(len(np.asarray(palette)), 255)
    return np.where(labelled[..., None], out, image)

"""Class color legend."""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.patches import Rectangle

from ._render import new_figure, save_png

__all__ = ["save_legend", "legend_handles", "legend_strip", "add_legend", "VOID_LABEL"]

VOID_LABEL = "void / ignored (black)"


def _entries(class_names: Sequence[str], palette: np.ndarray, void: bool) -> list[tuple[str, np.ndarray]]:
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) < len(class_names):
        raise ValueError(f"palette {pal.shape} does not cover {len(class_names)} classes")
    out = [(str(n), pal[i].astype(np.uint8)) for i, n in enumerate(class_names)]
    if void:
        out.append((VOID_LABEL, np.zeros(3, dtype=np.uint8)))
    return out


def legend_handles(class_names: Sequence[str], palette: np.ndarray, void: bool = True) -> list:
    """matplotlib ``Patch`` handles (swatch + name) for a figure legend; ``void`` adds the black entry."""
    from matplotlib.patches import Patch

    return [Patch(facecolor=c / 255.0, edgecolor="black", linewidth=0.5, label=n)
            for n, c in _entries(class_names, palette, void)]


@functools.lru_cache(maxsize=8)
def _font(size: int):
    """DejaVu Sans (shipped with matplotlib) at ``size`` px; PIL's bitmap font if that fails."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except Exception:  # pragma: no cover - a matplotlib without its fonts
        return ImageFont.load_default()


def legend_strip(class_names: Sequence[str], palette: np.ndarray, width: int, void: bool = True,
                 font_px: int | None = None) -> np.ndarray:
    """A compact ``h x width x 3 uint8`` strip of swatches and class names on a dark background, wrapped
    onto as many lines as ``width`` needs (pure PIL: cheap enough to stamp on images and video frames)."""
    pal = np.ascontiguousarray(palette, dtype=np.uint8)
    return _strip(tuple(str(n) for n in class_names), pal.tobytes(), pal.shape, int(width), bool(void),
                  font_px).copy()


@functools.lru_cache(maxsize=16)  # video frames reuse one strip
def _strip(names: tuple, pal_bytes: bytes, pal_shape: tuple, width: int, void: bool,
           font_px: int | None) -> np.ndarray:
    from PIL import Image, ImageDraw

    entries = _entries(names, np.frombuffer(pal_bytes, dtype=np.uint8).reshape(pal_shape), void)
    size = int(font_px or max(11, min(28, round(width / 80))))
    font = _font(size)
    pad, sw, gap = max(3, size // 3), size, size
    line_h = size + 2 * pad
    draw0 = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [sw + pad + int(draw0.textlength(n, font=font)) for n, _ in entries]
    lines: list[list[int]] = [[]]
    x = pad
    for i, w in enumerate(widths):
        if lines[-1] and x + w > width - pad:
            lines.append([])
            x = pad
        lines[-1].append(i)
        x += w + gap
    img = Image.new("RGB", (int(width), line_h * len(lines)), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    for row, items in enumerate(lines):
        x, y = pad, row * line_h + pad
        for i in items:
            name, color = entries[i]
            draw.rectangle((x, y, x + sw - 1, y + sw - 1), fill=tuple(int(v) for v in color),
                           outline=(235, 235, 235))
            draw.text((x + sw + pad, y + sw / 2), name, fill=(240, 240, 240), font=font, anchor="lm")
            x += widths[i] + gap
    return np.asarray(img, dtype=np.uint8).copy()


def add_legend(image: np.ndarray, class_names: Sequence[str], palette: np.ndarray, void: bool = True,
               inside: bool = False) -> np.ndarray:
    """``image`` with a legend strip under it (taller result), or, with ``inside``, drawn over its bottom
    rows (same size: video frames keep the source resolution)."""
    image = np.asarray(image, dtype=np.uint8)
    strip = legend_strip(class_names, palette, image.shape[1], void=void)
    if not inside:
        return np.concatenate([image, strip], axis=0)
    out = image.copy()
    h = min(strip.shape[0], out.shape[0])
    band = out[-h:].astype(np.float32) * 0.25 + strip[-h:].astype(np.float32) * 0.75
    out[-h:] = np.clip(np.rint(band), 0, 255).astype(np.uint8)
    return out


def save_legend(
    class_names: Sequence[str], palette: np.ndarray, path: str | os.PathLike, max_rows: int = 20, dpi: int = 100,
    void: bool = True,
) -> Path:
    """One swatch + name per class, in columns of at most ``max_rows``; ``void`` adds the black entry."""
    entries = _entries(class_names, palette, void)
    class_names = [n for n, _ in entries]
    pal = np.stack([c for _, c in entries])
    n = len(class_names)
    ncols = max(1, math.ceil(n / max_rows))
    nrows = max(1, min(n, max_rows))
    col_w = 2.4
    fig = new_figure(ncols * col_w, 0.3 * nrows + 0.2, dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, ncols * col_w)
    ax.set_ylim(nrows + 0.3, -0.3)
    ax.set_axis_off()
    for i, name in enumerate(class_names):
        col, row = divmod(i, max_rows)
        x0 = col * col_w + 0.1
        ax.add_patch(Rectangle((x0, row), 0.45, 0.8, facecolor=pal[i] / 255.0, edgecolor="black", linewidth=0.5))
        label = name if (void and i == n - 1) else f"{i}: {name}"
        ax.text(x0 + 0.6, row + 0.4, label, va="center", fontsize=9)
    return save_png(fig, path, dpi=dpi)

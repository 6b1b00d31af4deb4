"""Class color legend."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.patches import Rectangle

from ._render import new_figure, save_png

__all__ = ["save_legend"]


def save_legend(
    class_names: Sequence[str], palette: np.ndarray, path: str | os.PathLike, max_rows: int = 20, dpi: int = 100
) -> Path:
    """One swatch + name per class, in columns of at most ``max_rows``."""
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3 or len(pal) < len(class_names):
        raise ValueError(f"palette {pal.shape} does not cover {len(class_names)} classes")
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
        ax.text(x0 + 0.6, row + 0.4, f"{i}: {name}", va="center", fontsize=9)
    return save_png(fig, path, dpi=dpi)

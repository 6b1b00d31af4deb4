"""Image grids (image | ground truth | prediction rows, ``samples.png``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

from ._render import new_figure, save_png

__all__ = ["save_grid"]


def _cell(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"grid cells must be H x W x 3 images, got shape {arr.shape}")
    return arr


def save_grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | os.PathLike,
    col_titles: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
    cell_width_in: float = 3.2,
    dpi: int = 100,
    legend: Tuple[Sequence[str], np.ndarray] | None = None,
    void: bool = True,
) -> Path:
    """Write a PNG grid; each cell keeps its aspect ratio (no stretching), ragged rows leave blanks.

    Row heights follow the tallest cell of each row, so wide street scenes do not get tall empty boxes.
    ``legend=(class_names, palette)`` adds a row of class swatches under the grid; with ``void`` it also
    explains black (void / ignored pixels, not scored).
    """
    cells = [[_cell(c) for c in row] for row in rows]
    if not cells or not any(cells):
        raise ValueError("save_grid needs at least one image")
    nrows = len(cells)
    ncols = max(len(r) for r in cells)
    cw = min(cell_width_in, 24.0 / ncols)
    aspects = [max((c.shape[0] / c.shape[1] for c in r), default=1.0) for r in cells]
    title_h = 0.3 if col_titles else 0.0
    width = ncols * cw + (0.4 if row_titles else 0.0)
    handles, legend_cols, legend_h = [], 1, 0.0
    if legend is not None:
        from .legend import legend_handles

        handles = legend_handles(legend[0], legend[1], void=void)
        legend_cols = max(1, min(len(handles), int(max(width, 3.0) / 1.7)))
        legend_h = 0.26 * -(-len(handles) // legend_cols) + 0.2
    height = sum(a * cw for a in aspects) + title_h + 0.1 * nrows + legend_h
    fig = new_figure(width, height, dpi=dpi)
    ratios = list(aspects) + ([legend_h / cw] if handles else [])
    grid = fig.add_gridspec(len(ratios), ncols, height_ratios=ratios, wspace=0.03, hspace=0.03)
    if handles:
        lax = fig.add_subplot(grid[nrows, :])
        lax.set_axis_off()
        lax.legend(handles=handles, loc="center", ncol=legend_cols, fontsize=8, frameon=False,
                   handlelength=1.2, columnspacing=1.0, borderaxespad=0.0)
    for r, row in enumerate(cells):
        for c in range(ncols):
            ax = fig.add_subplot(grid[r, c])
            ax.set_axis_off()
            if c < len(row):
                ax.imshow(row[c], interpolation="nearest", aspect="equal")
            if r == 0 and col_titles and c < len(col_titles):
                ax.set_title(str(col_titles[c]), fontsize=10)
            if c == 0 and row_titles and r < len(row_titles):
                ax.text(-0.03, 0.5, str(row_titles[r]), transform=ax.transAxes, rotation=90,
                        ha="right", va="center", fontsize=9)
    return save_png(fig, path, dpi=dpi, bbox_inches="tight", pad_inches=0.05)

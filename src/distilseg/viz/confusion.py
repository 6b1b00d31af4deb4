"""Confusion-matrix heat map."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._render import new_figure, save_png

__all__ = ["save_confusion"]


def save_confusion(
    cm: Any, class_names: Sequence[str], path: str | os.PathLike, normalize: bool = True, dpi: int = 100
) -> Path:
    """Heat map of ``cm`` (rows = ground truth, cols = prediction), row-normalized by default.

    Rows with no ground-truth pixels stay 0. Values are written in the cells when K <= 20 (beyond that
    the text is unreadable).
    """
    if hasattr(cm, "detach"):
        cm = cm.detach().cpu().numpy()
    mat = np.asarray(cm, dtype=np.float64)
    k = mat.shape[0] if mat.ndim == 2 else -1
    if mat.ndim != 2 or mat.shape[1] != k:
        raise ValueError(f"confusion matrix must be square, got shape {mat.shape}")
    if len(class_names) != k:
        raise ValueError(f"{len(class_names)} class names for a {k}-class confusion matrix")
    if normalize:
        sums = mat.sum(axis=1, keepdims=True)
        mat = np.divide(mat, sums, out=np.zeros_like(mat), where=sums > 0)
    side = max(5.0, 0.45 * k + 2.5)
    fig = new_figure(side + 1.0, side, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    vmax = 1.0 if normalize else max(float(mat.max()), 1.0)
    im = ax.imshow(mat, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), [str(n) for n in class_names], rotation=90, fontsize=8)
    ax.set_yticks(range(k), [str(n) for n in class_names], fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("confusion matrix" + (" (row-normalized)" if normalize else ""))
    if k <= 20:
        for i in range(k):
            for j in range(k):
                v = mat[i, j]
                text = f"{v:.2f}" if normalize else f"{int(v)}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 * vmax else "black")
    fig.tight_layout()
    return save_png(fig, path, dpi=dpi)

"""Training curves: a loss panel and an mIoU panel."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

from matplotlib.ticker import MaxNLocator

from ._render import new_figure, save_png

__all__ = ["save_curves"]


def _series(history: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for i, row in enumerate(history):
        v = row.get(key)
        if v is None:
            continue
        v = float(v)
        if math.isfinite(v):
            xs.append(float(row.get("epoch", i)))
            ys.append(v)
    return xs, ys


def save_curves(history: Sequence[dict[str, Any]], path: str | os.PathLike, dpi: int = 100) -> Path:
    """Plot ``train_loss``/``val_loss`` and ``val_mIoU`` against ``epoch``; missing or NaN values are skipped."""
    fig = new_figure(10.0, 4.0, dpi=dpi)
    loss_ax, miou_ax = fig.subplots(1, 2)
    for key, style in (("train_loss", "-o"), ("val_loss", "-s")):
        xs, ys = _series(history, key)
        if xs:
            loss_ax.plot(xs, ys, style, markersize=3, label=key)
    loss_ax.set_title("loss")
    loss_ax.set_xlabel("epoch")
    xs, ys = _series(history, "val_mIoU")
    if xs:
        miou_ax.plot(xs, ys, "-o", markersize=3, color="tab:green", label="val_mIoU")
        best = max(range(len(ys)), key=ys.__getitem__)
        miou_ax.annotate(f"best {ys[best]:.3f}", (xs[best], ys[best]), textcoords="offset points",
                         xytext=(0, 6), ha="center", fontsize=8)
    miou_ax.set_title("validation mIoU")
    miou_ax.set_xlabel("epoch")
    for ax in (loss_ax, miou_ax):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.margins(x=0.05, y=0.12)
        if ax.lines:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")
    fig.tight_layout()
    return save_png(fig, path, dpi=dpi)

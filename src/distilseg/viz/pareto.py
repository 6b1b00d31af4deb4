"""Accuracy / latency scatter for ``compress`` reports (marker area proportional to parameters)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from ..checks import finite_or_none
from ._render import new_figure, save_png

__all__ = ["save_pareto", "pareto_front"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats (lower or equal x and higher or equal y, one strictly)."""
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            (xj <= xi and yj >= yi) and (xj < xi or yj > yi) for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def save_pareto(
    rows: Sequence[dict[str, Any]],
    path: str | os.PathLike,
    x: str = "latency_ms",
    y: str = "mIoU",
    size: str = "params",
    label: str = "name",
    dpi: int = 100,
) -> Path:
    """Scatter ``y`` against ``x``; marker area proportional to ``size``; the Pareto front is dashed.

    Rows lacking a finite ``x`` or ``y`` are skipped (e.g. a model that failed to export).
    """
    kept = [r for r in rows if finite_or_none(r.get(x)) is not None and finite_or_none(r.get(y)) is not None]
    fig = new_figure(7.0, 5.0, dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    if kept:
        xs = [finite_or_none(r[x]) for r in kept]
        ys = [finite_or_none(r[y]) for r in kept]
        sizes = [finite_or_none(r.get(size)) or 0.0 for r in kept]
        biggest = max(sizes) if max(sizes) > 0 else 1.0
        areas = [max(600.0 * s / biggest, 15.0) for s in sizes]
        ax.scatter(xs, ys, s=areas, alpha=0.6, edgecolors="black", linewidths=0.5)
        for r, px, py in zip(kept, xs, ys):
            ax.annotate(str(r.get(label, "")), (px, py), textcoords="offset points", xytext=(6, 6), fontsize=8)
        front = pareto_front(list(zip(xs, ys)))
        if len(front) > 1:
            ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="gray", linewidth=1)
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")
    ax.margins(0.15)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{y} vs {x} (marker area \u221d {size})")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path, dpi=dpi)

"""Render a matplotlib ``Figure`` to PNG bytes and write it atomically.

Why not pyplot: pyplot keeps global figure state and picks a GUI backend; building ``Figure`` objects
with an explicit ``FigureCanvasAgg`` renders off-screen and leaves the user's backend choice alone.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..io import atomic_write_bytes


def new_figure(width_in: float, height_in: float, dpi: int = 100) -> Figure:
    """A figure bound to an Agg canvas (no pyplot, no global state)."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: str | os.PathLike, **savefig_kwargs: object) -> Path:
    """PNG-encode ``fig`` in memory, then write the bytes atomically to ``path``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kwargs)
    return atomic_write_bytes(path, buf.getvalue())

"""Pictures: palette coloring, overlays, grids, confusion heat maps, curves, legends, Pareto plots.

All figures are rendered off-screen with matplotlib's Agg canvas (never pyplot) and written atomically.
The matplotlib-based functions are imported lazily so ``colorize``/``overlay`` stay cheap to import.
"""
from __future__ import annotations

from typing import Any

from .palette import colorize, default_palette, overlay, palette_lut

__all__ = [
    "colorize",
    "overlay",
    "palette_lut",
    "default_palette",
    "save_grid",
    "save_confusion",
    "save_curves",
    "save_legend",
    "legend_strip",
    "add_legend",
    "save_pareto",
]

_LAZY = {
    "save_grid": ".grid",
    "save_confusion": ".confusion",
    "save_curves": ".curves",
    "save_legend": ".legend",
    "legend_strip": ".legend",
    "add_legend": ".legend",
    "save_pareto": ".pareto",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

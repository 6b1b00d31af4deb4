"""Small value checks shared by the configuration, the data transforms, the segmenters, export, logs and plots."""
from __future__ import annotations

import math
from typing import Any

from .errors import UsageError

# Largest image side anything is resized to or built for (an 8K frame is 7680 wide): a bigger size is a typo,
# and at 30000 x 30000 one float image alone takes 10 GB, so it is refused before anything is allocated.
MAX_SIDE = 8192


def size_pair(value: Any, what: str = "--img-size", allow_none: bool = False) -> tuple[int, int] | None:
    """``S`` or ``[H, W]`` of positive integers -> ``(H, W)``; anything else is a ``UsageError`` naming ``what``.

    The one check for every size pair (training crop and eval size, transforms, segmenter and ONNX input
    sizes, export and bench ``--img-size``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(s, float) and s.is_integer() for s in value
    ):
        value = [int(s) for s in value]
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value)):
        shown = list(value) if isinstance(value, tuple) else value
        raise UsageError(f"{what} must be two positive integers H W, got {shown!r}")
    if max(value) > MAX_SIDE:
        raise UsageError(f"{what} {list(value)}: each side must be at most {MAX_SIDE} pixels")
    return int(value[0]), int(value[1])


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is missing, not a number, NaN or infinite: for logs and
    plots that must show a gap rather than fail on a diverged run or an absent measurement."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None

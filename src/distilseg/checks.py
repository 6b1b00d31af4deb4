"""Small value checks shared by the configuration, the data transforms, the segmenters and export."""
from __future__ import annotations

from typing import Any

from .errors import UsageError


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
    return int(value[0]), int(value[1])

"""Where an export may write: its output file and the sidecar next to it.

Why: an export writes two files, ``NAME.onnx`` (or ``.pt``) and ``NAME.json``. Either name may already belong
to something of the user's (notes/report.json next to --out notes/report.onnx, an artifact's own config.json
next to --out ART/config.onnx). An export replaces them only when they are recognizably an earlier export of
the same kind (the sidecar's ``format``); anything else is refused in one line before any work. The export's
numeric options are checked here too, before the model is loaded.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..checks import size_pair
from ..errors import UsageError

__all__ = ["check_export_target", "check_export_options", "sidecar_format"]


def sidecar_format(path: Path) -> str | None:
    """The ``format`` of the export sidecar at ``path`` (``distilseg-onnx``, ``distilseg-torchscript``), or None
    when the file is missing or is not such a sidecar."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    fmt = data.get("format") if isinstance(data, dict) else None
    return fmt if isinstance(fmt, str) and fmt.startswith("distilseg-") else None


def check_export_target(out: str | Path, fmt: str) -> None:
    """Refuse (``UsageError``) when ``out`` or its sidecar ``out.json`` exists and is not an earlier ``fmt``
    export: the user's own files are never replaced."""
    out = Path(out)
    side = out.with_suffix(".json")
    own = side.is_file() and sidecar_format(side) == fmt
    if side.exists() and not own:
        raise UsageError(
            f"--out {out}: {side} already exists and is not the sidecar of an earlier {fmt} export; the export "
            f"would replace it with its own {side.name}: choose another --out"
        )
    if out.exists() and not own:
        raise UsageError(
            f"--out {out}: the file already exists and is not an earlier export (no {side.name} sidecar of one "
            f"next to it); choose another --out"
        )


def check_export_options(fp16: bool, int8: bool, calibration_dataset: str | None, check_images: int,
                         tolerance: float | None, min_agreement: float | None, opset: int,
                         img_size: Any = None) -> None:
    """The export's numbers and switches, checked before any work (one ``UsageError`` naming the flag)."""
    if fp16 and int8:
        raise UsageError("choose one of --fp16 and --int8")
    if int8 and not calibration_dataset:
        raise UsageError("--int8 needs --calibration-dataset NAME (and --calibration-root PATH)")
    if check_images < 0:
        raise UsageError(f"--check-images must be >= 0, got {check_images}")
    if tolerance is not None and not 0 <= tolerance < float("inf"):
        raise UsageError(f"--tolerance must be a finite number >= 0, got {tolerance}")
    if not 7 <= int(opset) <= 21:
        raise UsageError(f"--opset must be between 7 and 21, got {opset}")
    if img_size is not None:
        size_pair(img_size, "--img-size")
    if min_agreement is not None and not 0 <= min_agreement <= 1:
        raise UsageError(f"--min-agreement must lie in [0, 1], got {min_agreement}")

"""Where an export may write: its output file and the sidecar next to it.

Why: an export writes two files, ``NAME.onnx`` (or ``.pt``) and ``NAME.json``. Either name may already belong
to something of the user's (notes/report.json next to --out notes/report.onnx, an artifact's own config.json
next to --out ART/config.onnx). An export replaces them only when they are recognizably an earlier export of
the same kind (the sidecar's ``format``); anything else is refused in one line before any work.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import UsageError

__all__ = ["check_export_target", "sidecar_format"]


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

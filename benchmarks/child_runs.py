"""Helpers of the benchmarks that measure each setting in a child process of its own (peak memory and
process-wide settings are per process)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any


def child_row(cmd: list[str], failed: dict[str, Any]) -> dict[str, Any]:
    """The JSON row the child prints last, or ``failed`` with its exit code and last error line (-9: killed
    by the kernel for memory); printed as it comes."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0:
        row = json.loads(proc.stdout.strip().splitlines()[-1])
    else:
        row = {**failed, "failed": proc.returncode, "error": (proc.stderr.strip().splitlines() or [""])[-1][:200]}
    print(json.dumps(row), flush=True)
    return row


def write_result(path: Path | None, result: dict[str, Any]) -> None:
    """Write ``result`` as JSON, atomically (nothing when ``path`` is None)."""
    if path is not None:
        from distilseg.io import atomic_write_text

        atomic_write_text(path, json.dumps(result, indent=1) + "\n")

"""Helpers of the benchmarks that measure each setting in a child process of its own (peak memory and
process-wide settings are per process)."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable


def add_step_args(ap: argparse.ArgumentParser) -> None:
    """The options every such benchmark shares: the training step's crop, batch, timed steps and threads, the
    JSON to write, and the hidden ``--child on|off`` that runs one setting."""
    ap.add_argument("--size", type=int, nargs=2, default=[256, 320], metavar=("H", "W"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--child", choices=("on", "off"), help=argparse.SUPPRESS)


def step_args(args: argparse.Namespace) -> list[str]:
    """``add_step_args``' values as flags for a child process."""
    return ["--size", *map(str, args.size), "--batch", str(args.batch), "--steps", str(args.steps), "--threads",
            str(args.threads)]


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


def run(script: str, argv: list[str] | None, args: argparse.Namespace, one_setting: Callable[[bool], dict],
        cases: list[tuple[list[str], str, dict[str, Any]]], head: dict[str, Any]) -> int:
    """A benchmark's ``main`` after parsing: with ``--child``, print ``one_setting(child == "on")``'s row;
    else run each case (its own flags, ``on``/``off``, the row to record if it fails) in a child process of
    ``script`` and write ``head`` with the command line and the rows to ``--json``."""
    if args.child:
        print(json.dumps(one_setting(args.child == "on")))
        return 0
    rows = [child_row([sys.executable, script, *flags, *step_args(args), "--child", flag], failed)
            for flags, flag, failed in cases]
    result = {**head, "command": f"python benchmarks/{Path(script).name} "
              + " ".join(argv if argv is not None else sys.argv[1:]), "rows": rows}
    if args.json is not None:
        from distilseg.io import atomic_write_text

        atomic_write_text(args.json, json.dumps(result, indent=1) + "\n")
    return 0

"""The ``distilseg`` command.

Each area of the package owns its subcommands in a ``commands.py`` module with a
``register(subparsers)`` function that adds parsers and sets ``func`` (called with the parsed
namespace, returning an exit code or None). This file only wires them together and turns
``DistilsegError`` into a one-line message with a non-zero exit code (``--debug`` keeps the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import shlex
import sys
import traceback
from typing import Sequence

from ._version import __version__
from .errors import DistilsegError, RunInterrupted

# Lightning's info chatter ("GPU available: ...", tips) goes to stderr, where our one-line errors go: keep
# it to warnings unless --debug. (Lightning sets only its top logger's level, so these stay as set here.)
_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                  "lightning.pytorch.accelerators.cuda", "lightning.pytorch.trainer.connectors.signal_connector")

COMMAND_MODULES = (
    "distilseg.data.commands",  # datasets, data inspect
    "distilseg.models.commands",  # models
    "distilseg.training.commands",  # train
    "distilseg.apps.commands",  # eval, predict
    "distilseg.distill.commands",  # distill, compress, demo
    "distilseg.export.commands",  # export, bench
)


class _Parser(argparse.ArgumentParser):
    """A wrong flag or value is one line, like every other error (``--help`` shows the usage)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message.replace(chr(10), ' ')}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="distilseg",
        description="Train segmentation teachers, distill small students, export and benchmark them.",
    )
    parser.add_argument("--version", action="version", version=f"distilseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if not args.debug:
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
    try:
        code = args.func(args)
    except DistilsegError as exc:
        if args.debug:
            traceback.print_exc()
        message = str(exc).replace("\n", " ")
        if isinstance(exc, RunInterrupted):
            message += "; " + resume_hint(args.command, argv, exc.resumable)
        print(f"distilseg {args.command}: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("distilseg: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


def resume_hint(command: str, argv: list[str], resumable: bool = True) -> str:
    """The exact command that continues an interrupted run (train/distill: the same one with --resume)."""
    again = list(argv)
    if resumable and command in ("train", "distill") and "--resume" not in again:
        again.append("--resume")
    how = "to continue it, run" if resumable else "to start it again, run"
    return f"{how}: {shlex.join(['distilseg', *again])}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``distilseg`` command.

Each area of the package owns its subcommands in a ``commands.py`` module with a
``register(subparsers)`` function that adds parsers and sets ``func`` (called with the parsed
namespace, returning an exit code or None). This file only wires them together and turns
``DistilsegError`` into a one-line message with a non-zero exit code (``--debug`` keeps the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from typing import Sequence

from . import __version__
from .errors import DistilsegError

COMMAND_MODULES = (
    "distilseg.data.commands",  # datasets, data inspect
    "distilseg.models.commands",  # models
    "distilseg.engine.commands",  # train, eval, predict, demo
    "distilseg.distill.commands",  # distill, compress
    "distilseg.export.commands",  # export, bench
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distilseg",
        description="Train segmentation teachers, distill small students, export and benchmark them.",
    )
    parser.add_argument("--version", action="version", version=f"distilseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # an area not built yet must not break the others
            if exc.name == name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except DistilsegError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"distilseg {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("distilseg: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

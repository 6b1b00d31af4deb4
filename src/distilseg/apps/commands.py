"""The ``eval`` and ``predict`` subcommands of ``distilseg``."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from .evaluate import register_eval
    from .predict import register_predict

    register_eval(subparsers)
    register_predict(subparsers)

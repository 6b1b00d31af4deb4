"""``train``, ``demo``, ``eval`` and ``predict`` subcommands of ``distilseg``."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from .demo import register_demo
    from .evaluate import register_eval
    from .predict import register_predict
    from .train import register_train

    register_train(subparsers)
    register_eval(subparsers)
    register_predict(subparsers)
    register_demo(subparsers)

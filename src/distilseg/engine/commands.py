"""``train``, ``demo``, ``eval`` and ``predict`` subcommands of ``distilseg``.

Why the guarded imports: ``eval``/``predict`` live in modules written separately; while one is absent the
other commands must keep working (only a missing module itself is tolerated, not a broken import inside it).
"""
from __future__ import annotations

import argparse
import importlib


def _optional(module: str, func: str, subparsers: argparse._SubParsersAction) -> None:
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return
        raise
    getattr(mod, func)(subparsers)


def register(subparsers: argparse._SubParsersAction) -> None:
    from .demo import register_demo
    from .train import register_train

    register_train(subparsers)
    _optional("distilseg.engine.evaluate", "register_eval", subparsers)
    _optional("distilseg.engine.predict", "register_predict", subparsers)
    register_demo(subparsers)

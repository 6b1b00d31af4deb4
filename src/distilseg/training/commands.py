"""The ``train`` subcommand of ``distilseg``."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    register_train(subparsers)


def register_train(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``train``'s parser needs only the flag table (training.config); Lightning is imported when it runs, so
    every ``distilseg`` command starts without paying for it."""
    from .config import add_train_arguments

    p = subparsers.add_parser(
        "train",
        help="train a segmentation model (Lightning: multi-GPU, resume, best/last artifacts)",
        description="Train a model on a dataset. Settings: defaults < --config YAML < flags. Writes OUT/best, "
        "OUT/last (model artifacts), OUT/checkpoints/last.ckpt (resume), history.csv, curves.png, config.yaml.",
    )
    add_train_arguments(p)
    p.set_defaults(func=_run_train)
    return p


def _run_train(args: argparse.Namespace) -> int:
    from .train import run_train

    return run_train(args)

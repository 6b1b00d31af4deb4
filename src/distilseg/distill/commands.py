"""``distilseg distill``, ``distilseg compress`` and ``distilseg demo``.

Why ``distill`` reuses every ``train`` flag: distillation *is* training with an extra loss, so schedules,
augmentation, mixed precision, DDP and resume behave exactly as in ``train`` (the engine does them); this
module only loads and freezes the teacher and builds the ``Distiller`` hook.
"""
from __future__ import annotations

import argparse

__all__ = ["register", "run_distill", "run_compress"]


def _alias_option(parser: argparse.ArgumentParser, existing: str, alias: str, help_text: str | None = None) -> bool:
    """Make ``alias`` a second spelling of the already-added ``existing`` option (same dest)."""
    action = parser._option_string_actions.get(existing)  # noqa: SLF001 - argparse has no public API for this
    if action is None or alias in parser._option_string_actions:  # noqa: SLF001
        return False
    action.option_strings.insert(0, alias)
    parser._option_string_actions[alias] = action  # noqa: SLF001
    if help_text is not None:
        action.help = help_text
    return True


def _add_distill_parser(subparsers: argparse._SubParsersAction) -> None:
    from .losses import KD_SPEC_HELP

    p = subparsers.add_parser(
        "distill",
        help="train a student with knowledge distillation from a frozen teacher",
        description="Knowledge distillation: every `train` flag applies (--model is the student, also spelled "
        "--student). The teacher is a model artifact folder (or a training output folder with best/) or "
        "zoo:NAME; its class count must match the dataset's.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from ..training.config import add_train_arguments
    from .api import DistillConfig

    add_train_arguments(p, DistillConfig)
    p._option_string_actions["--kd"].help = KD_SPEC_HELP + " (default: original)"  # noqa: SLF001
    _alias_option(p, "--model", "--student", "student architecture (see `distilseg models`)")
    _alias_option(p, "--model-args", "--student-args", "student constructor options k=v")
    p.set_defaults(func=run_distill)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distill``, ``compress`` and ``demo`` (the compress pipeline on synthetic scenes)."""
    _add_distill_parser(subparsers)
    from .compress import add_compress_parser
    from .demo import register_demo

    add_compress_parser(subparsers)
    register_demo(subparsers)


def run_distill(args: argparse.Namespace) -> int:
    from ..training.config import resolve_config
    from .api import DistillConfig, distill

    out = distill(resolve_config(args, DistillConfig))
    print(f"distilled student written to {out}")
    return 0


def run_compress(args: argparse.Namespace) -> int:
    from .compress import run_compress as _run

    return _run(args)

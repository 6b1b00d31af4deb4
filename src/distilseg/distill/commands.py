"""``distilseg distill`` and ``distilseg compress``.

Why ``distill`` reuses every ``train`` flag: distillation *is* training with an extra loss, so schedules,
augmentation, mixed precision, DDP and resume behave exactly as in ``train`` (the engine does them); this
module only loads and freezes the teacher and builds the ``Distiller`` hook.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UsageError

from .api import (  # noqa: F401 - load_teacher, DISTILL_DEFAULTS re-exported (the API lives in api.py)
    DISTILL_DEFAULTS, build_distiller, check_resume_teacher, load_teacher, read_teacher_record, write_distill_record,
)

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
    p.add_argument("--teacher", default=argparse.SUPPRESS, metavar="DIR|zoo:NAME",
                   help="teacher artifact (required here or as `teacher:` in --config)")
    p.add_argument("--kd", default=argparse.SUPPRESS, metavar="SPEC",
                   help=KD_SPEC_HELP + " (default: original)")
    p.add_argument("--hard-weight", dest="hard_weight", type=float, default=argparse.SUPPRESS, metavar="W",
                   help="weight of the task (hard-label) loss; default: the preset's (0.65 for 'original') or 1")
    from ..training.config import add_train_arguments

    add_train_arguments(p)
    _alias_option(p, "--model", "--student", "student architecture (see `distilseg models`)")
    _alias_option(p, "--model-args", "--student-args", "student constructor options k=v")
    p.set_defaults(func=run_distill)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distill`` and ``compress``."""
    _add_distill_parser(subparsers)
    from .compress import add_compress_parser

    add_compress_parser(subparsers)


def run_distill(args: argparse.Namespace) -> int:
    from ..training.train import resolve_config, run_training

    cfg = resolve_config(args, extra=DISTILL_DEFAULTS)
    from ..io import ensure_output_dir

    ensure_output_dir(cfg["out"], create=False)  # before any work
    out = Path(cfg["out"])
    recorded = read_teacher_record(out)
    if cfg["resume"]:  # the run's own record names its teacher; another one is refused
        cfg["teacher"] = check_resume_teacher(out, cfg["teacher"])
    if not cfg["teacher"]:
        raise UsageError("--teacher is required (on the command line or as `teacher:` in --config)")
    teacher_ref, kd = str(cfg["teacher"]), str(cfg["kd"])
    distiller, tconf = build_distiller(cfg, teacher_ref, kd, cfg["hard_weight"])
    print(
        f"distilling {tconf.get('architecture')} (teacher, {teacher_ref}) into {cfg['model']}: "
        f"{distiller.extra_repr()}"
    )
    # What the training settings cannot say: which teacher (path, weights hash) and KD terms made this student.
    # Kept when resuming; a run that is refused below (OUT holds another run) must not overwrite it either.
    if recorded is None or not (cfg["resume"] or (out / "checkpoints" / "last.ckpt").is_file()):
        write_distill_record(out, teacher_ref, tconf, kd, distiller)
    out = run_training(cfg, distiller=distiller)
    print(f"distilled student written to {out}")
    return 0


def run_compress(args: argparse.Namespace) -> int:
    from .compress import run_compress as _run

    return _run(args)

"""``distilseg distill`` and ``distilseg compress``.

Why ``distill`` reuses every ``train`` flag: distillation *is* training with an extra loss, so schedules,
augmentation, mixed precision, DDP and resume behave exactly as in ``train`` (the engine does them); this
module only loads and freezes the teacher and builds the ``Distiller`` hook.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["register", "run_distill", "load_teacher", "build_distiller", "run_compress"]


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
    try:
        from ..engine.train import add_train_arguments
    except ModuleNotFoundError as exc:  # engine not built yet: say so when run
        p.set_defaults(func=lambda args: _missing_engine(exc))
        return
    add_train_arguments(p)
    _alias_option(p, "--model", "--student", "student architecture (see `distilseg models`)")
    _alias_option(p, "--model-args", "--student-args", "student constructor options k=v")
    p.set_defaults(func=run_distill)


def _missing_engine(exc: Exception) -> int:
    raise UsageError(f"the training engine is not available in this installation ({exc})")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distill`` and ``compress``."""
    _add_distill_parser(subparsers)
    from .compress import add_compress_parser

    add_compress_parser(subparsers)


# ------------------------------------------------------------------------------------------------- distill
def load_teacher(ref: str, device: Any = "cpu"):
    """Load the teacher artifact (``DIR``, training output with ``best/``, or ``zoo:NAME``), frozen, eval mode.

    Returns ``(model, config)``. Loading reads safetensors + JSON only.
    """
    from ..engine.artifact import load_artifact
    from ..engine.segmenter import resolve_artifact_dir
    from ..zoo import is_zoo_ref, resolve_zoo

    path = resolve_zoo(ref) if is_zoo_ref(ref) else Path(ref)
    model, config = load_artifact(resolve_artifact_dir(path), map_location="cpu")
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, config


def _cfg_get(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for k in keys:
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    return default


def student_feature_channels(cfg: dict[str, Any], num_classes: int) -> list[int]:
    """The student's ``feature_channels`` (built once on CPU just to read them; cheap for students)."""
    from ..models import create_model

    name = _cfg_get(cfg, "model")
    args = dict(_cfg_get(cfg, "model_args", default={}) or {})
    args.pop("pretrained", None)
    model = create_model(name, int(num_classes), **args)
    return list(getattr(model, "feature_channels", []) or [])


def dataset_num_classes(dataset: str, root: Any = None, dataset_args: dict[str, Any] | None = None) -> int:
    """The class count of ``dataset`` as configured (its options, e.g. ``idd level=1``, ``oxford-pet
    binary=true``, a ``folder`` palette or inferred count), from the training split that training builds.

    Why not ``get_dataset_info(name)["num_classes"]``: that is the default configuration's count, and it is
    ``None`` for datasets whose count depends on the data (``folder``)."""
    from ..data import create_dataset

    ds = create_dataset(dataset, root=root, split="train", **dict(dataset_args or {}))
    return int(ds.num_classes)


def build_distiller(cfg: dict[str, Any], teacher_ref: str, kd: str, hard_weight: float | None):
    """Check the teacher against the dataset and build the ``Distiller`` for ``run_training``."""
    from .distiller import Distiller

    dataset = _cfg_get(cfg, "dataset")
    num_classes = _cfg_get(cfg, "num_classes", default=None)
    if num_classes is None:
        num_classes = dataset_num_classes(dataset, _cfg_get(cfg, "root"), _cfg_get(cfg, "dataset_args", default={}))
    num_classes = int(num_classes)
    teacher, tconf = load_teacher(teacher_ref)
    if int(tconf["num_classes"]) != num_classes:
        raise UsageError(
            f"--teacher {teacher_ref}: the teacher predicts {tconf['num_classes']} classes but dataset "
            f"{dataset!r} has {num_classes}"
        )
    mean, std = _cfg_get(cfg, "mean"), _cfg_get(cfg, "std")
    tmean, tstd = tconf.get("mean"), tconf.get("std")
    if mean is not None and tmean is not None and (
        [round(float(v), 4) for v in mean] != [round(float(v), 4) for v in tmean]
        or [round(float(v), 4) for v in std] != [round(float(v), 4) for v in tstd]
    ):
        print(
            f"warning: the teacher was trained with mean/std {tmean}/{tstd} but the student uses {mean}/{std}; "
            f"the teacher sees the student's normalization",
            file=sys.stderr,
        )
    distiller = Distiller(teacher, kd, student_feature_channels(cfg, num_classes), hard_weight)
    return distiller, tconf


# distill's own settings; like every train setting they can come from --config YAML or from flags
DISTILL_DEFAULTS: dict[str, Any] = {"teacher": None, "kd": "original", "hard_weight": None}


def run_distill(args: argparse.Namespace) -> int:
    from ..engine.train import resolve_config, run_training

    cfg = resolve_config(args, extra=DISTILL_DEFAULTS)
    from ..io import ensure_output_dir

    ensure_output_dir(cfg["out"], create=False)  # before any work
    if not cfg["teacher"]:
        raise UsageError("--teacher is required (on the command line or as `teacher:` in --config)")
    teacher_ref, kd = str(cfg["teacher"]), str(cfg["kd"])
    distiller, tconf = build_distiller(cfg, teacher_ref, kd, cfg["hard_weight"])
    print(
        f"distilling {tconf.get('architecture')} (teacher, {teacher_ref}) into {_cfg_get(cfg, 'model')}: "
        f"{distiller.extra_repr()}"
    )
    from ..io import atomic_write_json

    # What config.yaml (train settings only) cannot say: which teacher and which KD terms made this student.
    atomic_write_json(Path(cfg["out"]) / "distill.json", {
        "teacher": teacher_ref,
        "teacher_architecture": tconf.get("architecture"),
        "kd": kd,
        "hard_weight": distiller.hard_weight,
        "terms": [[name, weight, opts] for name, weight, opts in distiller.terms_spec],
    })
    out = run_training(cfg, distiller=distiller)
    print(f"distilled student written to {out}")
    return 0


def run_compress(args: argparse.Namespace) -> int:
    from .compress import run_compress as _run

    return _run(args)

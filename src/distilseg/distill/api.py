"""The distillation API: ``load_teacher``, ``build_distiller`` and the teacher record of a run.

Used by ``distill`` (``commands.py``) and ``compress`` (``compress.py``); neither imports the other.
A distillation run writes ``OUT/distill.json`` with its teacher's path and the sha256 of its weights, so that
``--resume`` rebuilds the same teacher without ``--teacher`` and refuses a different one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io import atomic_write_json
from ..training.config import TrainConfig, setting

__all__ = ["DistillConfig", "distill", "load_teacher", "build_distiller", "dataset_num_classes", "student_feature_channels",
           "teacher_record", "read_teacher_record", "check_resume_teacher", "write_distill_record"]

RECORD_NAME = "distill.json"


@dataclass
class DistillConfig(TrainConfig):
    """Every ``train`` setting (``model`` is the student) plus distill's own; like those they come from
    ``--config`` YAML, flags or Python, and ``OUT/config.yaml`` holds them too (one file reproduces a run)."""

    teacher: str | None = setting(None, "teacher artifact (required here or as `teacher:` in --config)",
                                  path=True, metavar="DIR|zoo:NAME")
    kd: str = setting("original", "KD spec (see `distilseg distill --help`)", metavar="SPEC")
    hard_weight: float | None = setting(None, "weight of the task (hard-label) loss; default: the preset's (0.65 "
                                        "for 'original') or 1", low=0.0, metavar="W")
    teacher_view: str = setting(
        "same", "what the teacher sees: the student's augmented image (same), or the same crop without the colour, "
        "camera and weather augmentation (clean: its targets come from the image as filmed)",
        choices=("same", "clean"))

    @classmethod
    def own_settings(cls) -> set[str]:
        """The settings distill adds to ``TrainConfig``'s (a saved config with any of them is a distill run)."""
        return {f.name for f in fields(cls)} - {f.name for f in fields(TrainConfig)}


# ------------------------------------------------------------------------------------------------- distill
def load_teacher(ref: str, device: Any = "cpu"):
    """Load the teacher artifact (``DIR``, training output with ``best/``, or ``zoo:NAME``), frozen, eval mode.

    Returns ``(model, config)``. Loading reads safetensors + JSON only.
    """
    from ..artifact import load_artifact
    from ..artifact import resolve_artifact_dir

    model, config = load_artifact(resolve_artifact_dir(ref), map_location="cpu")
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, config


def _cfg_get(cfg: Any, *keys: str, default: Any = None) -> Any:
    """The first of ``keys`` that ``cfg`` (a ``TrainConfig``, or a mapping such as an artifact config) sets."""
    for k in keys:
        value = cfg.get(k) if isinstance(cfg, dict) else getattr(cfg, k, None)
        if value is not None:
            return value
    return default


def student_feature_channels(cfg: dict[str, Any], num_classes: int) -> list[int]:
    """The student's ``feature_channels`` (built once on CPU just to read them; cheap for students)."""
    from ..models import create_model

    name = _cfg_get(cfg, "model")
    args = dict(_cfg_get(cfg, "model_args", default={}) or {})
    args.pop("pretrained", None)
    model = create_model(name, int(num_classes), **args)
    return list(getattr(model, "feature_channels", []) or [])


def dataset_num_classes(dataset: str, root: Any = None, dataset_args: dict[str, Any] | None = None,
                        split: str = "train") -> int:
    """The class count of ``dataset`` as configured (its options, e.g. ``idd level=1``, ``oxford-pet
    binary=true``, a ``folder`` palette or inferred count), from the training split that training builds.

    Why not ``get_dataset_info(name)["num_classes"]``: that is the default configuration's count, and it is
    ``None`` for datasets whose count depends on the data (``folder``)."""
    from ..data import create_dataset

    ds = create_dataset(dataset, root=root, split=split, **dict(dataset_args or {}))
    return int(ds.num_classes)


def build_distiller(cfg: dict[str, Any], teacher_ref: str, kd: str, hard_weight: float | None):
    """Check the teacher against the dataset and build the ``Distiller`` for ``run_training``."""
    from .distiller import Distiller

    dataset = _cfg_get(cfg, "dataset")
    num_classes = _cfg_get(cfg, "num_classes", default=None)
    if num_classes is None:
        num_classes = dataset_num_classes(dataset, _cfg_get(cfg, "root"), _cfg_get(cfg, "dataset_args", default={}),
                                          _cfg_get(cfg, "train_split", default="train"))
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



# ------------------------------------------------------------------------------------------------- record
def weights_sha256(ref: str) -> str:
    """sha256 of the teacher's ``model.safetensors`` (what identifies a teacher, wherever it lies)."""
    from ..artifact import resolve_artifact_dir

    digest = hashlib.sha256()
    with open(resolve_artifact_dir(ref) / "model.safetensors", "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def teacher_record(ref: str) -> dict[str, str]:
    return {"teacher": str(ref), "teacher_sha256": weights_sha256(str(ref))}


def read_teacher_record(out: str | Path) -> dict[str, Any] | None:
    """The record of the run in ``out`` (None when there is none)."""
    path = Path(out) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) and rec.get("teacher") else None


def check_resume_teacher(out: str | Path, given: str | None) -> str | None:
    """On ``--resume``: the teacher to use. None given: the recorded one. Given: it must be the recorded one
    (same weights, by sha256), else a one-line ``UsageError``. No record: ``given`` as is."""
    rec = read_teacher_record(out)
    if rec is None:
        return given
    if not given:
        return str(rec["teacher"])
    if str(given) == str(rec["teacher"]):
        return str(given)
    want = rec.get("teacher_sha256")
    if want and weights_sha256(str(given)) == want:
        return str(given)
    raise UsageError(
        f"--teacher {given}: {out} is a distillation run of teacher {rec['teacher']} (see {Path(out) / RECORD_NAME}); "
        f"leave --teacher out to resume with it, or choose another --out"
    )


def write_distill_record(out: str | Path, teacher_ref: str, tconf: dict[str, Any], kd: str, distiller: Any) -> Path:
    """``OUT/distill.json``: which teacher (path, weights hash) and which KD terms made this student."""
    rec = {
        **teacher_record(teacher_ref),
        "teacher_architecture": tconf.get("architecture"),
        "kd": kd,
        "hard_weight": distiller.hard_weight,
        "terms": [[name, weight, opts] for name, weight, opts in distiller.terms_spec],
    }
    return atomic_write_json(Path(out) / RECORD_NAME, rec)


def distill(cfg: DistillConfig) -> Path:
    """Train ``cfg.model`` (the student) with knowledge distillation from ``cfg.teacher`` (the ``distilseg
    distill`` command from Python); returns OUT, laid out as ``train``'s plus ``distill.json`` (the teacher
    record, which ``resume`` reads when no teacher is given). With ``holdout="each"``, one run per group, each
    from its own teacher (``{fold}`` in ``teacher``), pooled in OUT/cv.json."""
    from ..training.folds import is_each, run_folds

    if is_each(cfg):
        if "{fold}" not in str(cfg.teacher or ""):
            raise UsageError("--holdout each: give each fold its own teacher, one that never saw the held-out "
                             "group, with {fold} in --teacher (e.g. runs/teacher_cv/fold-{fold}/last)")
        return run_folds(cfg, _distill_one, fold_cfg_hook=lambda c, g: dataclasses.replace(
            c, teacher=str(c.teacher).replace("{fold}", g)))
    return _distill_one(cfg)


def _warn_teacher_saw_holdout(cfg: DistillConfig, tconf: dict, teacher_ref: str) -> None:
    """A held-out group the teacher trained on leaks into the student through the teacher's targets."""
    if not cfg.holdout:
        return
    if str(tconf.get("holdout") or "") != str(cfg.holdout):
        print(f"warning: --teacher {teacher_ref} was not trained with --holdout {cfg.holdout} (its record: "
              f"{tconf.get('holdout')}); if it saw the held-out frames, the student's held-out score is optimistic",
              file=sys.stderr)


def _distill_one(cfg: DistillConfig) -> Path:
    from ..io import ensure_output_dir
    from ..training.train import run_training

    ensure_output_dir(cfg.out, create=False)  # before any work
    out = Path(cfg.out)
    recorded = read_teacher_record(out)
    if cfg.resume:  # the run's own record names its teacher; another one is refused
        cfg.teacher = check_resume_teacher(out, cfg.teacher)
        if (out / "checkpoints" / "last.ckpt").is_file():
            from ..training.resume import check_resume_settings

            check_resume_settings(cfg.to_dict(), out)
    if not cfg.teacher:
        raise UsageError("--teacher is required (on the command line or as `teacher:` in --config)")
    teacher_ref, kd = str(cfg.teacher), str(cfg.kd)
    distiller, tconf = build_distiller(cfg, teacher_ref, kd, cfg.hard_weight)
    _warn_teacher_saw_holdout(cfg, tconf, teacher_ref)
    print(f"distilling {tconf.get('architecture')} (teacher, {teacher_ref}) into {cfg.model}: "
          f"{distiller.extra_repr()}")
    # What the training settings cannot say: which teacher (path, weights hash) and KD terms made this student.
    # Kept when resuming; a run that is refused below (OUT holds another run) must not overwrite it either.
    if recorded is None or not (cfg.resume or (out / "checkpoints" / "last.ckpt").is_file()):
        write_distill_record(out, teacher_ref, tconf, kd, distiller)
    return run_training(cfg, distiller=distiller)

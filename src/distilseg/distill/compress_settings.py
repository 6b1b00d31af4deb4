"""``compress`` settings: the presets (YAML under ``distilseg/configs/compress/``), the flags, and the settings
dict a run is made of (a preset with every given flag on top), checked before any stage runs."""
from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path
from typing import Any

import yaml

from .. import safe_yaml
from ..errors import UsageError
from ..training.config import TrainConfig, add_setting_arguments

__all__ = ["PRESETS", "PRESET_DIR", "load_preset", "build_compress_parser", "settings_from_args", "check_models"]


PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "compress"  # ships in the wheel


PRESET_ALIASES = {"full": "seed"}  # former names, still accepted (with a note)


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A shipped preset (``configs/compress/NAME.yaml``: quick, seed) or a YAML file of the same keys."""
    name_or_path = PRESET_ALIASES.get(name_or_path, name_or_path)
    path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise UsageError(f"--preset {name_or_path}: no such preset ({names}) or YAML file")
    try:
        data = safe_yaml.load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"--preset {path}: invalid YAML ({exc})") from exc
    required = set(PRESETS["quick"]) - set(OPTIONAL_KEYS) if PRESETS else set()
    if not isinstance(data, dict) or (required and not required <= set(data) <= required | set(OPTIONAL_KEYS)):
        raise UsageError(f"--preset {path}: expected the keys {', '.join(sorted(required))} "
                         f"(optional: {', '.join(OPTIONAL_KEYS)})")
    for key in ("train", "teacher_train"):
        if not isinstance(data.get(key, {}) or {}, dict):
            raise UsageError(f"--preset {path}: {key} must be a mapping of train settings")
    if data.get("use", "best") not in ("best", "last"):
        raise UsageError(f"--preset {path}: use must be best or last, got {data.get('use')!r}")
    if data.get("teacher_view", "same") not in TEACHER_VIEWS:
        raise UsageError(f"--preset {path}: teacher_view must be same or clean, got {data.get('teacher_view')!r}")
    return data


# The training settings compress takes, as ``TrainConfig`` declares them (same flags, help and checks); the
# preset gives img_size, epochs, batch_size and lr unless a flag does. compress runs its loaders in the main
# process unless told otherwise (its quick preset's images are tiny: worker start-up would dominate).
TRAIN_SETTINGS = ("dataset", "root", "dataset_args", "img_size", "epochs", "batch_size", "lr", "precision",
                  "accelerator", "num_workers", "seed")
TRAIN_DEFAULTS = {"num_workers": 0}
# The training settings compress passes to every stage's `train` section (same flags, help and checks).
SPLIT_SETTINGS = ("train_split", "holdout", "group_by")

# Optional preset keys: `train`: any `train` setting for every training stage (optimizer, loss, splits, ...);
# `teacher_train`: settings for the teacher stage only, on top; `use`: which model of each stage is reported,
# exported and distilled from (best = best validation epoch; last = end of the schedule, for a schedule fixed in
# advance, e.g. when validating on training data or on held-out groups that must not choose the epoch).
# `time_budget`: minutes per stage (teacher, student, kd_student, rest; see compress_plan).
# `teacher_view`: what the teacher sees in the KD stage (same | clean; see `distill --teacher-view`).
OPTIONAL_KEYS = ("train", "teacher_train", "use", "time_budget", "teacher_view")
TEACHER_VIEWS = ("same", "clean")


PRESETS: dict[str, dict[str, Any]] = {}
PRESETS.update({p.stem: load_preset(p.stem) for p in sorted(PRESET_DIR.glob("*.yaml"))})


def build_compress_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .losses import KD_SPEC_HELP

    p = subparsers.add_parser(
        "compress",
        help="teacher -> student -> KD student -> INT8, with accuracy/latency report",
        description="One-command compression pipeline: train the teacher (or take --teacher), train the student "
        "without KD (baseline), distill it with the same schedule, export the KD student to ONNX and INT8 "
        "(calibrated on training images), evaluate all on the validation split, measure CPU latency, and write "
        "compress.json, report.md, report.html and pareto.png to --out. Finished stages are skipped on a re-run, "
        "so an interrupted run continues. --epochs is each student stage's; --img-size, --epochs, --batch-size "
        "and --lr default to the preset's.",
    )
    from_preset = {k: None for k in TRAIN_SETTINGS if k in PRESETS.get("quick", {})}  # help: "the preset's"
    add_setting_arguments(p, TrainConfig, list(TRAIN_SETTINGS), defaults={**TRAIN_DEFAULTS, **from_preset})
    p.add_argument("--teacher", default=None, metavar="DIR|zoo:NAME", help="use this trained teacher (skips stage 1)")
    p.add_argument("--teacher-model", default=None, metavar="NAME", help="teacher architecture to train")
    p.add_argument("--teacher-args", nargs="*", default=None, metavar="K=V", help="teacher constructor options")
    p.add_argument("--student-model", default=None, metavar="NAME",
                   help="student architecture (default: the preset's)")
    p.add_argument("--student-args", nargs="*", default=None, metavar="K=V", help="student constructor options")
    p.add_argument("--preset", default="quick", metavar="{quick,seed}|FILE.yaml",
                   help="schedule and model sizes: quick (within 15 minutes on a CPU: every training stage has a time "
                        "budget), seed (the original system's teacher, student and distillation at 256x256; days "
                        "on a CPU, estimated before it starts; 'full' is its former name) or a YAML file with the "
                        "same keys (see distilseg/configs/compress/)")
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="wall time for the whole run: shared out over the stages as the preset's time_budget "
                        "(default 35/25/30/10 %% for teacher, student, KD student, the rest); each training stage "
                        "then fits its steps and lr schedule to its share")
    p.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default: preset's)")
    p.add_argument("--kd", default=None, metavar="SPEC", help=KD_SPEC_HELP)
    p.add_argument("--hard-weight", type=float, default=None, metavar="W", help="task loss weight in the KD stage")
    p.add_argument("--teacher-view", choices=TEACHER_VIEWS, default=None,
                   help="what the teacher sees in the KD stage (see `distilseg distill --help`; default: the "
                        "preset's, else same)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for latency (default: torch's)")
    p.add_argument("--bench-runs", type=int, default=None)
    p.add_argument("--calibration-images", type=int, default=None)
    p.add_argument("--plan-only", action="store_true",
                   help="print each stage's estimated wall time on this CPU and stop (nothing is trained)")
    p.add_argument("--no-ort-fp32", action="store_true", help="skip the onnxruntime fp32 row of the KD student")
    # they go to every stage's `train` section, over the preset's (camvid-cpu trains on train+val)
    add_setting_arguments(p, TrainConfig, list(SPLIT_SETTINGS), defaults={"train_split": None})
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    return p


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The preset with every explicitly given flag applied on top, the training settings checked as
    ``TrainConfig`` checks them."""
    from ..parsing import parse_key_values

    s = copy.deepcopy(PRESETS[args.preset]) if args.preset in PRESETS else load_preset(args.preset)
    if args.preset in PRESET_ALIASES:
        import sys

        print(f"note: --preset {args.preset} is now called {PRESET_ALIASES[args.preset]}", file=sys.stderr)
    s["preset"] = PRESET_ALIASES.get(args.preset, args.preset)
    given = {k: v for k, v in vars(args).items() if k in TRAIN_SETTINGS or k == "img_size_square"}
    if "img_size_square" in given:
        given["img_size"] = [given.pop("img_size_square")] * 2
    if "dataset_args" in given:
        given["dataset_args"] = parse_key_values(given["dataset_args"], "--dataset-args")
    defaults = {k: v for k, v in TrainConfig.defaults().items() if k in TRAIN_SETTINGS and k not in s}
    s.update(TrainConfig.check_values({**defaults, **TRAIN_DEFAULTS, **given, "dataset": given.get("dataset")}))
    # A preset's model args were written for the preset's model: another --teacher-model / --student-model
    # starts from its own defaults (plus --teacher-args / --student-args).
    for role in ("teacher", "student"):
        name = getattr(args, f"{role}_model", None)
        if name is not None and name != s[f"{role}_model"]:
            s[f"{role}_args"] = {}
    overrides = {
        "teacher_model": args.teacher_model,
        "teacher_args": None if args.teacher_args is None else parse_key_values(args.teacher_args, "--teacher-args"),
        "student_model": args.student_model,
        "student_args": None if args.student_args is None else parse_key_values(args.student_args, "--student-args"),
        "teacher_epochs": args.teacher_epochs,
        "kd": args.kd,
        "hard_weight": args.hard_weight,
        "teacher_view": args.teacher_view,
        "calibration_images": args.calibration_images,
        "bench_runs": args.bench_runs,
    }
    for k, v in overrides.items():
        if v is not None:
            s[k] = v
    s["train"] = dict(s.get("train") or {})
    s["train"].update(TrainConfig.check_values({k: v for k, v in vars(args).items() if k in SPLIT_SETTINGS}))
    if args.teacher_model is not None and args.teacher is not None:
        raise UsageError("give --teacher DIR or --teacher-model NAME, not both")
    if args.kd is not None and args.hard_weight is None:
        s["hard_weight"] = None  # the spec's preset (or 1) decides
    s["teacher"] = args.teacher
    s["threads"] = args.threads
    s["ort_fp32"] = not args.no_ort_fp32
    s["time_budget"] = _time_budget(s, args)
    for key in ("teacher_epochs", "calibration_images", "bench_runs"):
        if int(s[key]) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {s[key]}")
    v = s.get("hard_weight")
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0):
        raise UsageError(f"--hard-weight must be a number >= 0, got {v!r}")
    if s["threads"] is not None and s["threads"] < 1:
        raise UsageError(f"--threads must be >= 1, got {s['threads']}")
    return s


def _time_budget(s: dict[str, Any], args: argparse.Namespace) -> dict[str, float] | None:
    """Minutes per stage, or None (epochs only). An explicit ``--epochs`` / ``--teacher-epochs`` trains those
    stages for that many epochs instead of their share of the time."""
    from .compress_plan import stage_budgets

    total = getattr(args, "time_budget", None)
    if total is not None and not (math.isfinite(total) and total > 0):
        raise UsageError(f"--time-budget must be a positive number of minutes, got {total:g}")
    try:
        budget = stage_budgets(s.get("time_budget"), total, f"--preset {args.preset}")
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if budget is not None:
        if getattr(args, "epochs", None) is not None:
            budget["student"] = budget["kd_student"] = 0.0
        if args.teacher_epochs is not None:
            budget["teacher"] = 0.0
    return budget


def check_models(settings: dict[str, Any], num_classes: int) -> None:
    """Build the teacher (unless ``--teacher`` is given) and the student with their args, on the CPU, without
    pretrained weights; a model that rejects its args is a ``UsageError`` naming the flag."""
    from ..models import create_model

    roles = ["student"] if settings.get("teacher") else ["teacher", "student"]
    for role in roles:
        name = settings[f"{role}_model"]
        args = {k: v for k, v in dict(settings.get(f"{role}_args") or {}).items() if k != "pretrained"}
        try:
            create_model(name, int(num_classes), **args)
        except (TypeError, ValueError, UsageError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(
                f"--{role}-model {name} with {role} args {args}: {msg}; fix --{role}-args"
            ) from exc

"""``compress`` settings: the presets (YAML under ``distilseg/configs/compress/``), the flags, and the settings
dict a run is made of (a preset with every given flag on top), checked before any stage runs."""
from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import yaml

from ..errors import UsageError

__all__ = ["PRESETS", "PRESET_DIR", "load_preset", "build_compress_parser", "settings_from_args", "check_models"]


PRESET_DIR = Path(__file__).resolve().parents[1] / "configs" / "compress"  # ships in the wheel


def load_preset(name_or_path: str) -> dict[str, Any]:
    """A shipped preset (``configs/compress/NAME.yaml``: quick, full) or a YAML file of the same keys."""
    path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        path = Path(name_or_path)
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
        raise UsageError(f"--preset {name_or_path}: no such preset ({names}) or YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UsageError(f"--preset {path}: invalid YAML ({exc})") from exc
    required = set(PRESETS["quick"]) if PRESETS else set()
    if not isinstance(data, dict) or (required and set(data) != required):
        raise UsageError(f"--preset {path}: expected the keys {', '.join(sorted(required))}")
    return data


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
        "so an interrupted run continues.",
    )
    p.add_argument("--dataset", required=True, help="dataset name (see `distilseg datasets`)")
    p.add_argument("--root", default=None, metavar="PATH", help="dataset root folder")
    p.add_argument("--dataset-args", nargs="*", default=None, metavar="K=V", help="extra dataset options")
    p.add_argument("--teacher", default=None, metavar="DIR|zoo:NAME", help="use this trained teacher (skips stage 1)")
    p.add_argument("--teacher-model", default=None, metavar="NAME", help="teacher architecture to train")
    p.add_argument("--teacher-args", nargs="*", default=None, metavar="K=V", help="teacher constructor options")
    p.add_argument("--student-model", default=None, metavar="NAME",
                   help="student architecture (default: the preset's)")
    p.add_argument("--student-args", nargs="*", default=None, metavar="K=V", help="student constructor options")
    p.add_argument("--preset", default="quick", metavar="{quick,full}|FILE.yaml",
                   help="schedule and model sizes: quick (minutes on a CPU, synthetic-sized), full (real runs) or a "
                        "YAML file with the same keys (see distilseg/configs/compress/)")
    p.add_argument("--img-size", nargs=2, type=int, default=None, metavar=("H", "W"), help="training/inference size")
    p.add_argument("--epochs", type=int, default=None, help="epochs of each student stage (default: preset's)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="teacher epochs (default: preset's)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--kd", default=None, metavar="SPEC", help=KD_SPEC_HELP)
    p.add_argument("--hard-weight", type=float, default=None, metavar="W", help="task loss weight in the KD stage")
    p.add_argument("--precision", default=None, choices=("32", "16-mixed", "bf16-mixed"))
    p.add_argument("--accelerator", default=None, choices=("auto", "cpu", "gpu"), help="training device")
    p.add_argument("--num-workers", type=int, default=None, help="data loader workers (default 0)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for latency (default: torch's)")
    p.add_argument("--bench-runs", type=int, default=None)
    p.add_argument("--calibration-images", type=int, default=None)
    p.add_argument("--no-ort-fp32", action="store_true", help="skip the onnxruntime fp32 row of the KD student")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    return p


def _kv_list(items: list[str] | None, flag: str) -> dict[str, Any] | None:
    if items is None:
        return None
    from ..parsing import parse_key_values

    return parse_key_values(items, flag)


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The preset with every explicitly given flag applied on top."""
    s = copy.deepcopy(PRESETS[args.preset]) if args.preset in PRESETS else load_preset(args.preset)
    s["preset"] = args.preset
    s["dataset"] = args.dataset
    s["root"] = args.root
    # A preset's model args were written for the preset's model: another --teacher-model / --student-model
    # starts from its own defaults (plus --teacher-args / --student-args).
    for role in ("teacher", "student"):
        name = getattr(args, f"{role}_model", None)
        if name is not None and name != s[f"{role}_model"]:
            s[f"{role}_args"] = {}
    overrides = {
        "dataset_args": _kv_list(args.dataset_args, "--dataset-args"),
        "teacher_model": args.teacher_model,
        "teacher_args": _kv_list(args.teacher_args, "--teacher-args"),
        "student_model": args.student_model,
        "student_args": _kv_list(args.student_args, "--student-args"),
        "img_size": list(args.img_size) if args.img_size else None,
        "epochs": args.epochs,
        "teacher_epochs": args.teacher_epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "kd": args.kd,
        "hard_weight": args.hard_weight,
        "calibration_images": args.calibration_images,
        "bench_runs": args.bench_runs,
    }
    for k, v in overrides.items():
        if v is not None:
            s[k] = v
    if args.teacher_model is not None and args.teacher is not None:
        raise UsageError("give --teacher DIR or --teacher-model NAME, not both")
    if args.kd is not None and args.hard_weight is None:
        s["hard_weight"] = None  # the spec's preset (or 1) decides
    s["teacher"] = args.teacher
    s["precision"] = args.precision or "32"
    s["accelerator"] = args.accelerator or "auto"
    s["num_workers"] = 0 if args.num_workers is None else int(args.num_workers)
    s["seed"] = 42 if args.seed is None else int(args.seed)
    s["threads"] = args.threads
    s["ort_fp32"] = not args.no_ort_fp32
    for key in ("epochs", "teacher_epochs", "batch_size", "calibration_images", "bench_runs"):
        if int(s[key]) < 1:
            raise UsageError(f"--{key.replace('_', '-')} must be >= 1, got {s[key]}")
    if min(s["img_size"]) < 1:
        raise UsageError(f"--img-size must be positive, got {s['img_size']}")
    return s


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

"""The seed table: every architecture of the original system trained on CamVid with one recipe and one CPU budget.

    python benchmarks/seed_systems.py --root ../shared/datasets/camvid --runs runs/seed_systems [--budget 30] \
        [--models unet,msa_unet,...] [--dry-run]

For each model (``MODELS``, plus ``msa_unet_student_kd``: ``msa_unet_student`` distilled from this table's
``msa_unet`` with the original KD setting, ``--kd original``: logits at T=6, soft 0.35 / hard 0.65) it runs

1. ``distilseg train`` (or ``distill``) with the recipe below and ``--time-budget BUDGET`` minutes: the first
   steps are timed and the step count is fixed to fit the budget, with the cosine schedule fitted to it;
   256x320 crops, validation on whole 360x480 frames; CamVid ``train+val`` for training, holding out the street
   ``0001TP`` (62 frames, every class) for validation (``--holdout 0001TP``);
2. ``distilseg eval`` of the best model on the held-out street (per-class IoU);
3. ONNX Runtime latency (fp32 and INT8, batch 1, 2 threads, 360x480) of the best model.

Each model's run folder is ``RUNS/MODEL``; a model whose run finished is not trained again, an interrupted one
is resumed (``--resume``). Results go to ``benchmarks/results/seed_systems.json``:
``{"budget_minutes", "img_size", "val_split", "rows": [...]}``, one row per model with ``model``, ``kd``,
``init`` (what the weights started from), ``val_mIoU`` (0..1), ``params``, ``gflops`` (360x480), ``minutes``
(wall time of its training), ``steps``, ``ort_fp32_ms``, ``ort_int8_ms`` and ``per_class`` IoU. The JSON is
rewritten after every model, so a long table can be read while it fills. The two seed students
(``msa_unet_student`` and ``msa_unet_student_kd``) also keep their best model with fp16 weights in
``benchmarks/results/seed_systems/NAME/best_fp16/`` (about 0.5 MB each, small enough for git).

``--markdown PAGE`` writes the table as a page (mIoU, mIoU per CPU-hour of training, size, latency, and per-class
IoU) from the JSON, without training:

    python benchmarks/seed_systems.py --markdown benchmarks/seed_systems.md
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from distilseg.io import atomic_write_text

HOLDOUT = "0001TP"
IMG_SIZE = [256, 320]
EVAL_SIZE = [360, 480]
# One recipe for every row: AdamW, cosine with half an epoch of warm-up, CE + Dice, batch 8; the budget, not
# the epoch count, sets the length (--epochs is only an upper bound no model reaches).
RECIPE = ["--img-size", *map(str, IMG_SIZE), "--eval-size", *map(str, EVAL_SIZE), "--batch-size", "8",
          "--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0.01", "--scheduler", "cosine",
          "--warmup-epochs", "0.5", "--loss", "ce:1,dice:0.5", "--epochs", "1000", "--num-workers", "1",
          "--seed", "0", "--no-progress"]
# model -> (registry name, model args, init, extra flags). From scratch unless offline ImageNet weights exist.
MODELS: dict[str, tuple[str, dict[str, Any], str, list[str]]] = {
    "unet": ("unet", {}, "scratch", []),
    "attention_unet": ("attention_unet", {}, "scratch", []),
    "msa_unet": ("msa_unet", {}, "scratch", []),
    "msa_unet_student": ("msa_unet_student", {}, "scratch", []),
    "msa_unet_student_kd": ("msa_unet_student", {}, "scratch, distilled from msa_unet (--kd original)", []),
    # its full-resolution stages keep about 15 GB of activations at batch 8; recomputing them fits 24 GB and
    # leaves the step's result unchanged (tests/test_grad_checkpointing.py)
    "dilated_dws_unet": ("dilated_dws_unet", {}, "scratch", ["--grad-checkpointing"]),
    # the original's DANet used an ImageNet EfficientNet-B3; EfficientNet-Lite2 is the nearest offline one
    "danet": ("danet", {"encoder": "efficientnet_lite2"}, "ImageNet encoder (EfficientNet-Lite2, offline)",
              ["--pretrained", "imagenet"]),
    "fcn_resnet50": ("fcn_resnet50", {}, "scratch", []),
    "segformer": ("segformer", {}, "scratch", []),
    # reference rows
    "fpn": ("fpn", {"encoder": "efficientnet_lite0", "encoder_depth": 4, "pyramid_channels": 96,
                    "segmentation_channels": 64, "decode_stride": 8},
            "ImageNet encoder (EfficientNet-Lite0, offline)", ["--pretrained", "imagenet"]),
    "lite_student": ("lite_student", {}, "scratch", []),
}
KD_ROWS = {"msa_unet_student_kd": "msa_unet"}  # KD row -> the table row that is its teacher
DISTILSEG = [sys.executable, "-m", "distilseg.cli"]


def _model_args(args: dict[str, Any]) -> list[str]:
    return ["--model-args", *(f"{k}={v}" for k, v in args.items())] if args else []


def data_flags(root: str, split_flag: str = "--train-split") -> list[str]:
    return ["--dataset", "camvid", "--root", root, split_flag, "train+val", "--holdout", HOLDOUT]


def train_command(name: str, root: str, runs: Path, budget: float, train_args: list[str] | None = None) -> list[str]:
    """The training (or, for a KD row, distillation) command of one row; ``train_args`` go to every row."""
    arch, margs, _, extra = MODELS[name]
    cmd = DISTILSEG + (["distill", "--teacher", str(runs / KD_ROWS[name] / "best"), "--kd", "original"]
                       if name in KD_ROWS else ["train"])
    return (cmd + data_flags(root) + ["--model", arch] + _model_args(margs) + extra + RECIPE + list(train_args or [])
            + ["--time-budget", f"{budget:g}", "--resume", "--out", str(runs / name)])


def eval_command(name: str, root: str, runs: Path) -> list[str]:
    return DISTILSEG + ["eval", "--checkpoint", str(runs / name / "best")] + data_flags(root, "--split") + [
        "--samples", "0", "--no-progress", "--out", str(runs / name / "eval")]


def history(run: Path) -> list[dict[str, str]]:
    path = run / "history.csv"
    if not path.is_file():
        return []
    with open(path) as fh:
        return list(csv.DictReader(fh))


def finished(run: Path) -> bool:
    """The training command ended successfully (``seed_minutes.json``) and left its best model."""
    path = run / "seed_minutes.json"
    return (run / "best" / "config.json").is_file() and path.is_file() and json.loads(path.read_text())["done"]


def add_minutes(run: Path, minutes: float, done: bool) -> None:
    """Wall minutes of the training, added up over launches (a resumed run continues the count)."""
    path = run / "seed_minutes.json"
    prev = json.loads(path.read_text()).get("minutes", 0.0) if path.is_file() else 0.0
    path.write_text(json.dumps({"minutes": round(prev + minutes, 2), "done": done}) + "\n")


def make_row(name: str, run: Path, bench: dict[str, Any]) -> dict[str, Any]:
    """One table row from a run folder (history.csv, seed_minutes.json, eval/metrics.json) and its latencies."""
    _, _, init, _ = MODELS[name]
    rows = history(run)
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    minutes_file = run / "seed_minutes.json"
    return {
        "model": name,
        "kd": name in KD_ROWS,
        "init": init,
        "val_mIoU": metrics["mIoU"],
        "params": bench.get("params"),
        "gflops": bench.get("gflops"),
        "minutes": json.loads(minutes_file.read_text())["minutes"] if minutes_file.is_file() else None,
        "steps": int(rows[-1]["step"]) if rows else None,
        "budget_steps": int(rows[-1]["budget_steps"]) if rows and rows[-1].get("budget_steps") else None,
        "ort_fp32_ms": bench.get("ort_fp32_ms"),
        "ort_int8_ms": bench.get("ort_int8_ms"),
        "per_class": {c["name"]: c["iou"] for c in metrics.get("per_class", [])},
    }


def table(budget: float, rows: list[dict[str, Any]], train_args: list[str] | None = None) -> dict[str, Any]:
    return {"budget_minutes": budget, "img_size": IMG_SIZE, "eval_size": EVAL_SIZE,
            "val_split": f"CamVid train+val, sequence {HOLDOUT} held out", "train_args": list(train_args or []),
            "rows": rows}


def latencies(run: Path, root: str, threads: int = 2, runs: int = 20) -> dict[str, Any]:
    """params, GFLOPs and ONNX Runtime fp32 / INT8 latency of ``run/best`` at 360x480, batch 1."""
    from distilseg.export.bench import benchmark
    from distilseg.export.onnx_export import export_checkpoint

    best, folder = run / "best", run / "export"
    folder.mkdir(exist_ok=True)
    common = dict(img_size=tuple(EVAL_SIZE), threads=threads, runs=runs, warmup=3)
    fp32 = benchmark(checkpoint=str(best), runtime="onnxruntime", **common)
    int8 = folder / "int8.onnx"
    if not int8.is_file():
        export_checkpoint(str(best), int8, img_size=EVAL_SIZE, int8=True, calibration_dataset="camvid",
                          calibration_root=root, calibration_split="train", calibration_images=32, check_images=0)
    q = benchmark(checkpoint=str(int8), runtime="onnxruntime", **common)
    return {"params": fp32.get("params"), "gflops": fp32.get("gflops"),
            "ort_fp32_ms": fp32.get("latency_ms_median"), "ort_int8_ms": q.get("latency_ms_median")}


KEEP_FP16 = ("msa_unet_student", "msa_unet_student_kd")
PAGE_TITLE = "# Seed systems on CamVid"
RESULTS = Path(__file__).resolve().parent / "results" / "seed_systems"


def keep_fp16(name: str, run: Path, results: Path = RESULTS) -> Path | None:
    """``run/best`` with fp16 weights in ``results/NAME/best_fp16`` (the seed students only)."""
    if name not in KEEP_FP16:
        return None
    from distilseg.artifact import load_artifact, save_artifact

    model, config = load_artifact(run / "best")
    return save_artifact(results / name / "best_fp16", model, config, half=True)


def markdown(doc: dict[str, Any]) -> str:
    """The seed table as a Markdown page."""
    rows = doc.get("rows", [])
    lines = [
        PAGE_TITLE, "",
        f"Every architecture of the original system, one recipe, {doc['budget_minutes']:g} minutes of training on "
        f"this CPU each ({doc['img_size'][0]}x{doc['img_size'][1]} crops); validated on whole "
        f"{doc.get('eval_size', EVAL_SIZE)[0]}x{doc.get('eval_size', EVAL_SIZE)[1]} frames of a street held out of "
        f"training ({doc['val_split']}). Produced by `python benchmarks/seed_systems.py` "
        "(`benchmarks/results/seed_systems.json`); latency: ONNX Runtime, batch 1, 2 threads, 360x480."
        + (f" Every row trained with `{shlex.join(doc['train_args'])}`." if doc.get("train_args") else ""), "",
        "| model | KD | started from | mIoU | mIoU per CPU-hour | params | GFLOPs | minutes | steps | ORT fp32 ms "
        "| ORT INT8 ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in rows:
        per_hour = 100 * r["val_mIoU"] / (r["minutes"] / 60.0) if r.get("minutes") else None
        lines.append(f"| `{r['model']}` | {'yes' if r['kd'] else 'no'} | {r['init']} | {100 * r['val_mIoU']:.1f} | "
                     f"{num(per_hour, '.1f')} | {num(r.get('params'), ',')} | {num(r.get('gflops'), '.2f')} | "
                     f"{num(r.get('minutes'), '.1f')} | {num(r.get('steps'), 'd')} | "
                     f"{num(r.get('ort_fp32_ms'), '.1f')} | {num(r.get('ort_int8_ms'), '.1f')} |")
    pending = [m for m in MODELS if m not in {r["model"] for r in rows}]
    if pending:
        lines += ["", "Not trained yet (`--models " + ",".join(pending) + "`): "
                  + ", ".join(f"`{m}`" for m in pending) + "."]
    classes = list(dict.fromkeys(c for r in rows for c in r.get("per_class", {})))
    if classes:
        lines += ["", "Per-class IoU on the held-out street (%):", "",
                  "| model | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
        for r in rows:
            cells = [num(None if r["per_class"].get(c) is None else 100 * r["per_class"][c], ".1f") for c in classes]
            lines.append(f"| `{r['model']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_row(name: str, args: argparse.Namespace) -> dict[str, Any]:
    run = args.runs / name
    teacher = args.runs / KD_ROWS[name] if name in KD_ROWS else None
    if teacher is not None and not finished(teacher):
        raise SystemExit(f"{name}: its teacher row {KD_ROWS[name]} has not finished; add it to --models")
    if not finished(run):
        run.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        proc = subprocess.run(train_command(name, args.root, args.runs, args.budget, args.train_args))
        add_minutes(run, (time.perf_counter() - t0) / 60.0, done=proc.returncode == 0)
        if proc.returncode != 0:
            raise SystemExit(f"{name}: training failed ({proc.returncode}); run the script again to resume it")
    if not (run / "eval" / "metrics.json").is_file():
        subprocess.run(eval_command(name, args.root, args.runs), check=True)
    bench_file = run / "latency.json"
    if not bench_file.is_file():
        bench_file.write_text(json.dumps(latencies(run, args.root)) + "\n")
    keep_fp16(name, run, args.fp16_dir)
    return make_row(name, run, json.loads(bench_file.read_text()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/datasets/camvid", help="CamVid folder")
    ap.add_argument("--runs", type=Path, default=Path("runs/seed_systems"), help="a run folder per model")
    ap.add_argument("--budget", type=float, default=30.0, metavar="MINUTES", help="training minutes per model")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated rows to run (default: all)")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/seed_systems.json"))
    ap.add_argument("--train-args", type=shlex.split, default=[], metavar="'FLAGS'",
                    help="more training flags for every row, given with '=': --train-args='--keep-freed-memory' "
                    "(recorded in the JSON)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    ap.add_argument("--fp16-dir", type=Path, default=RESULTS, metavar="DIR",
                    help="where the seed students' fp16 models go (DIR/NAME/best_fp16)")
    ap.add_argument("--markdown", type=Path, default=None, metavar="PAGE",
                    help="write the table in --json as a Markdown page and stop (trains nothing)")
    args = ap.parse_args(argv)
    if args.markdown is not None:
        if not args.json.is_file():
            ap.error(f"{args.json}: no seed table yet; run the script without --markdown first")
        if args.markdown.exists() and not args.markdown.read_text().startswith(PAGE_TITLE):
            ap.error(f"{args.markdown}: exists and is not a seed table page; choose another --markdown")
        atomic_write_text(args.markdown, markdown(json.loads(args.json.read_text())))
        print(f"wrote {args.markdown}")
        return 0
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    # a KD row needs its teacher's row first
    names = sorted(names, key=lambda m: (m in KD_ROWS, list(MODELS).index(m)))
    if args.dry_run:
        for name in names:
            print(shlex.join(train_command(name, args.root, args.runs, args.budget, args.train_args)))
            print(shlex.join(eval_command(name, args.root, args.runs)))
        return 0
    old = json.loads(args.json.read_text()) if args.json.is_file() else {}
    if old.get("rows") and old.get("train_args", []) != args.train_args:
        ap.error(f"{args.json}: its rows were trained with --train-args {shlex.join(old.get('train_args', []))!r}; "
                 "write other settings to another --json")
    rows = {r["model"]: r for r in old.get("rows", [])}
    for name in names:
        rows[name] = run_row(name, args)
        ordered = [rows[m] for m in MODELS if m in rows]
        doc = table(args.budget, ordered, args.train_args)
        atomic_write_text(args.json, json.dumps(doc, indent=1) + "\n")  # atomic: hours of rows
        print(json.dumps({k: v for k, v in rows[name].items() if k != "per_class"}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

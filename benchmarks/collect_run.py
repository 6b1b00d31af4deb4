"""Keep what a finished CamVid run produced, in the repository: settings, history, curves, log, and its val
mIoU measured the way a user measures it (``distilseg eval``, fp32 and, with ``--int8``, the INT8 ONNX file).

    python benchmarks/collect_run.py RUN benchmarks/results/NAME --root ../shared/datasets/camvid \
        [--int8] [--log RUN.log] [--times /work/runs/times.log --name RUNNAME]

Writes into NAME: ``config.yaml``, ``history.csv``, ``curves.png``, ``distill.json`` (when the run has them),
``train.log`` (the console log without progress-bar redraws), ``val_metrics_fp32.json`` / ``val_metrics_int8.json``
/ ``val_metrics_int8_full_range.json`` (``distilseg eval`` metrics.json; INT8 exported with ``--weight-bits 7``
and ``--weight-bits 8``) and ``summary.json`` (seed, val mIoU, INT8 mIoU, wall minutes, commands).
Model weights stay out of git (``bundle_zoo.py`` stores the bundled ones in fp16).
"""
from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

KEEP = ("config.yaml", "history.csv", "curves.png", "distill.json")


def _run(cmd: list[str], log: list[str]) -> None:
    log.append(shlex.join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}")


def clean_log(text: str) -> str:
    """The console log as a reader wants it: each epoch's final progress line and every message, without the
    bars' redraws, the validation bars and terminal escape codes."""
    lines = []
    for line in text.split("\n"):  # not splitlines(): it also splits at the bars' carriage returns
        last = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", line.split("\r")[-1]).rstrip()
        if last and not last.startswith(("Validation", "Training: |")):
            lines.append(last)
    return "\n".join(lines) + "\n"


def wall_minutes(times_log: Path, name: str) -> float | None:
    """Minutes between ``START name ISO`` and the last ``END name ... ISO`` lines of the chain's times.log."""
    start = end = None
    for line in times_log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == name:
            stamp = next((p for p in parts[2:] if re.match(r"\d{4}-\d\d-\d\dT", p)), None)
            if stamp is None:
                continue
            t = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            if parts[0] == "START" and start is None:
                start = t
            elif parts[0] == "END":
                end = t
    return round((end - start).total_seconds() / 60, 1) if start and end else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="training output folder (has best/, config.yaml, history.csv)")
    ap.add_argument("dest", type=Path, help="benchmarks/results/NAME")
    ap.add_argument("--root", required=True, help="CamVid root")
    ap.add_argument("--int8", action="store_true", help="also export INT8 (64 train images) and evaluate it")
    ap.add_argument("--log", type=Path, help="the run's console log")
    ap.add_argument("--times", type=Path, help="START/END log of the run chain (for the wall time)")
    ap.add_argument("--name", help="the run's name in --times (default: the run folder's name)")
    args = ap.parse_args(argv)
    best = args.run / "best"
    if not (best / "config.json").is_file():
        raise SystemExit(f"{best}: no model artifact (is the run finished?)")
    args.dest.mkdir(parents=True, exist_ok=True)
    for name in KEEP:
        if (args.run / name).is_file():
            shutil.copy2(args.run / name, args.dest / name)
    if args.log:
        raw = args.log.read_bytes().decode(errors="replace")  # not read_text(): it turns each "\r" into a newline
        (args.dest / "train.log").write_text(clean_log(raw))
    commands: list[str] = []
    data = ["--dataset", "camvid", "--root", args.root, "--split", "val", "--no-progress"]
    summary: dict[str, Any] = {"run": str(args.run)}
    with tempfile.TemporaryDirectory(prefix="collect-") as td:
        _run(["distilseg", "eval", "--checkpoint", str(best), *data, "--out", f"{td}/fp32"], commands)
        shutil.copy2(f"{td}/fp32/metrics.json", args.dest / "val_metrics_fp32.json")
        summary["val_mIoU"] = json.loads((args.dest / "val_metrics_fp32.json").read_text())["mIoU"]
        # INT8 with 7-bit weights (safe on every x86 CPU) and with 8-bit weights (export's default on CPUs
        # with VNNI, such as this project's, and on ARM)
        for variant, extra in (("int8", ["--weight-bits", "7"]), ("int8_full_range", ["--weight-bits", "8"])):
            if not args.int8:
                break
            onnx = f"{td}/model_{variant}.onnx"
            _run(["distilseg", "export", "--checkpoint", str(best), "--out", onnx, "--int8", "--calibration-dataset",
                  "camvid", "--calibration-root", args.root, "--calibration-split", "train",
                  "--calibration-images", "64", "--check-images", "0", *extra], commands)
            _run(["distilseg", "eval", "--checkpoint", onnx, *data, "--out", f"{td}/{variant}"], commands)
            shutil.copy2(f"{td}/{variant}/metrics.json", args.dest / f"val_metrics_{variant}.json")
            summary[f"val_mIoU_{variant}"] = json.loads((args.dest / f"val_metrics_{variant}.json").read_text())["mIoU"]
    config = yaml.safe_load((args.run / "config.yaml").read_text()) if (args.run / "config.yaml").is_file() else {}
    train_split = str(config.get("train_split") or "train")
    summary.update(seed=config.get("seed"), epochs=config.get("epochs"), model=config.get("model"),
                   model_args=config.get("model_args"), train_split=train_split,
                   # val_mIoU is a held-out score only when the run did not train on val
                   val_held_out="val" not in train_split.split("+"), commands=commands)
    if args.times:
        summary["wall_minutes"] = wall_minutes(args.times, args.name or args.run.name)
    (args.dest / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in summary if k != "commands"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The CamVid zoo table: validation mIoU (PyTorch fp32 and ONNX Runtime INT8), size and CPU latency per model.

Runs, for each bundled model, exactly the commands a user would type, and keeps their outputs:

    distilseg eval   --checkpoint zoo:NAME --dataset camvid --root ROOT --split val --out OUT/NAME/eval_fp32
    distilseg export --checkpoint zoo:NAME --out OUT/NAME/model_fp32.onnx
    distilseg export --checkpoint zoo:NAME --out OUT/NAME/model_int8.onnx --int8 --weight-bits 7 --calibration-dataset camvid ...
    distilseg eval   --checkpoint OUT/NAME/model_int8.onnx ... --out OUT/NAME/eval_int8
    (and the same INT8 export with --weight-bits 8, export's default on CPUs with VNNI (this one) and ARM)
    distilseg bench  --checkpoint zoo:NAME | model_fp32.onnx | model_int8.onnx --img-size 360 480 --threads 2 --json

Usage:
    python benchmarks/camvid_zoo.py --root ../shared/datasets/camvid \
        [--models camvid-teacher camvid-student camvid-student-kd] [--out /tmp/camvid_zoo] \
        [--json benchmarks/results/camvid_zoo.json]

Prints a Markdown table (the README's) and writes the JSON with every command, metric and timing.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MODELS = ["camvid-teacher", "camvid-student", "camvid-student-kd"]


def _run(cmd: list[str], log: list[dict[str, Any]]) -> str:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log.append({"command": shlex.join(cmd), "seconds": round(time.perf_counter() - t0, 1)})
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-4000:])
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}")
    return proc.stdout


def _bench(ref: str, runtime: str, args: argparse.Namespace, log: list[dict[str, Any]]) -> dict[str, Any]:
    out = _run(["distilseg", "bench", "--checkpoint", ref, "--img-size", "360", "480", "--runtime", runtime,
                "--threads", str(args.threads), "--runs", str(args.runs), "--json"], log)
    return json.loads(out.strip().splitlines()[-1])


def _int8(ref: str, onnx: Path, eval_out: Path, extra: list[str], data: list[str], args: argparse.Namespace,
          log: list[dict[str, Any]]) -> dict[str, Any]:
    """``distilseg export --int8 [extra]`` calibrated on CamVid train, then ``distilseg eval`` of the file."""
    _run(["distilseg", "export", "--checkpoint", ref, "--out", str(onnx), "--int8", *extra, "--calibration-dataset",
          "camvid", "--calibration-root", args.root, "--calibration-split", "train", "--calibration-images",
          str(args.calibration_images), "--check-images", "0"], log)
    _run(["distilseg", "eval", "--checkpoint", str(onnx), *data, "--out", str(eval_out)], log)
    return json.loads((eval_out / "metrics.json").read_text())


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    log: list[dict[str, Any]] = []
    ref, folder = f"zoo:{name}", Path(args.out) / name
    data = ["--dataset", "camvid", "--root", args.root, "--split", "val", "--no-progress"]
    _run(["distilseg", "eval", "--checkpoint", ref, *data, "--out", str(folder / "eval_fp32")], log)
    fp32_metrics = json.loads((folder / "eval_fp32" / "metrics.json").read_text())
    fp32_onnx, int8_onnx = folder / "model_fp32.onnx", folder / "model_int8.onnx"
    _run(["distilseg", "export", "--checkpoint", ref, "--out", str(fp32_onnx), "--check-images", "0"], log)
    int8_metrics = _int8(ref, int8_onnx, folder / "eval_int8", ["--weight-bits", "7"], data, args, log)
    full_onnx = folder / "model_int8_full_range.onnx"  # 8-bit weights: for VNNI (this CPU) and ARM targets
    full_metrics = _int8(ref, full_onnx, folder / "eval_int8_full", ["--weight-bits", "8"], data, args, log)
    torch_b = _bench(ref, "torch", args, log)
    ort_b = _bench(str(fp32_onnx), "onnxruntime", args, log)
    int8_b = _bench(str(int8_onnx), "onnxruntime", args, log)
    full_b = _bench(str(full_onnx), "onnxruntime", args, log)
    return {
        "name": name,
        "val_mIoU": fp32_metrics["mIoU"],
        "val_mIoU_int8": int8_metrics["mIoU"],
        "val_mIoU_int8_full_range": full_metrics["mIoU"],
        "per_class_iou": {c["name"]: c["iou"] for c in fp32_metrics["per_class"]},
        "per_class_iou_int8": {c["name"]: c["iou"] for c in int8_metrics["per_class"]},
        "params": torch_b["params"],
        "gflops": torch_b["gflops"],
        "latency_ms": {"torch_fp32": torch_b["latency_ms_median"], "ort_fp32": ort_b["latency_ms_median"],
                       "ort_int8": int8_b["latency_ms_median"], "ort_int8_full_range": full_b["latency_ms_median"]},
        "onnx_mb": {"fp32": fp32_onnx.stat().st_size / 1e6, "int8": int8_onnx.stat().st_size / 1e6},
        "commands": log,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | val mIoU (fp32) | val mIoU INT8 (7-bit / 8-bit weights) | params | GFLOPs | PyTorch ms "
             "| ORT fp32 ms (FPS) | ORT INT8 ms (FPS) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency_ms"]
        lines.append(
            f"| `zoo:{r['name']}` | {100 * r['val_mIoU']:.1f} | {100 * r['val_mIoU_int8']:.1f} / "
            f"{100 * r['val_mIoU_int8_full_range']:.1f} | "
            f"{r['params'] / 1e6:.2f}M | {r['gflops']:.1f} | {lat['torch_fp32']:.0f} | "
            f"{lat['ort_fp32']:.1f} ({1000 / lat['ort_fp32']:.0f}) | {lat['ort_int8']:.1f} ({1000 / lat['ort_int8']:.0f}) |"
        )
    classes = list(rows[0]["per_class_iou"]) if rows else []
    lines += ["", "| model | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for r in rows:
        lines.append(f"| `zoo:{r['name']}` | " + " | ".join(f"{100 * r['per_class_iou'][c]:.1f}" for c in classes)
                     + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True, help="CamVid root (train/, val/, trainannot/, valannot/)")
    p.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    p.add_argument("--out", default="/tmp/camvid_zoo", help="ONNX files and eval outputs")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--calibration-images", type=int, default=64)
    args = p.parse_args(argv)
    rows = []
    for name in args.models:
        print(f"measuring zoo:{name} ...", file=sys.stderr, flush=True)
        rows.append(measure(name, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "img_size": [360, 480], "split": "val",
                                               "models": rows}, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

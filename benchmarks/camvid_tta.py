"""Test-time augmentation on CamVid val for the bundled models: plain eval next to eval with
multi-scale + flip TTA, scored at the labels' native 360x480. Runs exactly what a user would type:

    distilseg eval --checkpoint zoo:NAME --dataset camvid --root ROOT --split val --out OUT/NAME/plain
    distilseg eval --checkpoint zoo:NAME ... --tta scales=0.75,1,1.25 flip --out OUT/NAME/tta

Usage:
    python benchmarks/camvid_tta.py --root ../shared/datasets/camvid --json benchmarks/results/camvid_tta.json

Prints a Markdown table (the README's) and writes the JSON with every command, mIoU and wall time.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

MODELS = ["camvid-teacher", "camvid-student", "camvid-student-kd"]
SETTINGS = {"plain": [], "flip": ["--tta", "flip"], "scales=0.75,1,1.25 flip": ["--tta", "scales=0.75,1,1.25", "flip"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--out", default="/tmp/camvid_tta")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for name in args.models:
        row = {"model": f"zoo:{name}", "runs": {}}
        for label, extra in SETTINGS.items():
            out = Path(args.out) / name / label.replace(" ", "_").replace(",", "_").replace("=", "")
            cmd = ["distilseg", "eval", "--checkpoint", f"zoo:{name}", "--dataset", "camvid", "--root", args.root,
                   "--split", "val", "--no-progress", "--out", str(out), *extra]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-3000:])
                raise SystemExit(f"failed: {shlex.join(cmd)}")
            metrics = json.loads((out / "metrics.json").read_text())
            row["runs"][label] = {"command": shlex.join(cmd), "mIoU": metrics["mIoU"],
                                  "pixel_accuracy": metrics["pixel_accuracy"],
                                  "seconds": round(time.perf_counter() - t0, 1)}
            print(json.dumps({"model": name, "setting": label, "mIoU": round(metrics["mIoU"], 4)}), flush=True)
        rows.append(row)
    print("\n| model | " + " | ".join(f"val mIoU, {s}" for s in SETTINGS) + " |")
    print("|---|" + "---:|" * len(SETTINGS))
    for r in rows:
        print(f"| `{r['model']}` | " + " | ".join(f"{100 * r['runs'][s]['mIoU']:.1f}" for s in SETTINGS) + " |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"split": "val", "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""Acceptance check: ``distilseg eval``'s mIoU equals one recomputed from ``distilseg predict``'s label maps.

Why: both commands must preprocess identically and score at the labels' native resolution. This script
rebuilds the confusion matrix with plain numpy from ``<stem>_labels.png`` (written by
``distilseg predict --save-labels``) against CamVid's ``<split>annot/<stem>.png`` (value 11 = Unlabelled,
ignored) and compares the resulting mIoU with ``metrics.json`` from ``distilseg eval``. Prints JSON.

Usage (from the repository root)::

    python benchmarks/camvid_consistency.py --run            # train 1 short epoch, eval, predict, check
    python benchmarks/camvid_consistency.py --pred /tmp/cvp --eval /tmp/cve   # only check existing outputs
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

NUM_CLASSES = 11
VOID = 11


def run(cmd: list[str]) -> float:
    """Run one ``distilseg`` command, failing loudly; returns its wall time."""
    start = time.perf_counter()
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    return time.perf_counter() - start


def recompute_miou(pred_dir: Path, annot_dir: Path) -> dict:
    """mIoU over classes present in ground truth or prediction, from a numpy confusion matrix."""
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    sizes: set[tuple[int, int]] = set()
    label_files = sorted(pred_dir.glob("*_labels.png"))
    for f in label_files:
        stem = f.name[: -len("_labels.png")]
        pred = np.asarray(Image.open(f))
        gt = np.asarray(Image.open(annot_dir / f"{stem}.png"))
        if pred.shape != gt.shape:
            raise SystemExit(f"{f}: shape {pred.shape} differs from ground truth {gt.shape}")
        sizes.add(pred.shape)
        keep = gt != VOID
        if (gt[keep] >= NUM_CLASSES).any():
            raise SystemExit(f"{annot_dir / stem}.png: values outside 0..11")
        cm += np.bincount(gt[keep].astype(np.int64) * NUM_CLASSES + pred[keep].astype(np.int64),
                          minlength=NUM_CLASSES * NUM_CLASSES).reshape(NUM_CLASSES, NUM_CLASSES)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    iou = tp[present] / union[present]
    return {
        "num_label_maps": len(label_files),
        "label_map_sizes": sorted([list(s) for s in sizes]),
        "num_annotations": len(list(annot_dir.glob("*.png"))),
        "miou": float(iou.mean()) if iou.size else None,
        "pixels_scored": int(cm.sum()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default="../shared/datasets/camvid")
    ap.add_argument("--split", default="val")
    ap.add_argument("--train-out", default="/tmp/cv")
    ap.add_argument("--eval", dest="eval_dir", default="/tmp/cve")
    ap.add_argument("--pred", dest="pred_dir", default="/tmp/cvp")
    ap.add_argument("--run", action="store_true", help="run train, eval and predict first")
    ap.add_argument("--skip-train", action="store_true", help="with --run: reuse --train-out/best")
    args = ap.parse_args()
    root = Path(args.root)
    timings = {}
    if args.run:
        exe = [sys.executable, "-m", "distilseg.cli"]
        if not args.skip_train:
            timings["train_s"] = run(exe + [
                "train", "--dataset", "camvid", "--root", str(root), "--model", "unet", "--img-size", "360", "480",
                "--limit-train-batches", "8", "--limit-val-batches", "2", "--epochs", "1", "--batch-size", "2",
                "--out", args.train_out,
            ])
        ckpt = str(Path(args.train_out) / "best")
        timings["eval_s"] = run(exe + ["eval", "--checkpoint", ckpt, "--dataset", "camvid", "--root", str(root),
                                       "--split", args.split, "--out", args.eval_dir, "--no-progress"])
        timings["predict_s"] = run(exe + ["predict", "--checkpoint", ckpt, str(root / args.split), "--save-labels",
                                          "--out", args.pred_dir, "--no-progress"])
    result = recompute_miou(Path(args.pred_dir), root / f"{args.split}annot")
    metrics = json.loads((Path(args.eval_dir) / "metrics.json").read_text())
    result["eval_miou"] = metrics["mIoU"]
    result["eval_num_images"] = metrics["num_images"]
    result["abs_diff"] = abs(result["miou"] - metrics["mIoU"])
    result["consistent"] = bool(result["abs_diff"] <= 1e-4 and result["num_label_maps"] == metrics["num_images"])
    result.update(timings)
    print(json.dumps(result, indent=2))
    return 0 if result["consistent"] else 1


if __name__ == "__main__":
    sys.exit(main())

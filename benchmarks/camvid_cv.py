"""Cross-street (leave-one-street-out) scores of the CamVid recipes: pooled mIoU per arm over seeds, per fold, per
class, and the distillation gain with the seed noise next to it. Reads the ``cv.json`` of runs made with
``--holdout each`` (kept with ``--collect``); trains nothing.

    python benchmarks/camvid_cv.py [--collect RUNS_DIR] [--json benchmarks/results/camvid_cv.json]

Folds: the three CamVid training streets (sequences 0001TP, 0006R0, 0016E5 with the val frames), each held out of
train+val in turn; ``pooled`` sums the three folds' confusion matrices, so every one of the 468 frames is scored
once, by a model that never saw its street. One street alone is a noisy judge (its class mix is its own), so arms
are ranked by the pooled score. ``--collect RUNS_DIR`` copies each run's ``cv.json``, ``cv.md`` and every fold's
``config.yaml``, ``history.csv`` and ``heldout/metrics.json`` from ``RUNS_DIR/<run>`` into
``benchmarks/results/camvid_cv/<run>/`` (model weights stay out of git).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "camvid_cv"

# arm -> (the command of one seed, run folders one per seed). Commands run from the repository root; S = seed.
ARMS: dict[str, tuple[str, list[str]]] = {
    "student, 10 epochs": (
        "distilseg train --config configs/camvid/student_fpn8_lite0.yaml --epochs 10 --val-every 5 --seed S "
        "--train-split train+val --holdout each --out RUNS/cv_student_10ep_sS",
        ["cv_student_10ep_s0", "cv_student_10ep_s1"]),
    "student, 10 epochs, strong photometric": (
        "distilseg train --config configs/camvid/student_fpn8_lite0.yaml --photometric strong --epochs 10 "
        "--val-every 5 --seed S --train-split train+val --holdout each --out RUNS/cv_student_photo_10ep_sS",
        ["cv_student_photo_10ep_s0", "cv_student_photo_10ep_s1"]),
    "student with a stride-4 head, 10 epochs, strong photometric": (
        "distilseg train --config configs/camvid/student_fpn_lite0.yaml --photometric strong --epochs 10 "
        "--val-every 5 --seed S --train-split train+val --holdout each --out RUNS/cv_student4_photo_10ep_sS",
        ["cv_student4_photo_10ep_s0", "cv_student4_photo_10ep_s1"]),
    "teacher, 10 epochs, strong photometric": (
        "distilseg train --config configs/camvid/teacher_lite2_fpn.yaml --photometric strong --epochs 10 "
        "--val-every 5 --seed S --train-split train+val --holdout each --out RUNS/cv_teacher_photo_10ep_sS",
        ["cv_teacher_photo_10ep_s0", "cv_teacher_photo_10ep_s1"]),
    "student-kd, 10 epochs, strong photometric": (
        "distilseg distill --config configs/camvid/student_fpn8_lite0_kd.yaml --photometric strong "
        "--teacher 'RUNS/cv_teacher_photo_10ep_s0/fold-{fold}/last' --epochs 10 --val-every 5 --seed S "
        "--train-split train+val --holdout each --out RUNS/cv_student_photo_kd_10ep_sS",
        ["cv_student_photo_kd_10ep_s0", "cv_student_photo_kd_10ep_s1"]),
    "student-kd without cwd, 10 epochs, strong photometric": (
        "distilseg distill --config configs/camvid/student_fpn8_lite0_kd.yaml --photometric strong "
        "--kd logits@T=6:0.35 --hard-weight 1 "
        "--teacher 'RUNS/cv_teacher_photo_10ep_s0/fold-{fold}/last' --epochs 10 --val-every 5 --seed S "
        "--train-split train+val --holdout each --out RUNS/cv_student_photo_kdnocwd_10ep_sS",
        ["cv_student_photo_kdnocwd_10ep_s0", "cv_student_photo_kdnocwd_10ep_s1"]),
    "student-kd, clean teacher view, 10 epochs, strong photometric": (
        "distilseg distill --config configs/camvid/student_fpn8_lite0_kd.yaml --photometric strong "
        "--teacher-view clean "
        "--teacher 'RUNS/cv_teacher_photo_10ep_s0/fold-{fold}/last' --epochs 10 --val-every 5 --seed S "
        "--train-split train+val --holdout each --out RUNS/cv_student_photo_kdclean_10ep_sS",
        ["cv_student_photo_kdclean_10ep_s0", "cv_student_photo_kdclean_10ep_s1"]),
    "stride-4 student-kd, 10 epochs, strong photometric": (
        "distilseg distill --config configs/camvid/student_fpn_lite0_kd.yaml --photometric strong "
        "--teacher 'RUNS/cv_teacher_photo_10ep_s0/fold-{fold}/last' --epochs 10 --val-every 5 --seed S "
        "--train-split train+val --holdout each --out RUNS/cv_student4_photo_kd_10ep_sS",
        ["cv_student4_photo_kd_10ep_s0", "cv_student4_photo_kd_10ep_s1"]),
}
# (baseline arm, distilled arm): the same student and schedule, with and without distillation
PAIRS = [("student, 10 epochs, strong photometric", "student-kd, 10 epochs, strong photometric"),
         ("student, 10 epochs, strong photometric", "student-kd without cwd, 10 epochs, strong photometric"),
         ("student, 10 epochs, strong photometric",
          "student-kd, clean teacher view, 10 epochs, strong photometric"),
         ("student with a stride-4 head, 10 epochs, strong photometric",
          "stride-4 student-kd, 10 epochs, strong photometric")]
# (arm, arm with one lever changed)
LEVERS = [("student, 10 epochs", "student, 10 epochs, strong photometric"),
          ("student, 10 epochs, strong photometric", "student with a stride-4 head, 10 epochs, strong photometric"),
          ("student-kd, 10 epochs, strong photometric", "student-kd without cwd, 10 epochs, strong photometric"),
          ("student-kd, 10 epochs, strong photometric",
           "student-kd, clean teacher view, 10 epochs, strong photometric")]
KEEP = ("cv.json", "cv.md")
KEEP_FOLD = ("config.yaml", "history.csv", "distill.json", "heldout/metrics.json")


def collect(runs_dir: Path) -> list[str]:
    """Copy the small records of every finished run of ARMS from ``runs_dir`` into the results folder."""
    copied = []
    for _, folders in ARMS.values():
        for name in folders:
            src = runs_dir / name
            if not (src / "cv.json").is_file():
                continue
            dst = RESULTS / name
            dst.mkdir(parents=True, exist_ok=True)
            for f in KEEP:
                shutil.copy2(src / f, dst / f)
            for fold in sorted(src.glob("fold-*")):
                for f in KEEP_FOLD:
                    if (fold / f).is_file():
                        (dst / fold.name / f).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(fold / f, dst / fold.name / f)
            copied.append(name)
    return copied


def _arm(folders: list[str]) -> dict[str, Any]:
    runs = []
    for name in folders:
        path = RESULTS / name / "cv.json"
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        seed = None
        fold_cfg = next(iter(sorted((RESULTS / name).glob("fold-*/config.yaml"))), None)
        if fold_cfg is not None:
            import yaml

            seed = yaml.safe_load(fold_cfg.read_text()).get("seed")
        runs.append({"folder": name, "seed": seed, "pooled_mIoU": doc["pooled"]["mIoU"],
                     "fold_mIoU": {g: f["mIoU"] for g, f in doc["folds"].items()},
                     "per_class_iou": doc["pooled"]["per_class_iou"]})
    if not runs:
        return {"seeds": 0, "runs": []}
    values = [r["pooled_mIoU"] for r in runs]
    classes = list(runs[0]["per_class_iou"])
    return {
        "seeds": len(runs), "pooled_mIoU_mean": statistics.fmean(values), "range": max(values) - min(values),
        "fold_mIoU_mean": {g: statistics.fmean(r["fold_mIoU"][g] for r in runs) for g in runs[0]["fold_mIoU"]},
        "per_class_iou_mean": {c: statistics.fmean(r["per_class_iou"][c] or 0.0 for r in runs) for c in classes},
        "runs": runs,
    }


def summarize() -> dict[str, Any]:
    arms = {name: {"command": cmd, **_arm(folders)} for name, (cmd, folders) in ARMS.items()}
    gains = []
    for base, kd in PAIRS:
        a, b = arms[base], arms[kd]
        if not a.get("seeds") or not b.get("seeds"):
            continue
        bv = [r["pooled_mIoU"] for r in a["runs"]]
        kv = [r["pooled_mIoU"] for r in b["runs"]]
        gains.append({"baseline": base, "distilled": kd, "gain": statistics.fmean(kv) - statistics.fmean(bv),
                      "worst_case": min(kv) - max(bv), "best_case": max(kv) - min(bv),
                      "seeds": [len(bv), len(kv)]})
    levers = []
    for base, other in LEVERS:
        if arms[base].get("seeds") and arms[other].get("seeds"):
            levers.append({"from": base, "to": other,
                           "change": arms[other]["pooled_mIoU_mean"] - arms[base]["pooled_mIoU_mean"],
                           "fold_change": {g: arms[other]["fold_mIoU_mean"][g] - v
                                           for g, v in arms[base]["fold_mIoU_mean"].items()}})
    return {"levers": levers, "protocol": "CamVid train+val, leave-one-street-out (0001TP, 0006R0, 0016E5 with val); each fold's "
                        "last/ model scored at 360x480 on its held-out street; confusion matrices pooled",
            "arms": arms, "gains": gains}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--collect", type=Path, default=None, metavar="RUNS_DIR",
                    help="copy the records of finished runs from RUNS_DIR first")
    ap.add_argument("--json", type=Path, default=None, help="write the summary here")
    args = ap.parse_args()
    if args.collect is not None:
        print("collected: " + (", ".join(collect(args.collect)) or "nothing"))
    doc = summarize()
    for name, arm in doc["arms"].items():
        if not arm.get("seeds"):
            print(f"{name}: no finished run")
            continue
        folds = ", ".join(f"{g} {_pct(v)}" for g, v in arm["fold_mIoU_mean"].items())
        seeds = ", ".join(f"{_pct(r['pooled_mIoU'])} (s{r['seed']})" for r in arm["runs"])
        print(f"{name}: pooled {_pct(arm['pooled_mIoU_mean'])} over {arm['seeds']} seed(s) [{seeds}], "
              f"range {_pct(arm['range'])}; folds: {folds}")
    for lv in doc["levers"]:
        folds = ", ".join(f"{g} {100 * v:+.1f}" for g, v in lv["fold_change"].items())
        print(f"{lv['to']} vs {lv['from']}: pooled {100 * lv['change']:+.1f} points (folds: {folds})")
    for g in doc["gains"]:
        print(f"distillation gain ({g['distilled']} vs {g['baseline']}): {100 * g['gain']:+.1f} points, worst case "
              f"{100 * g['worst_case']:+.1f}, best case {100 * g['best_case']:+.1f} (seeds {g['seeds']})")
    if args.json is not None:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

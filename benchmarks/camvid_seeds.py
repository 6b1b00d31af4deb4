"""Val mIoU over seeds for the CamVid recipes: mean, spread, per-class means, and the distillation
gain with the seed noise next to it. Reads the ``val_metrics_fp32.json`` (``distilseg eval``) that
``benchmarks/collect_run.py`` keeps in each run's ``benchmarks/results/`` folder; trains nothing.

    python benchmarks/camvid_seeds.py [--json benchmarks/results/camvid_seeds.json]

"Spread" is the range (max - min) over seeds, and the sample standard deviation. The gain is mean(KD) -
mean(baseline); it counts as outside the seed noise only when every distilled seed beats every baseline seed
(``worst_case`` = min KD - max baseline > 0).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

#: arm -> result folders, one per seed (the recipes in configs/camvid/)
ARMS: dict[str, list[str]] = {
    "teacher": ["camvid_teacher_lite2_fpn", "camvid_teacher_lite2_fpn_s1"],
    # the mean of the logits of the two teacher seeds (`distilseg ensemble`): one model, no seeds of its own
    "teacher ensemble (seeds 0+1)": ["camvid_teacher_lite2_fpn_ens"],  # a stronger teacher? (+0.4 only)
    "student, 10 epochs": ["camvid_student_fpn8_10ep_s0", "camvid_student_fpn8_10ep_s1"],
    "student-kd, 10 epochs": ["camvid_student_fpn8_kd_10ep_s0", "camvid_student_fpn8_kd_10ep_s1"],
    "student, 30 epochs": ["camvid_student_fpn8_s0", "camvid_student_fpn8_s1"],
    "student-kd, 30 epochs": ["camvid_student_fpn8_kd_s0", "camvid_student_fpn8_kd_s1"],
}
#: (baseline arm, distilled arm): the same student on the same schedule, with and without distillation
PAIRS = [("student, 10 epochs", "student-kd, 10 epochs"), ("student, 30 epochs", "student-kd, 30 epochs")]


def _arm(folders: list[str]) -> dict[str, Any]:
    runs, missing = [], []
    for name in folders:
        path = RESULTS / name / "val_metrics_fp32.json"
        if not path.is_file():
            missing.append(name)
            continue
        metrics = json.loads(path.read_text())
        summary_path = RESULTS / name / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        int8_path = RESULTS / name / "val_metrics_int8.json"
        full_path = RESULTS / name / "val_metrics_int8_full_range.json"
        runs.append({
            "folder": name,
            "seed": summary.get("seed"),
            "mIoU": metrics["mIoU"],
            "mIoU_int8": json.loads(int8_path.read_text())["mIoU"] if int8_path.is_file() else None,
            "mIoU_int8_full_range": json.loads(full_path.read_text())["mIoU"] if full_path.is_file() else None,
            "wall_minutes": summary.get("wall_minutes"),
            "per_class": {c["name"]: c["iou"] for c in metrics["per_class"]},
        })
    values = [r["mIoU"] for r in runs]
    out: dict[str, Any] = {"runs": runs, "missing": missing, "n": len(runs)}
    if values:
        out["mean"] = statistics.fmean(values)
        out["range"] = max(values) - min(values)
        out["std"] = statistics.stdev(values) if len(values) > 1 else None
        classes = list(runs[0]["per_class"])
        out["per_class_mean"] = {c: statistics.fmean(r["per_class"][c] for r in runs) for c in classes}
    return out


def summarize(arms: dict[str, list[str]] = ARMS, pairs: list[tuple[str, str]] = PAIRS) -> dict[str, Any]:
    result: dict[str, Any] = {"split": "val", "arms": {name: _arm(folders) for name, folders in arms.items()},
                              "kd_gain": {}}
    for base_name, kd_name in pairs:
        base, kd = result["arms"][base_name], result["arms"][kd_name]
        if not (base["n"] and kd["n"]):
            continue
        b, k = [r["mIoU"] for r in base["runs"]], [r["mIoU"] for r in kd["runs"]]
        # with one seed in an arm there is no noise estimate: no verdict
        verdict = min(k) > max(b) if len(k) >= 2 and len(b) >= 2 else None
        result["kd_gain"][kd_name] = {"baseline": base_name, "mean": kd["mean"] - base["mean"],
                                      "worst_case": min(k) - max(b), "best_case": max(k) - min(b),
                                      "outside_seed_noise": verdict}
    return result


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}"


def table(result: dict[str, Any]) -> str:
    lines = ["| recipe | seeds | val mIoU mean | range | std | per seed | INT8 per seed (7-bit / 8-bit weights) |",
             "|---|---:|---:|---:|---:|---|---|"]
    for name, arm in result["arms"].items():
        if not arm["n"]:
            lines.append(f"| {name} | 0 | (missing: {', '.join(arm['missing'])}) | | | | |")
            continue
        seeds = ", ".join(f"{_pct(r['mIoU'])} (s{r['seed']})" for r in arm["runs"])
        int8 = ", ".join(f"{_pct(r['mIoU_int8'])} / {_pct(r['mIoU_int8_full_range'])}" for r in arm["runs"])
        lines.append(f"| {name} | {arm['n']} | {_pct(arm['mean'])} | {_pct(arm['range'])} | {_pct(arm['std'])} | "
                     f"{seeds} | {int8} |")
    for kd_name, gain in result["kd_gain"].items():
        verdict = {True: "outside the seed noise", False: "NOT outside the seed noise",
                   None: "no verdict on the seed noise (needs 2 seeds per arm)"}[gain["outside_seed_noise"]]
        lines.append("")
        lines.append(f"Distillation gain, {kd_name} vs {gain['baseline']}: {100 * gain['mean']:+.1f} points (mean over "
                     f"seeds); worst case {100 * gain['worst_case']:+.1f}, best case {100 * gain['best_case']:+.1f}; "
                     f"{verdict}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args(argv)
    result = summarize()
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

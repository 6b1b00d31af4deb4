"""``compress --holdout each``: the compress pipeline once per group, every row pooled over the folds.

Kept apart from ``compress.py`` (which runs one pipeline) so each stays small; the pipeline is passed in.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from ..errors import UsageError
from ..io import atomic_write_json

__all__ = ["compress_folds"]


def _split_settings(settings: dict[str, Any]) -> Any:
    """What the fold helpers (``training.folds``) read of a compress run: the dataset and its grouping."""
    from types import SimpleNamespace

    train = dict(settings.get("train") or {})
    return SimpleNamespace(dataset=settings["dataset"], root=settings["root"],
                           dataset_args=dict(settings["dataset_args"] or {}),
                           train_split=train.get("train_split", "train"), group_by=train.get("group_by"))


def compress_folds(out: Path, settings: dict[str, Any],
                   run_one: Callable[[Path, dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """``--holdout each``: the whole pipeline once per group into ``OUT/fold-GROUP/``, each row pooled over folds
    (confusion matrices summed over every held-out frame) into ``OUT/cv.json`` and ``OUT/cv.md``. ``run_one(fold_out,
    fold_settings)`` runs the pipeline once and returns its summary (``compress.Compressor(...).run()``)."""
    import copy

    import numpy as np

    from ..training.folds import fold_groups, refuse_foreign_cv_outputs
    from ..metrics import metrics_from_confusion

    train = dict(settings["train"])
    teacher = settings.get("teacher")
    if teacher and "{fold}" not in str(teacher):
        raise UsageError("--holdout each: give each fold its own teacher, one that never saw the held-out group, "
                         "with {fold} in --teacher, or let compress train one per fold")
    refuse_foreign_cv_outputs(out)
    groups = fold_groups(_split_settings(settings))
    pooled: dict[str, Any] = {}
    for k, group in enumerate(groups, start=1):
        s = copy.deepcopy(settings)
        s["train"]["holdout"] = group
        if teacher:
            s["teacher"] = str(teacher).replace("{fold}", group)
        print(f"[compress] fold {k}/{len(groups)}: {group} held out, in {out / f'fold-{group}'}", flush=True)
        summary = run_one(out / f"fold-{group}", s)
        for row in summary["rows"]:
            ev = json.loads((out / f"fold-{group}" / "eval" / f"{row['name']}.json").read_text())
            rec = pooled.setdefault(row["name"], {"label": row["label"], "folds": {}, "confusion": None,
                                                  "params": row.get("params"), "latency_ms": row.get("latency_ms")})
            rec["folds"][group] = ev.get("mIoU")
            cm = np.asarray(ev["confusion"], dtype=np.int64)
            rec["confusion"] = cm if rec["confusion"] is None else rec["confusion"] + cm
    names = None
    for rec in pooled.values():
        m = metrics_from_confusion(rec["confusion"], names)
        rec.update(pooled_mIoU=m["mIoU"], per_class_iou=[r["iou"] for r in m["per_class"]],
                   confusion=rec["confusion"].tolist())
    doc = {"groups": groups, "rows": pooled}
    atomic_write_json(out / "cv.json", doc)
    lines = ["# compress, leave-one-group-out", "", "| row | " + " | ".join(groups) + " | pooled |",
             "|---|" + "---:|" * (len(groups) + 1)]
    for rec in pooled.values():
        cells = [f"{100 * v:.1f}" if v is not None else "-" for v in rec["folds"].values()]
        lines.append(f"| {rec['label']} | " + " | ".join(cells) + f" | {100 * (rec['pooled_mIoU'] or 0):.1f} |")
    from ..io import atomic_write_text

    atomic_write_text(out / "cv.md", "\n".join(lines) + "\n")
    print("\n".join(lines[2:]))
    return doc

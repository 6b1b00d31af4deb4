"""Leave-one-group-out runs (``--holdout each``): one fold per group, confusion matrices pooled.

Why: one held-out street is a noisy judge (its class mix is its own), and same-street validation is an
optimistic one. Training once per group, each time validating on the frames of the group left out, and summing
the confusion matrices over all held-out frames gives one estimate of accuracy on a place never seen in training,
with every frame of the pool scored exactly once.

Each fold is an ordinary run in ``OUT/fold-GROUP/`` (resumable with ``--resume``). Its ``last/`` model (the end of
the schedule fixed in advance, not the epoch that scored best on the held-out frames, which would select on them)
is scored at the labels' native resolution on the held-out frames into ``OUT/fold-GROUP/heldout/``. ``OUT/cv.json``
holds every fold's scores and confusion matrix and the pooled metrics; ``OUT/cv.md`` is the same as a table.
A fold whose ``heldout/metrics.json`` exists is done and skipped on a re-run.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import UsageError
from ..io import atomic_write_json, atomic_write_text
from .config import TrainConfig

__all__ = ["is_each", "fold_groups", "run_folds", "pool_folds", "heldout_dataset"]


def is_each(cfg: TrainConfig) -> bool:
    return str(cfg.holdout or "").strip().lower() == "each"


def fold_groups(cfg: TrainConfig) -> list[str]:
    """The groups of the training split, in order of first appearance (one fold each)."""
    from ..data import create_dataset
    from ..data.groups import groups_of, required_group_pattern

    ds = create_dataset(cfg.dataset, root=cfg.root, split=cfg.train_split, **dict(cfg.dataset_args))
    names = groups_of(ds, required_group_pattern(ds, cfg.group_by))
    groups = list(dict.fromkeys(names))
    if len(groups) < 2:
        raise UsageError(f"--holdout each: split {cfg.train_split!r} holds {len(groups)} group(s) "
                         f"({', '.join(groups)}); leave-one-group-out needs at least two")
    return groups


def heldout_dataset(cfg: TrainConfig, groups: list[str]) -> Any:
    """The frames of ``groups`` in the training split, untransformed (as ``eval`` reads them)."""
    from ..data import create_dataset
    from ..data.groups import required_group_pattern, select_groups

    ds = create_dataset(cfg.dataset, root=cfg.root, split=cfg.train_split, **dict(cfg.dataset_args))
    return select_groups(ds, groups, required_group_pattern(ds, cfg.group_by), keep=True)


def _score_fold(fold_cfg: TrainConfig, group: str, fold_out: Path) -> dict[str, Any]:
    from ..inference.segmenter import load
    from ..inference.scoring import evaluate_model, write_report

    ds = heldout_dataset(fold_cfg, [group])
    seg = load(str(fold_out / "last"))
    metrics, cm, samples = evaluate_model(seg, ds, batch_size=4, progress=bool(fold_cfg.progress))
    metrics["split"] = f"{fold_cfg.train_split} [{group}]"
    write_report(fold_out / "heldout", metrics, cm, samples, list(ds.classes), np.asarray(ds.palette))
    atomic_write_json(fold_out / "heldout" / "confusion.json", {"group": group, "confusion": cm.tolist(),
                                                                 "class_names": list(ds.classes)})
    return metrics


def refuse_foreign_cv_outputs(out: Path) -> None:
    """``OUT/cv.json`` and ``OUT/cv.md`` may replace an earlier leave-one-group-out result (a ``cv.json`` holding
    ``folds``, or a compress one holding ``groups``), never a file of the user's with that name: refused before any fold runs."""
    target = Path(out) / "cv.json"
    ours = False
    if target.is_file():
        try:
            doc = json.loads(target.read_text())
            ours = isinstance(doc, dict) and ("folds" in doc or "groups" in doc)
        except (OSError, ValueError):
            ours = False
    for path in (target, Path(out) / "cv.md"):
        if path.exists() and not ours:
            raise UsageError(f"{path}: exists and is not a leave-one-group-out result of distilseg; "
                             f"choose another --out")


def run_folds(cfg: TrainConfig, run_one: Callable[[TrainConfig], Any], log: Callable[[str], None] = print,
              fold_cfg_hook: Callable[[TrainConfig, str], TrainConfig] | None = None) -> Path:
    """Run ``run_one(fold_cfg)`` for every group left out in turn, score each fold, pool them into OUT/cv.json.

    ``fold_cfg_hook(fold_cfg, group)`` may adjust a fold's settings (distill: the fold's own teacher)."""
    out = Path(cfg.out)
    refuse_foreign_cv_outputs(out)
    groups = fold_groups(cfg)
    log(f"distilseg: leave-one-group-out over {len(groups)} groups of split {cfg.train_split!r}: "
        f"{', '.join(groups)}")
    for k, group in enumerate(groups, start=1):
        fold_out = out / f"fold-{group}"
        if (fold_out / "heldout" / "confusion.json").is_file():
            log(f"distilseg: fold {k}/{len(groups)} ({group}) is done already ({fold_out}), skipped")
            continue
        fold_cfg = dataclasses.replace(cfg, holdout=group, out=str(fold_out))
        if fold_cfg_hook is not None:
            fold_cfg = fold_cfg_hook(fold_cfg, group)
        log(f"distilseg: fold {k}/{len(groups)}: {group} held out, run in {fold_out}")
        run_one(fold_cfg)  # a finished fold resumed with --resume returns at once; an unfinished one goes on
        metrics = _score_fold(fold_cfg, group, fold_out)
        log(f"distilseg: fold {group}: held-out mIoU {100 * (metrics['mIoU'] or 0):.1f} % "
            f"on {metrics['num_images']} frames")
    pooled = pool_folds([out / f"fold-{g}" for g in groups], out)
    log(f"distilseg: pooled held-out mIoU {100 * (pooled['pooled']['mIoU'] or 0):.1f} % over "
        f"{pooled['pooled']['num_images']} frames of {len(groups)} folds; wrote {out / 'cv.json'} and {out / 'cv.md'}")
    return out


def pool_folds(fold_dirs: list[Path], out: Path) -> dict[str, Any]:
    """Sum the folds' confusion matrices (``fold/heldout/confusion.json``) and write ``out/cv.json`` + ``cv.md``.

    Also usable on folds made by separate runs (``distilseg cv pool``)."""
    from ..metrics import metrics_from_confusion

    folds: dict[str, Any] = {}
    total = None
    names: list[str] | None = None
    for d in fold_dirs:
        path = Path(d) / "heldout" / "confusion.json"
        try:
            rec = json.loads(path.read_text())
            cm = np.asarray(rec["confusion"], dtype=np.int64)
            metrics = json.loads((Path(d) / "heldout" / "metrics.json").read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}: not a scored fold ({exc})") from exc
        if names is not None and list(rec.get("class_names", [])) != names:
            raise UsageError(f"{path}: its classes differ from the other folds'")
        names = list(rec.get("class_names", []))
        total = cm if total is None else total + cm
        folds[str(rec.get("group", Path(d).name))] = {
            "run": str(d), "num_images": metrics.get("num_images"), "mIoU": metrics.get("mIoU"),
            "per_class_iou": {r["name"]: r.get("iou") for r in metrics.get("per_class", [])},
            "confusion": cm.tolist(),
        }
    if total is None:
        raise UsageError("no folds to pool")
    pooled = metrics_from_confusion(total, names or None)
    doc = {
        "folds": folds,
        "pooled": {"num_images": int(sum(f["num_images"] or 0 for f in folds.values())), "mIoU": pooled["mIoU"],
                   "pixel_accuracy": pooled["pixel_accuracy"],
                   "per_class_iou": {r["name"]: r["iou"] for r in pooled["per_class"]},
                   "confusion": total.tolist()},
        "fold_mIoU_mean": float(np.mean([f["mIoU"] for f in folds.values() if f["mIoU"] is not None])),
    }
    atomic_write_json(Path(out) / "cv.json", doc)
    atomic_write_text(Path(out) / "cv.md", _table(doc))
    return doc


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def _table(doc: dict[str, Any]) -> str:
    names = list(doc["pooled"]["per_class_iou"])
    head = "| held out | frames | mIoU | " + " | ".join(names) + " |"
    lines = ["# Leave-one-group-out validation", "",
             "IoU (%) on the frames of each group when that group was held out of training; `pooled` sums the "
             "confusion matrices of every fold (each frame scored once).", "", head,
             "|" + "---|" * (3 + len(names))]
    rows = [(g, f) for g, f in doc["folds"].items()] + [("pooled", doc["pooled"])]
    for g, f in rows:
        lines.append(f"| {g} | {f['num_images']} | {_pct(f['mIoU'])} | "
                     + " | ".join(_pct(f["per_class_iou"].get(n)) for n in names) + " |")
    lines += ["", f"Mean of the fold mIoUs: {_pct(doc['fold_mIoU_mean'])} %."]
    return "\n".join(lines) + "\n"

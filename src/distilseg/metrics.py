"""Exact segmentation metrics from one confusion matrix, and the ``metrics.json`` schema.

Why a confusion matrix: every number we report (IoU, Dice, precision, recall, accuracies, fwIoU) is a
function of the ``K x K`` counts (rows = ground truth, columns = prediction), and integer counts add up
exactly across batches and across DDP processes (``dist_reduce_fx="sum"``), so the result does not depend
on batch size, order or number of GPUs.

Absent classes (the null rule)
------------------------------
A class with no ground-truth pixels *and* no predicted pixels in the evaluated set has nothing to score:
its ``iou``, ``dice``, ``precision``, ``recall`` and ``accuracy`` are ``None`` (``null`` in JSON), its
``support`` is ``0``, and it is left out of every mean (``mIoU``, ``mDice``, ``mPrecision``, ``mRecall``,
``mean_class_accuracy``). Counting it as 0 would punish a model for a class the data never shows; counting
it as 1 would reward it for nothing. A class that is *predicted* but absent from the ground truth is a
real mistake: its IoU, Dice and precision are 0 and they count in the means; its recall is undefined
(no ground-truth pixels to recover) so it is ``None`` and left out of ``mRecall`` / ``mean_class_accuracy``.
Per-class ``accuracy`` is MMSegmentation's per-class ``Acc``: TP / (TP + FN), i.e. the class's recall, and
``mean_class_accuracy`` is the mean of the per-class accuracies (MMSegmentation's ``mAcc``).
A class present in the ground truth but never predicted has precision 0. Pixels whose label is
``ignore_index`` (255) are not counted anywhere.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torchmetrics import Metric

from .errors import DataError, UsageError
from .io import atomic_write_json, atomic_write_text

__all__ = [
    "SegMetrics",
    "confusion_matrix",
    "metrics_from_confusion",
    "format_table",
    "to_markdown",
    "write_metrics_json",
    "write_per_class_markdown",
    "METRIC_KEYS",
]

#: The scalar keys of ``compute()``, in the ``metrics.json`` order (``per_class`` follows them).
METRIC_KEYS = ("mIoU", "mDice", "mPrecision", "mRecall", "pixel_accuracy", "mean_class_accuracy", "fwIoU")
_PER_CLASS_KEYS = ("iou", "dice", "precision", "recall", "accuracy")


def confusion_matrix(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int | None = 255
) -> torch.Tensor:
    """``num_classes x num_classes`` int64 counts (rows = ground truth) with one ``torch.bincount``.

    ``preds`` is a class map (N,H,W or H,W) or logits (N,C,H,W or C,H,W, reduced with argmax over C);
    after that it must have exactly ``target``'s shape (resize logits to the label's size first).
    Raises ``ValueError`` for shape mismatches or predicted ids outside ``[0, num_classes)`` and
    ``DataError`` for labels that are neither a class id nor ``ignore_index``.
    """
    if preds.dim() == target.dim() + 1:
        if preds.shape[-3] != num_classes:
            raise ValueError(
                f"logits have {preds.shape[-3]} channels but the metric has {num_classes} classes"
            )
        preds = preds.argmax(dim=-3)
    if preds.shape != target.shape:
        raise ValueError(
            f"predictions {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape; "
            "resize logits to the label's native size before scoring"
        )
    if preds.is_floating_point():
        raise ValueError("class-map predictions must be an integer tensor (pass logits as N,C,H,W)")
    t = target.to(device=preds.device).long()
    p = preds.long()
    k = num_classes
    valid = t != ignore_index if ignore_index is not None else torch.ones_like(t, dtype=torch.bool)
    bad_t = valid & ((t < 0) | (t >= k))
    if bool(bad_t.any()):
        bad = sorted(int(v) for v in torch.unique(t[bad_t])[:10].tolist())
        raise DataError(
            f"target holds label values {bad} that are neither a class id in [0, {k}) "
            f"nor the ignore index {ignore_index}"
        )
    if bool((valid & ((p < 0) | (p >= k))).any()):
        raise ValueError(f"predicted class ids must lie in [0, {k})")
    # ignored pixels go to an extra bin that is dropped: cheaper than boolean indexing
    idx = torch.where(valid, t * k + p, k * k)
    counts = torch.bincount(idx.reshape(-1), minlength=k * k + 1)[: k * k]
    return counts.reshape(num_classes, num_classes)


class SegMetrics(Metric):
    """Streaming confusion-matrix metric; ``compute()`` returns the ``metrics.json`` dict.

    The only state is ``confmat`` (int64, summed across processes), so ``merge_state`` and DDP sync are
    exact. See the module docstring for how absent classes are reported.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    confmat: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = 255,
        class_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_classes) < 1:
            raise UsageError(f"num_classes must be positive, got {num_classes}")
        if class_names is not None and len(class_names) != int(num_classes):
            raise UsageError(f"{len(class_names)} class names given for {num_classes} classes")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.class_names = list(class_names) if class_names is not None else None
        self.add_state(
            "confmat",
            default=torch.zeros(self.num_classes, self.num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """Add one batch: ``preds`` class map N,H,W or logits N,C,H,W; ``target`` N,H,W (255 = ignore)."""
        self.confmat += confusion_matrix(preds.detach(), target, self.num_classes, self.ignore_index).to(
            self.confmat.device
        )

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        """The metrics dict (fractions 0..1, ``None`` where undefined)."""
        return metrics_from_confusion(self.confmat, self.class_names)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(sum(kept) / len(kept)) if kept else None


def metrics_from_confusion(cm: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Compute every metric from a ``K x K`` confusion matrix (numpy array, tensor or nested list).

    Rows are ground truth, columns prediction. Returns ``{mIoU, mDice, mPrecision, mRecall,
    pixel_accuracy, mean_class_accuracy, fwIoU, per_class: [...]}``; see the module docstring for the
    null rule. ``fwIoU`` weights each class's IoU by its share of ground-truth pixels.
    """
    if isinstance(cm, torch.Tensor):
        cm = cm.detach().cpu().numpy()
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square K x K, got shape {cm.shape}")
    k = cm.shape[0]
    if class_names is not None and len(class_names) != k:
        raise UsageError(f"{len(class_names)} class names given for a {k}-class confusion matrix")
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]

    tp = np.diag(cm)
    gt = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    total = float(cm.sum())
    fp = pred - tp
    fn = gt - tp

    per_class: list[dict[str, Any]] = []
    for c in range(k):
        present = gt[c] + pred[c] > 0
        row: dict[str, Any] = {"name": names[c]}
        if present:
            row["iou"] = _ratio(tp[c], tp[c] + fp[c] + fn[c])
            row["dice"] = _ratio(2 * tp[c], 2 * tp[c] + fp[c] + fn[c])
            row["precision"] = _ratio(tp[c], pred[c]) if pred[c] > 0 else 0.0
            row["recall"] = _ratio(tp[c], gt[c])
            # MMSegmentation's per-class "Acc": TP / (TP + FN), i.e. recall. (TP+TN)/N would be near 1
            # for every rare class and say nothing about it.
            row["accuracy"] = row["recall"]
        else:
            row.update({key: None for key in _PER_CLASS_KEYS})
        row["support"] = int(gt[c])
        per_class.append(row)

    fw = None
    if total > 0:
        fw = float(sum(gt[c] / total * per_class[c]["iou"] for c in range(k) if gt[c] > 0))
    recall_mean = _mean([r["recall"] for r in per_class])
    class_acc_mean = _mean([r["accuracy"] for r in per_class])
    return {
        "mIoU": _mean([r["iou"] for r in per_class]),
        "mDice": _mean([r["dice"] for r in per_class]),
        "mPrecision": _mean([r["precision"] for r in per_class]),
        "mRecall": recall_mean,
        "pixel_accuracy": _ratio(float(tp.sum()), total),
        "mean_class_accuracy": class_acc_mean,
        "fwIoU": fw,
        "per_class": per_class,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def format_table(metrics: dict[str, Any]) -> str:
    """Plain-text per-class table (percentages, ``-`` for null) followed by the summary numbers."""
    rows = metrics.get("per_class", [])
    width = max([len("class")] + [len(str(r["name"])) for r in rows])
    header = f"{'class':<{width}}  {'IoU':>7} {'Dice':>7} {'Prec':>7} {'Recall':>7} {'Acc':>7} {'support':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{str(r['name']):<{width}}  {_pct(r['iou']):>7} {_pct(r['dice']):>7} {_pct(r['precision']):>7} "
            f"{_pct(r['recall']):>7} {_pct(r['accuracy']):>7} {r['support']:>12d}"
        )
    lines.append("-" * len(header))
    lines.append(
        f"{'mean':<{width}}  {_pct(metrics.get('mIoU')):>7} {_pct(metrics.get('mDice')):>7} "
        f"{_pct(metrics.get('mPrecision')):>7} {_pct(metrics.get('mRecall')):>7}"
    )
    lines.append(
        f"pixel accuracy {_pct(metrics.get('pixel_accuracy'))}  mean class accuracy "
        f"{_pct(metrics.get('mean_class_accuracy'))}  fwIoU {_pct(metrics.get('fwIoU'))}"
    )
    return "\n".join(lines)


def to_markdown(metrics: dict[str, Any]) -> str:
    """Markdown for ``per_class.md``: a summary table, then one row per class (percentages)."""
    head = []
    for key in ("dataset", "split", "num_images"):
        if key in metrics:
            head.append(f"- {key}: {metrics[key]}")
    lines = ["# Evaluation", ""]
    if head:
        lines += head + [""]
    lines += ["| metric | value (%) |", "|---|---:|"]
    for key in METRIC_KEYS:
        lines.append(f"| {key} | {_pct(metrics.get(key))} |")
    lines += [
        "",
        "| class | IoU | Dice | Precision | Recall | Accuracy | Support |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in metrics.get("per_class", []):
        name = str(r["name"]).replace("|", "\\|")
        lines.append(
            f"| {name} | {_pct(r['iou'])} | {_pct(r['dice'])} | {_pct(r['precision'])} | "
            f"{_pct(r['recall'])} | {_pct(r['accuracy'])} | {r['support']} |"
        )
    lines += ["", "`-`: class absent from both ground truth and prediction (left out of the means)."]
    return "\n".join(lines) + "\n"


def write_metrics_json(
    path: str | os.PathLike, metrics: dict[str, Any], dataset: str, split: str, num_images: int
) -> Path:
    """Write ``metrics.json`` atomically: ``dataset, split, num_images`` first, then the schema order."""
    missing = [k for k in (*METRIC_KEYS, "per_class") if k not in metrics]
    if missing:
        raise ValueError(f"metrics dict lacks {missing}")
    doc: dict[str, Any] = {"dataset": dataset, "split": split, "num_images": int(num_images)}
    for key in METRIC_KEYS:
        doc[key] = metrics[key]
    doc["per_class"] = [
        {"name": r["name"], **{k: r[k] for k in _PER_CLASS_KEYS}, "support": int(r["support"])}
        for r in metrics["per_class"]
    ]
    return atomic_write_json(path, doc)


def write_per_class_markdown(path: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write ``to_markdown(metrics)`` atomically (``per_class.md``)."""
    return atomic_write_text(path, to_markdown(metrics))

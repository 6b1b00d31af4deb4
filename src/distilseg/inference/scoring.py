"""Scoring a predictor on a dataset at the labels' native resolution, and the eval report files.

``distilseg eval`` (``apps.evaluate``), the held-out folds of ``train --holdout each`` (``training.folds``) and
``compress`` score models the same way, through ``Segmenter.predict`` as ``distilseg predict`` runs it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, UsageError

__all__ = ["evaluate_model", "confusion_of", "write_report"]


def _sample_indices(n: int, k: int) -> list[int]:
    """``k`` indices spread evenly over ``0..n-1`` (first and last included), deterministic."""
    if n <= 0 or k <= 0:
        return []
    if k >= n:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def _sample_name(dataset: Any, i: int) -> str:
    samples = getattr(dataset, "samples", None)
    try:
        s = samples[i]
        return str(getattr(s, "mask", None) or getattr(s, "name", i))
    except (TypeError, IndexError, KeyError):
        return f"sample {i}"


def confusion_of(metric: Any, num_classes: int) -> np.ndarray:
    """The K x K confusion matrix (rows = ground truth, cols = prediction) held by a ``SegMetrics``."""
    for attr in ("confmat", "confusion", "confusion_matrix", "cm"):
        t = getattr(metric, attr, None)
        if isinstance(t, torch.Tensor) and tuple(t.shape) == (num_classes, num_classes):
            return t.detach().cpu().numpy().astype(np.int64)
    for name in getattr(metric, "_defaults", {}):
        t = getattr(metric, name, None)
        if isinstance(t, torch.Tensor) and tuple(t.shape) == (num_classes, num_classes):
            return t.detach().cpu().numpy().astype(np.int64)
    raise RuntimeError("SegMetrics holds no num_classes x num_classes confusion matrix")  # a bug, not user error


def evaluate_model(
    segmenter: Any,
    dataset: Any,
    batch_size: int = 4,
    tta: Any = None,
    progress: bool = True,
    num_samples_png: int = 4,
    source: Any = None,
) -> tuple[dict[str, Any], np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Score ``segmenter`` on every sample of ``dataset`` at the mask's native size.

    Returns ``(metrics, confusion, samples)``: the metrics.json dict (``SegMetrics.compute()`` plus
    ``dataset``, ``split``, ``num_images``), the K x K int64 confusion matrix (rows = ground truth), and
    ``(image, ground truth, prediction)`` uint8 triples for up to ``num_samples_png`` evenly spread samples.
    Resize policy / sliding window / TTA: the segmenter's ``set_inference`` defaults (``tta`` overrides).
    """
    from ..progress import progress_bar

    from ..metrics import SegMetrics

    num_classes = int(segmenter.num_classes)
    ds_classes = getattr(dataset, "num_classes", None)
    if ds_classes is not None and int(ds_classes) != num_classes:  # the one class-count check of eval
        where = f"{source}: " if source else ""
        raise UsageError(
            f"{where}model has {num_classes} classes but dataset {getattr(dataset, 'name', '')!r} has {ds_classes}"
        )
    ignore = int(getattr(dataset, "ignore_index", 255))
    n = len(dataset)
    if n == 0:
        raise DataError(
            f"dataset {getattr(dataset, 'name', '')!r} split {getattr(dataset, 'split', '')!r} "
            f"({getattr(dataset, 'root', '')}) has no samples"
        )
    if int(batch_size) < 1:
        raise UsageError(f"batch size must be positive, got {batch_size}")
    names = list(getattr(dataset, "classes", None) or segmenter.class_names)
    metric = SegMetrics(num_classes, ignore_index=ignore, class_names=names)
    keep = set(_sample_indices(n, num_samples_png))
    samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    bar = progress_bar(total=n, desc="eval", unit="img", disable=not progress)
    try:
        for start in range(0, n, int(batch_size)):
            idx = list(range(start, min(n, start + int(batch_size))))
            images = [dataset.load_image(i) for i in idx]
            masks = [np.asarray(dataset.load_mask(i)) for i in idx]
            preds = segmenter.predict(images, batch_size=int(batch_size), tta=tta)
            for i, image, mask, pred in zip(idx, images, masks, preds):
                if mask.shape != image.shape[:2]:
                    raise DataError(
                        f"{_sample_name(dataset, i)}: mask is {mask.shape[0]}x{mask.shape[1]} but its image is "
                        f"{image.shape[0]}x{image.shape[1]}"
                    )
                bad = (mask != ignore) & (mask >= num_classes)
                if bad.any():
                    raise DataError(
                        f"{_sample_name(dataset, i)}: mask holds values {sorted(np.unique(mask[bad]).tolist())[:10]} "
                        f"that are neither classes 0..{num_classes - 1} nor ignore ({ignore})"
                    )
                metric.update(
                    torch.from_numpy(pred.astype(np.int64))[None], torch.from_numpy(mask.astype(np.int64))[None]
                )
                if i in keep:
                    samples.append((image, mask.astype(np.uint8), pred))
            bar.update(len(idx))
    finally:
        bar.close()
    metrics = dict(metric.compute())
    metrics = {
        "dataset": getattr(dataset, "name", None),
        "split": getattr(dataset, "split", None),
        "num_images": n,
        **metrics,
    }
    return metrics, confusion_of(metric, num_classes), samples


def write_report(out: Path, metrics: dict[str, Any], cm: np.ndarray,
                 samples: list[tuple[np.ndarray, np.ndarray, np.ndarray]], class_names: list[str],
                 palette: np.ndarray, legend: bool = True) -> None:
    """Write the four eval files to ``out`` (each atomically: the viz and metrics writers are atomic)."""
    from ..metrics import write_metrics_json, write_per_class_markdown
    from ..viz import colorize, save_confusion, save_grid

    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(out / "metrics.json", metrics, dataset=metrics.get("dataset"), split=metrics.get("split"),
                       num_images=int(metrics["num_images"]))
    write_per_class_markdown(out / "per_class.md", metrics)
    save_confusion(cm, class_names, out / "confusion.png")
    if samples:
        rows = [[img, colorize(gt, palette), colorize(pred, palette)] for img, gt, pred in samples]
        save_grid(rows, out / "samples.png", col_titles=["image", "ground truth", "prediction"],
                  legend=(class_names, palette) if legend else None)

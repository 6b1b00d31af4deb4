"""``distilseg eval``: exact scoring of a model on a dataset split at the labels' native resolution.

Why this way: each image goes through the same ``Segmenter.predict`` path as ``distilseg predict``
(resize to the artifact's size, normalize, logits resized back to the image's own size, argmax), and the
prediction is compared with the *unresized* mask. So the reported numbers are those of the deployed
predictor at full resolution, and can be recomputed from ``predict``'s saved label maps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, UsageError

__all__ = ["evaluate_model", "register_eval", "run_eval", "confusion_of"]


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
    from tqdm import tqdm

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
    bar = tqdm(total=n, desc="eval", unit="img", disable=not progress, file=sys.stderr)
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


# ---- CLI ------------------------------------------------------------------------------------------------
def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, metavar="DIR|FILE.onnx|zoo:NAME",
        help="model artifact folder (or a training output folder with best/), an ONNX file, or zoo:NAME",
    )


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distilseg eval``."""
    p = subparsers.add_parser(
        "eval",
        help="score a model on a dataset split (metrics.json, per-class table, confusion, samples)",
        description="Evaluate a model at the labels' native resolution and write metrics.json, per_class.md, "
        "confusion.png and samples.png to --out.",
    )
    from ..inference.options import add_inference_arguments

    add_checkpoint_argument(p)
    p.add_argument("--dataset", required=True, help="dataset name (see `distilseg datasets`)")
    p.add_argument("--root", default=None, help="dataset root folder")
    p.add_argument("--dataset-args", nargs="*", default=[], metavar="K=V", help="extra dataset options")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--img-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="network input size (default: the artifact's input_size)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--samples", type=int, default=4, help="rows in samples.png (default: 4)")
    p.add_argument("--no-legend", action="store_true", help="samples.png without the class legend")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_inference_arguments(p)
    p.set_defaults(func=run_eval)


def apply_img_size(segmenter: Any, img_size: list[int] | None) -> None:
    """``--img-size`` overrides the artifact's input size (an ONNX model with a fixed size may refuse)."""
    if img_size is None:
        return
    if min(img_size) < 1:
        raise UsageError(f"--img-size must be positive, got {img_size}")
    static = getattr(segmenter, "static_size", None)
    if static is not None and tuple(static) != tuple(img_size):
        raise UsageError(
            f"--img-size {img_size[0]} {img_size[1]}: this ONNX model has a fixed input size "
            f"{static[0]}x{static[1]}; export it with a dynamic size or drop --img-size"
        )
    try:
        segmenter.input_size = tuple(img_size)
    except (AttributeError, ValueError) as exc:
        raise UsageError(f"--img-size {img_size[0]} {img_size[1]}: this model cannot change its input size ({exc})")


def run_eval(args: argparse.Namespace) -> int:
    from ..data import create_dataset
    from ..io import ensure_output_dir
    from ..inference.segmenter import load

    ensure_output_dir(args.out, create=False)  # before scoring the whole split, not after
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    segmenter = load(args.checkpoint, device=args.device)
    apply_img_size(segmenter, args.img_size)
    from ..inference.options import options_from_args

    segmenter.set_inference(**options_from_args(args))
    from ..parsing import parse_key_values

    options = parse_key_values(args.dataset_args, "--dataset-args")
    dataset = create_dataset(args.dataset, root=args.root, split=args.split, **options)
    metrics, cm, samples = evaluate_model(
        segmenter, dataset, batch_size=args.batch_size, progress=not args.no_progress,
        num_samples_png=args.samples, source=args.checkpoint,
    )
    write_report(Path(args.out), metrics, cm, samples, list(dataset.classes), np.asarray(dataset.palette),
                 legend=not args.no_legend)
    from ..metrics import format_table

    print(format_table(metrics))
    print(f"wrote metrics.json, per_class.md, confusion.png, samples.png to {args.out}")
    return 0


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

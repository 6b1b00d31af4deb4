"""Per-class pixel statistics and class weights (``--class-weights auto`` in training, ``data inspect``)."""
from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UsageError
from .base import SegDataset

METHODS = ("median_freq", "inv_log")


def class_weights(
    counts: Sequence[float] | np.ndarray,
    method: str = "median_freq",
    presence_pixels: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Class weights from per-class pixel counts.

    ``median_freq`` (Eigen & Fergus / SegNet): freq_c = count_c / (total pixels of the images where c
    is present, ``presence_pixels``; the sum of counts when not given), w_c = median(freq) / freq_c over
    the classes present. ``inv_log`` (ENet): w_c = 1 / ln(1.02 + p_c), p_c = count_c / sum(counts).
    A class with no pixels gets weight 0 with median_freq (it cannot be learned from this data).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if method not in METHODS:
        raise UsageError(f"unknown class weight method {method!r}; choose one of: {', '.join(METHODS)}")
    total = counts.sum()
    if method == "inv_log":
        p = counts / total if total > 0 else np.zeros_like(counts)
        return 1.0 / np.log(1.02 + p)
    present = counts > 0
    denom = np.asarray(presence_pixels, dtype=np.float64) if presence_pixels is not None else np.full_like(counts, total)
    weights = np.zeros_like(counts)
    if not present.any():
        return weights
    freq = counts[present] / denom[present]
    weights[present] = np.median(freq) / freq
    return weights


def compute_class_stats(
    dataset: SegDataset,
    workers: int = 4,
    progress: bool = False,
    on_mask: Callable[[int, np.ndarray], None] | None = None,
) -> dict[str, Any]:
    """Decode every mask once (threads: PNG decoding releases the GIL) and count pixels per class.

    Returns ``num_images``, ``image_sizes`` ({"HxW": n}), ``classes``, ``pixel_counts`` / ``frequencies``
    / ``presence_pixels`` keyed by class name, ``ignored_pixels``, ``total_pixels`` and suggested
    ``class_weights`` for both methods. ``on_mask(i, mask)`` runs in the worker (e.g. to dump masks).
    """
    k = dataset.num_classes
    n = len(dataset)

    def one(i: int) -> tuple[np.ndarray, tuple[int, int]]:
        mask = dataset.load_mask(i)
        if on_mask is not None:
            on_mask(i, mask)
        return np.bincount(mask.ravel(), minlength=256), _image_hw(dataset, i, mask.shape)

    counts = np.zeros(256, dtype=np.int64)
    presence = np.zeros(k, dtype=np.int64)
    sizes: Counter[str] = Counter()
    iterator: Any
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        iterator = pool.map(one, range(n))
        if progress:
            from ..progress import progress_bar

            iterator = progress_bar(iterator, total=n, desc=f"{dataset.name}/{dataset.split}", unit="img")
        for bins, shape in iterator:
            counts += bins
            presence[bins[:k] > 0] += shape[0] * shape[1]
            sizes[f"{shape[0]}x{shape[1]}"] += 1
    cls = counts[:k]
    labeled = int(cls.sum())
    names = list(dataset.classes)
    med = class_weights(cls, "median_freq", presence)
    inv = class_weights(cls, "inv_log")
    return {
        "dataset": dataset.name,
        "split": dataset.split,
        "num_images": n,
        "num_classes": k,
        "classes": names,
        "image_sizes": dict(sizes.most_common()),
        "total_pixels": int(counts.sum()),
        "labeled_pixels": labeled,
        "ignored_pixels": int(counts[dataset.ignore_index]),
        "pixel_counts": {c: int(v) for c, v in zip(names, cls)},
        "frequencies": {c: (float(v) / labeled if labeled else 0.0) for c, v in zip(names, cls)},
        "presence_pixels": {c: int(v) for c, v in zip(names, presence)},
        "class_weights": {
            "median_freq": {c: _round(v) for c, v in zip(names, med)},
            "inv_log": {c: _round(v) for c, v in zip(names, inv)},
        },
    }


def _image_hw(dataset: Any, i: int, mask_shape: tuple[int, ...]) -> tuple[int, int]:
    """The image's own (H, W) as displayed, from its header (no decode); a mask may differ from its image
    (that is what ``--validate`` reports), so the mask's shape is used only for generated samples."""
    from .base import header_info

    samples = getattr(dataset, "samples", None)
    image = samples[i].image if samples is not None and i < len(samples) else None
    if image is None:
        return int(mask_shape[0]), int(mask_shape[1])
    try:
        (w, h), _, _ = header_info(image)
    except (OSError, SyntaxError, ValueError):
        h, w = dataset.load_image(i).shape[:2]  # the adapter's one-line error for an unreadable image
    return int(h), int(w)


def _round(v: float) -> float:
    return float(round(v, 6)) if math.isfinite(v) else 0.0

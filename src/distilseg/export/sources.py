"""Where export and bench get their inputs: model references and images, turned into arrays.

Why one module: ``export``, ``bench`` and ``OnnxSegmenter`` must resolve ``DIR`` / ``zoo:NAME`` the same way
and must preprocess images exactly alike (resize, scale to [0, 1], normalize with the artifact's mean/std),
or the agreement numbers they report would compare different inputs.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch

from ..artifact import resolve_artifact_dir
from ..data.base import IMAGENET_MEAN, IMAGENET_STD
from ..errors import DataError, UsageError
from ..inference.preprocess import image_to_input, normalization_tensors


def load_torch_model(ref: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load an artifact (``DIR`` or ``zoo:NAME``) in eval mode with its config."""
    from ..artifact import load_artifact

    model, config = load_artifact(resolve_artifact_dir(ref))
    model.eval()
    return model, config


def preprocess(
    image: np.ndarray,
    size: tuple[int, int] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32: /255, bilinear antialiased resize to ``size`` (when given),
    (x - mean) / std.

    The segmenters' own preprocessing (``distilseg.inference.preprocess.image_to_input``), so ONNX and PyTorch
    predictions and the export check see identical inputs. Mean/std given on the 0-255 scale are rescaled.
    """
    m, s = normalization_tensors(mean, std)
    return image_to_input(np.array(image, dtype=np.uint8), size, m, s)[0].numpy().astype(np.float32)


def dataset_images(
    name: str, root: str | os.PathLike | None, split: str, count: int, dataset_args: dict[str, Any] | None = None
) -> list[np.ndarray]:
    """``count`` images (HxWx3 uint8) of a registered dataset, spread evenly over the split; ``dataset_args``
    are the dataset's own options (e.g. Cityscapes ``label_type``), as in ``train --dataset-args``."""
    from ..data import create_dataset

    if count < 1:
        raise UsageError(f"the number of images must be positive, got {count}")
    ds = create_dataset(name, root=root, split=split, **(dataset_args or {}))
    n = len(ds)
    if n == 0:
        raise DataError(f"dataset {name!r} split {split!r} at {root}: no images")
    idx = np.linspace(0, n - 1, num=min(count, n)).round().astype(int)
    return [np.asarray(ds.load_image(int(i))) for i in dict.fromkeys(idx.tolist())]

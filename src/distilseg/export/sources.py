"""Where export and bench get their inputs: model references and images, turned into arrays.

Why one module: ``export``, ``bench`` and ``OnnxSegmenter`` must resolve ``DIR`` / ``zoo:NAME`` the same way
and must preprocess images exactly alike (resize, scale to [0, 1], normalize with the artifact's mean/std),
or the agreement numbers they report would compare different inputs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..errors import CheckpointError, DataError, UsageError
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD, normalization  # noqa: F401 - re-exported
from ..preprocess import image_to_input, normalization_tensors


def resolve_artifact_dir(ref: str | os.PathLike) -> Path:
    """``DIR`` (an artifact, or a training output holding ``best/``) or ``zoo:NAME`` -> artifact folder."""
    from ..zoo import is_zoo_ref, resolve_zoo

    path = resolve_zoo(str(ref)) if is_zoo_ref(str(ref)) else Path(ref)
    if (path / "config.json").is_file():
        return path
    if (path / "best" / "config.json").is_file():
        return path / "best"
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    raise CheckpointError(f"{path}: not a model artifact (no config.json, nor best/config.json)")


def find_onnx(ref: str | os.PathLike) -> Path | None:
    """The ONNX file ``ref`` names: a ``.onnx`` path, or a zoo entry / folder that holds exactly one."""
    from ..zoo import is_zoo_ref, resolve_zoo

    s = str(ref)
    if s.endswith(".onnx"):
        return Path(s)
    path = resolve_zoo(s) if is_zoo_ref(s) else Path(s)
    if path.is_dir() and not (path / "config.json").is_file() and not (path / "best" / "config.json").is_file():
        found = sorted(path.glob("*.onnx"))
        if len(found) == 1:
            return found[0]
    return None


def load_torch_model(ref: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load an artifact (``DIR`` or ``zoo:NAME``) in eval mode with its config."""
    from ..engine.artifact import load_artifact

    model, config = load_artifact(resolve_artifact_dir(ref))
    model.eval()
    return model, config


def parse_size(size: Sequence[int] | None, what: str = "--img-size") -> tuple[int, int] | None:
    """Validate an ``(H, W)`` pair of positive ints (None stays None)."""
    if size is None:
        return None
    if len(size) != 2 or any(int(s) != s or int(s) < 1 for s in size):
        raise UsageError(f"{what} needs two positive integers H W, got {list(size)}")
    return int(size[0]), int(size[1])


def preprocess(
    image: np.ndarray,
    size: tuple[int, int] | None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32: /255, bilinear antialiased resize to ``size`` (when given),
    (x - mean) / std.

    The segmenters' own preprocessing (``distilseg.preprocess.image_to_input``), so ONNX and PyTorch
    predictions and the export check see identical inputs. Mean/std given on the 0-255 scale are rescaled.
    """
    m, s = normalization_tensors(mean, std)
    return image_to_input(np.array(image, dtype=np.uint8), size, m, s)[0].numpy().astype(np.float32)


def dataset_images(name: str, root: str | os.PathLike | None, split: str, count: int) -> list[np.ndarray]:
    """The first ``count`` images (HxWx3 uint8) of a registered dataset, spread evenly over the split."""
    from ..data import create_dataset

    if count < 1:
        raise UsageError(f"the number of images must be positive, got {count}")
    ds = create_dataset(name, root=root, split=split)
    n = len(ds)
    if n == 0:
        raise DataError(f"dataset {name!r} split {split!r} at {root}: no images")
    idx = np.linspace(0, n - 1, num=min(count, n)).round().astype(int)
    return [np.asarray(ds.load_image(int(i))) for i in dict.fromkeys(idx.tolist())]

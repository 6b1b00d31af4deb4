"""distilseg: semantic segmentation teachers, distilled students, deployment and exact evaluation."""
from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "load", "create_model", "TrainConfig", "DistillConfig", "train", "distill"]

_CONFIGS = {"TrainConfig": "distilseg.training.config", "DistillConfig": "distilseg.distill.api"}


def __getattr__(name: str):
    """``TrainConfig`` / ``DistillConfig``, imported when first asked for (``import distilseg`` stays light)."""
    if name in _CONFIGS:
        import importlib

        return getattr(importlib.import_module(_CONFIGS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def train(cfg):
    """Train a model per ``cfg`` (a ``TrainConfig``), as ``distilseg train`` does; returns the output folder.

    ``train(TrainConfig(dataset="synthetic", model="unet", img_size=(64, 64), epochs=1, out="runs/x"))``
    """
    from .training.train import train as _train

    return _train(cfg)


def distill(cfg):
    """Distill ``cfg.teacher`` into ``cfg.model`` per ``cfg`` (a ``DistillConfig``), as ``distilseg distill``
    does; returns the output folder."""
    from .distill.api import distill as _distill

    return _distill(cfg)


def load(path, device: str = "cpu"):
    """Load a model artifact folder (``model.safetensors`` + ``config.json``), an ONNX file or ``zoo:NAME``.

    Returns a ``Segmenter`` whose ``.predict(images)`` gives class maps at each input's own size.
    """
    from .inference import load as _load

    return _load(path, device=device)


def create_model(name: str, num_classes: int, **kwargs):
    """Build a registered architecture (see ``distilseg models``)."""
    from .models import create_model as _create

    return _create(name, num_classes, **kwargs)

"""distilseg: semantic segmentation teachers, distilled students, deployment and exact evaluation."""
from __future__ import annotations

from ._version import __version__

__all__ = ["__version__", "load", "create_model"]


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

"""``distilseg.load`` and the PyTorch ``Segmenter``: one object that turns images into class maps.

Why a class of its own: ``predict``, ``eval``, the demo and user code must all preprocess the same way
(resize to the artifact's ``input_size``, normalize with its mean/std) and bring the result back to each
input's *own* size. Doing it in one place is what makes ``eval``'s numbers equal to those recomputed from
``predict``'s saved label maps. Loading never unpickles: artifacts are safetensors + JSON. ``load`` also
resolves ``zoo:NAME`` and ONNX files (``onnx_backend.OnnxSegmenter``, the same ``predict``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..artifact import resolve_artifact_dir
from ..checks import size_pair
from ..errors import CheckpointError, UsageError
from .base import (  # noqa: F401 - re-exported: the predictor's public names live here
    ImageLike, SegmenterBase, as_image_list, class_map, default_palette,
    read_image, resolve_device, tensor_to_rgb_array, to_rgb_array,
)
from .preprocess import normalization_tensors

__all__ = ["Segmenter", "SegmenterBase", "load", "find_onnx", "read_image", "to_rgb_array"]


class Segmenter(SegmenterBase):
    """A loaded model plus the preprocessing its artifact prescribes.

    ``predict(images)`` returns one HxW uint8 class map per input at that input's own size. Each image is
    resized (bilinear, antialiased) to ``input_size`` when set (kept native when it is ``None``),
    normalized with the artifact's mean/std, and the logits are resized bilinearly back to the original
    size before the argmax. ``tta="flip"`` (and/or ``scales=...``) averages the softmax of every pass at
    the image's own size; ``resize``/``slide`` options: see ``predict``.
    """

    def __init__(self, model: nn.Module, config: dict[str, Any], device: str | torch.device = "cpu",
                 source: str | Path | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self._config = dict(config)
        self.source = source
        self.input_size = config.get("input_size")
        self._mean, self._std = normalization_tensors(config.get("mean"), config.get("std"), self.device)
        self._stride = int(getattr(model, "output_stride", 1) or 1)

    def __repr__(self) -> str:
        return (f"Segmenter(arch={self._config.get('architecture')!r}, num_classes={self.num_classes}, "
                f"input_size={self.input_size}, device={self.device})")

    def _parse_size(self, size: Sequence[int] | None) -> tuple[int, int] | None:
        return size_pair(size, "input size", allow_none=True)

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        dtype = next((p.dtype for p in self.model.parameters()), torch.float32)
        out = self.model(batch.to(dtype))
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = out.get("out", next(iter(out.values())))
        if out.dim() != 4 or out.shape[1] != self.num_classes:
            raise CheckpointError(
                f"{self.source or 'model'}: produced output of shape {tuple(out.shape)}, expected "
                f"N x {self.num_classes} x H x W"
            )
        return out


def _onnx_providers(device: str | torch.device | None) -> list[str] | None:
    """Map our device names onto ONNX Runtime providers (``auto``/None: the runtime's default choice)."""
    if device is None or str(device) == "auto":
        return None
    kind = torch.device(device).type if not isinstance(device, torch.device) else device.type
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise UsageError(f"device {device!r} is not supported for ONNX models; use cpu, cuda or auto")


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


def load(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load an artifact folder (or a folder with ``best/``), an ``.onnx`` file, or ``zoo:NAME``.

    Returns a ``Segmenter`` (or, for ONNX, an ``OnnxSegmenter`` with the same interface).
    """
    from ..zoo import is_zoo_ref, resolve_zoo

    if is_zoo_ref(path):
        path = resolve_zoo(str(path))
        onnx_files = sorted(Path(path).glob("*.onnx"))
        if not (Path(path) / "config.json").is_file() and not (Path(path) / "best").is_dir() and onnx_files:
            path = onnx_files[0]
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise CheckpointError(f"{path}: no such ONNX file")
        from .onnx_backend import OnnxSegmenter

        return OnnxSegmenter(path, providers=_onnx_providers(device))
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (expected an artifact folder, a .onnx file or zoo:NAME)")
    if path.is_file():
        raise CheckpointError(
            f"{path}: expected an artifact folder (model.safetensors + config.json), a .onnx file or zoo:NAME"
        )
    from ..artifact import load_artifact

    directory = resolve_artifact_dir(path)
    model, config = load_artifact(directory, map_location="cpu")
    return Segmenter(model, config, device=device, source=directory)

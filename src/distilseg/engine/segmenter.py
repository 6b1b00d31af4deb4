"""``distilseg.load`` and the ``Segmenter``: one object that turns images into class maps.

Why a class of its own: ``predict``, ``eval``, the demo and user code must all preprocess the same way
(resize to the artifact's ``input_size``, normalize with its mean/std) and bring the result back to each
input's *own* size. Doing it in one place is what makes ``eval``'s numbers equal to those recomputed from
``predict``'s saved label maps. Loading never unpickles: artifacts are safetensors + JSON.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, DataError, UsageError
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD  # noqa: F401 - re-exported
from ..preprocess import flip_average, image_to_input, normalization_tensors, resize_scores
from ..viz.palette import default_palette  # the artifact default; also imported from here by export

ImageLike = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821

TTA_MODES = (None, "flip")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` picks CUDA when present; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"invalid device {device!r}: {exc}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} requested but CUDA is not available")
    return dev


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB; a missing or non-image file is a ``DataError`` naming it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from exc


def to_rgb_array(image: ImageLike) -> np.ndarray:
    """Accept a path, PIL image or array (HxW gray, HxWx3 RGB, HxWx4 RGBA, uint8) -> HxWx3 uint8."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image)
    if isinstance(image, np.ndarray):
        arr = image
    else:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - pillow is a dependency
            Image = None
        if Image is not None and isinstance(image, Image.Image):
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
        raise UsageError(f"cannot read an image from {type(image).__name__}; pass a path, PIL image or array")
    if arr.dtype != np.uint8:
        raise UsageError(f"image arrays must be uint8 (0-255), got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[:, :, :3]
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise UsageError(f"image arrays must be HxWx3 (RGB), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def as_image_list(images: Any) -> list:
    """A single image (path, PIL image, 2-D/3-D array) becomes a one-item list; a 4-D array is a batch."""
    if isinstance(images, (str, os.PathLike)):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        return [images]
    try:
        from PIL import Image

        if isinstance(images, Image.Image):
            return [images]
    except ImportError:  # pragma: no cover
        pass
    if isinstance(images, Iterable):
        return list(images)
    raise UsageError(f"cannot read images from {type(images).__name__}")


def _check_tta(tta: str | None) -> str | None:
    if tta in ("", "none"):
        tta = None
    if tta not in TTA_MODES:
        raise UsageError(f"unknown test-time augmentation {tta!r}; choose 'flip' or none")
    return tta


def _check_size(size: Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    size = tuple(int(s) for s in size)
    if len(size) != 2 or min(size) < 1:
        raise UsageError(f"input size must be two positive integers H W, got {list(size)}")
    return size  # type: ignore[return-value]


class SegmenterBase:
    """What both segmenters share: the artifact's classes and palette, batching, preprocessing, flip TTA
    and resizing the scores back to each input's own size.

    A subclass sets ``_config``, ``input_size`` and ``_mean``/``_std`` (from ``normalization_tensors``;
    their device is where preprocessing runs) and supplies ``_run`` (one network pass: N x 3 x H x W
    inputs -> N x C x H x W logits), ``_parse_size`` (checks ``input_size``) and ``_parse_tta``.
    """

    _config: dict[str, Any]
    _mean: torch.Tensor
    _std: torch.Tensor

    # ---- properties -------------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        return dict(self._config)

    @property
    def num_classes(self) -> int:
        return int(self._config["num_classes"])

    @property
    def class_names(self) -> list[str]:
        names = self._config.get("class_names")
        if names and len(names) == self.num_classes:
            return [str(n) for n in names]
        return [f"class_{i}" for i in range(self.num_classes)]

    @property
    def palette(self) -> np.ndarray:
        pal = self._config.get("palette")
        if pal is not None and len(pal) >= self.num_classes:
            return np.asarray(pal, dtype=np.uint8).reshape(-1, 3)[: self.num_classes]
        return default_palette(self.num_classes)

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self._input_size

    @input_size.setter
    def input_size(self, size: Sequence[int] | None) -> None:
        """Override the artifact's size (``--img-size``); ``None`` runs at each image's native size."""
        self._input_size = self._parse_size(size)

    # ---- inference -------------------------------------------------------------------------------
    def predict(self, images: Any, batch_size: int = 4, tta: str | None = None) -> list[np.ndarray]:
        """Class maps (HxW uint8) at each input's own size; a single image still gives a list."""
        return [s.argmax(0).to(torch.uint8).cpu().numpy() for s in self._scores(images, batch_size, tta)]

    def predict_logits(self, images: Any, batch_size: int = 4, tta: str | None = None) -> list[np.ndarray]:
        """Per-image CxHxW float32 scores at each input's own size.

        Raw logits without TTA; with ``tta="flip"`` the log of the averaged softmax (so that the argmax is
        the TTA prediction and ``exp`` gives probabilities).
        """
        return [s.float().cpu().numpy() for s in self._scores(images, batch_size, tta)]

    def _scores(self, images: Any, batch_size: int, tta: str | None):
        """Yield one C x H x W tensor per input, in order, at the input's own size."""
        tta = self._parse_tta(tta)
        if int(batch_size) < 1:
            raise UsageError(f"batch size must be positive, got {batch_size}")
        items = as_image_list(images)
        for start in range(0, len(items), int(batch_size)):
            arrays = [to_rgb_array(im) for im in items[start:start + int(batch_size)]]
            yield from self._scores_batch(arrays, tta)

    @torch.inference_mode()
    def _scores_batch(self, arrays: list[np.ndarray], tta: str | None) -> list[torch.Tensor]:
        tensors = [image_to_input(a, self.input_size, self._mean, self._std) for a in arrays]
        out: list[torch.Tensor | None] = [None] * len(arrays)
        # Batch the images that share a network input size (all of them when input_size is set).
        groups: dict[tuple[int, int], list[int]] = {}
        for i, t in enumerate(tensors):
            groups.setdefault(tuple(t.shape[-2:]), []).append(i)
        for idx in groups.values():
            batch = torch.cat([tensors[i] for i in idx], dim=0)
            scores = self._forward(batch, tta)
            for j, i in enumerate(idx):
                out[i] = resize_scores(scores[j:j + 1], arrays[i].shape[:2])[0]
        return out  # type: ignore[return-value]

    def _forward(self, batch: torch.Tensor, tta: str | None) -> torch.Tensor:
        logits = self._run(batch)
        if tta is None:
            return logits.float()
        return flip_average(logits, self._run(batch.flip(-1)).flip(-1))

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _parse_size(self, size: Sequence[int] | None) -> tuple[int, int] | None:
        raise NotImplementedError

    def _parse_tta(self, tta: Any) -> str | None:
        raise NotImplementedError


class Segmenter(SegmenterBase):
    """A loaded model plus the preprocessing its artifact prescribes.

    ``predict(images)`` returns one HxW uint8 class map per input at that input's own size. Each image is
    resized (bilinear, antialiased) to ``input_size`` when set (kept native when it is ``None``),
    normalized with the artifact's mean/std, and the logits are resized bilinearly back to the original
    size before the argmax. ``tta="flip"`` averages the softmax of the image and its horizontal mirror.
    """

    def __init__(self, model: nn.Module, config: dict[str, Any], device: str | torch.device = "cpu",
                 source: str | Path | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self._config = dict(config)
        self.source = source
        self.input_size = config.get("input_size")
        self._mean, self._std = normalization_tensors(config.get("mean"), config.get("std"), self.device)

    def __repr__(self) -> str:
        return (f"Segmenter(arch={self._config.get('architecture')!r}, num_classes={self.num_classes}, "
                f"input_size={self.input_size}, device={self.device})")

    def _parse_size(self, size: Sequence[int] | None) -> tuple[int, int] | None:
        return _check_size(size)

    def _parse_tta(self, tta: Any) -> str | None:
        return _check_tta(tta)

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


def resolve_artifact_dir(path: str | os.PathLike) -> Path:
    """An artifact folder, or a training output folder holding ``best/`` (then ``last/``)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / "config.json").is_file():
            return path / sub
    raise CheckpointError(
        f"{path}: not a model artifact (no config.json, and no best/ or last/ artifact inside)"
    )


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
        try:
            from ..export.onnx_runtime import OnnxSegmenter
        except ModuleNotFoundError as exc:
            raise CheckpointError(f"{path}: ONNX support is not available ({exc})") from exc
        return OnnxSegmenter(path, providers=_onnx_providers(device))
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint (expected an artifact folder, a .onnx file or zoo:NAME)")
    if path.is_file():
        raise CheckpointError(
            f"{path}: expected an artifact folder (model.safetensors + config.json), a .onnx file or zoo:NAME"
        )
    from .artifact import load_artifact

    directory = resolve_artifact_dir(path)
    model, config = load_artifact(directory, map_location="cpu")
    return Segmenter(model, config, device=device, source=directory)

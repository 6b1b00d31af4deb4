"""Dataset base class, sample records and batching shared by every adapter."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Sample:
    """One image/mask pair; ``name`` is the original stem (used for dumped masks and predictions)."""

    image: Path | None
    mask: Path | None
    name: str


def read_rgb(path: Path) -> np.ndarray:
    """Image file -> HxWx3 uint8 RGB; a missing or unreadable file is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc}); the file may be truncated or not an image") from exc


def read_raw_mask(path: Path, color: bool = False) -> np.ndarray:
    """Label file -> HxW uint8 (index masks, palette PNGs give their indices) or HxWx3 when ``color``."""
    if not path.is_file():
        raise DataError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            if color:
                return np.asarray(im.convert("RGB"))
            if im.mode in ("RGB", "RGBA"):
                raise DataError(
                    f"{path}: mask is a color image ({im.mode}) but this dataset expects single-channel "
                    "class indices (for color masks give a palette file)"
                )
            arr = np.asarray(im)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read mask ({exc}); the file may be truncated or not an image") from exc
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"{path}: mask values outside 0-255 ({int(arr.min())}..{int(arr.max())})")
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:  # e.g. LA
        arr = arr[..., 0]
    return arr


def default_transform(image: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
    """ToTensor + ImageNet normalization; the mask stays at its native size as a long tensor."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return {"image": (img - mean) / std, "mask": torch.from_numpy(np.ascontiguousarray(mask)).long()}


class SegDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``samples`` and implement ``decode_mask`` (raw label -> train ids).

    Class attributes describe the dataset for ``distilseg datasets`` before anything is loaded.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    requires_root: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ()
    color_masks: ClassVar[bool] = False
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Callable[..., dict[str, Any]] | None,
        classes: list[str],
        palette: np.ndarray,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.split = split
        self.transform = transform
        self.classes = list(classes)
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        self.samples: list[Sample] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, root={self.root}, n={len(self)})"

    def load_image(self, i: int) -> np.ndarray:
        sample = self.samples[i]
        if sample.image is None:
            raise DataError(f"{self.name}: sample {sample.name} has no image file")
        return read_rgb(sample.image)

    def load_mask(self, i: int) -> np.ndarray:
        sample = self.samples[i]
        if sample.mask is None:
            raise DataError(f"{self.name}: sample {sample.name} has no mask file")
        raw = read_raw_mask(sample.mask, color=self.color_masks)
        return self.decode_mask(raw, sample.mask)

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        image = self.load_image(i)
        mask = self.load_mask(i)
        if self.transform is None:
            out = default_transform(image, mask)
        else:
            out = self.transform(image=image, mask=mask)
        m = out["mask"]
        m = torch.as_tensor(m) if not isinstance(m, torch.Tensor) else m
        return {"image": out["image"], "mask": m.long(), "name": self.samples[i].name, "index": i}


def collate_segmentation(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images/masks when all shapes match, else keep lists (native-size eval masks differ)."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor):
            same = all(v.shape == values[0].shape for v in values)
            out[key] = torch.stack(values) if same else values
        elif key == "index":
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out

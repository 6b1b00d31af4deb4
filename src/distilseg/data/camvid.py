"""CamVid in the SegNet layout: ``train/ trainannot/ val/ valannot/ test/ testannot/`` (+ list files)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import Sample, SegDataset
from .base import register_dataset
from .tables import apply_lut, camvid_table


def _resolve(root: Path, split_dirs: tuple[str, str], foreign: str, which: int, list_file: Path, line_no: int) -> Path:
    """Map a foreign absolute path (``/SegNet/CamVid/train/x.png``) to ``root/<dir>/<name>``."""
    parts = Path(foreign.replace("\\", "/")).parts
    if not parts or any(p in (".", "..") for p in parts[-2:]):
        raise DataError(
            f"{list_file}:{line_no}: {foreign!r} does not end in FOLDER/FILE inside the dataset root "
            f"(list entries must not climb out of {root} with '..')"
        )
    candidates = []
    if len(parts) >= 2:
        candidates.append(root / parts[-2] / parts[-1])
    candidates.append(root / split_dirs[which] / parts[-1])
    inside = os.path.normpath(root)
    for c in candidates:
        if os.path.commonpath([inside, os.path.normpath(c)]) != inside:  # never read outside the root
            continue
        if c.is_file():
            return c
    raise DataError(
        f"{list_file}:{line_no}: {foreign!r} resolves to {candidates[-1]}, which does not exist "
        "(list files are resolved by file name relative to the dataset root)"
    )


@register_dataset
class CamVid(SegDataset):
    name = "camvid"
    description = "CamVid road scenes, SegNet layout (11 classes, value 11 = void)"
    group_pattern = r"([^/_]+)_[^/]*$"  # the sequence (street): 0001TP_006690.png -> 0001TP

    @staticmethod
    def default_classes() -> tuple[list[str], np.ndarray]:
        names, palette, _ = camvid_table()
        return names, palette

    def __init__(self, root, split="train", transform=None) -> None:
        names, palette, self._lut = camvid_table()
        super().__init__(root, split, transform, names, palette)
        root = Path(root)
        img_dir, ann_dir = root / split, root / f"{split}annot"
        if not img_dir.is_dir() or not ann_dir.is_dir():
            raise DataError(
                f"{root}: not a CamVid (SegNet layout) root: expected folders {img_dir} and {ann_dir} "
                f"(layout: train/ trainannot/ val/ valannot/ test/ testannot/)"
            )
        list_file = root / f"{split}.txt"
        if list_file.is_file():
            self.samples = self._from_list(root, list_file, (split, f"{split}annot"))
        else:
            self.samples = [
                Sample(p, ann_dir / p.name, p.stem)
                for p in sorted(img_dir.iterdir())
                if p.suffix.lower() in (".png", ".jpg", ".jpeg")
            ]
            for s in self.samples:
                if not s.mask.is_file():
                    raise DataError(f"{s.mask}: label file for image {s.image} not found")

    @staticmethod
    def _from_list(root: Path, list_file: Path, dirs: tuple[str, str]) -> list[Sample]:
        samples = []
        for n, line in enumerate(list_file.read_text().splitlines(), start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            if len(fields) != 2:
                raise DataError(f"{list_file}:{n}: expected 'IMAGE LABEL', got {line!r}")
            image = _resolve(root, dirs, fields[0], 0, list_file, n)
            mask = _resolve(root, dirs, fields[1], 1, list_file, n)
            samples.append(Sample(image, mask, image.stem))
        return samples

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return apply_lut(raw, self._lut, path, "CamVid classes 0-10 or void 11")

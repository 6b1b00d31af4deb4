"""Indian Driving Dataset: official layout (level ids) and the color-coded re-packaging (``idd-rgb``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from .base import IMAGE_EXTENSIONS, Sample, SegDataset
from .cityscapes import official_pairs
from .base import register_dataset
from .tables import ColorDecoder, apply_lut, idd_levels, idd_rgb_table, make_lut


@register_dataset
class IDD(SegDataset):
    name = "idd"
    description = "IDD official layout, gtFine *_labellevel{1,2,3}Ids.png (level 3 = 26 classes; option level)"
    group_pattern = r"([^/]+)/[^/]+$"  # the drive folder: leftImg8bit/train/201/... -> 201
    options = ("level",)
    option_types = {"level": "positive"}

    @staticmethod
    def default_classes() -> tuple[list[str], np.ndarray]:
        names, palette, _ = idd_levels()[3]
        return names, palette

    def __init__(self, root, split="train", transform=None, level: int = 3) -> None:
        try:
            level = int(level)
        except (TypeError, ValueError):
            level = -1
        if level not in (1, 2, 3):
            raise UsageError(f"idd: level must be 1, 2 or 3, not {level!r}")
        self.level = level
        names, palette, self._from_level3 = idd_levels()[level]
        super().__init__(root, split, transform, names, palette)
        # a level-L file holds level-L ids directly: identity LUT over its classes + 255
        self._direct = make_lut({i: i for i in range(len(names))} | {255: 255})
        own = f"_gtFine_labellevel{level}Ids"
        suffixes = [own] if level == 3 else [own, "_gtFine_labellevel3Ids"]
        for image, masks, stem in official_pairs(Path(root), split, suffixes, "IDD"):
            found = next((m for m in masks if m.is_file()), None)
            if found is None:
                raise DataError(f"{masks[-1]}: label file for image {image} not found (looked for {', '.join(m.name for m in masks)})")
            self.samples.append(Sample(image, found, stem))

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if path.name.endswith(f"_labellevel{self.level}Ids.png"):
            return apply_lut(raw, self._direct, path, f"IDD level{self.level} ids 0-{self.num_classes - 1} or 255")
        # derive level 1/2 from a level3 file
        return apply_lut(raw, self._from_level3, path, "IDD level3 ids 0-25 or 255")


@register_dataset
class IDDRGB(SegDataset):
    name = "idd-rgb"
    description = "IDD color-coded re-packaging (<split>/images, <split>/rgb_labels; 26 level3 classes)"
    color_masks = True

    @staticmethod
    def default_classes() -> tuple[list[str], np.ndarray]:
        names, palette, _ = idd_rgb_table()
        return names, palette

    def __init__(self, root, split="train", transform=None) -> None:
        names, palette, colors = idd_rgb_table()
        super().__init__(root, split, transform, names, palette)
        self._decoder = ColorDecoder(colors)
        root = Path(root)
        img_dir, lab_dir = root / split / "images", root / split / "rgb_labels"
        if not img_dir.is_dir() or not lab_dir.is_dir():
            raise DataError(
                f"{root}: not an IDD color-coded root: expected folders {img_dir} and {lab_dir}"
            )
        labels = {p.stem: p for p in lab_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
        for image in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            mask = labels.get(image.stem)
            if mask is None:
                raise DataError(f"{lab_dir / (image.stem + '.png')}: color label for image {image} not found")
            self.samples.append(Sample(image, mask, image.stem))

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return self._decoder(raw, path)

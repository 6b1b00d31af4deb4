"""Cityscapes (official layout): ``leftImg8bit/<split>/<city>/`` + ``gtFine/<split>/<city>/``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from .base import Sample, SegDataset
from .base import register_dataset
from .tables import apply_lut, cityscapes_misc20_table, cityscapes_table

IMG_SUFFIX = "_leftImg8bit"


def official_pairs(root: Path, split: str, mask_suffixes: list[str], dataset: str) -> list[tuple[Path, list[Path], str]]:
    """(image, candidate masks, stem) for each ``leftImg8bit/<split>/<group>/*_leftImg8bit.*`` file."""
    img_root, gt_root = root / "leftImg8bit" / split, root / "gtFine" / split
    if not img_root.is_dir() or not gt_root.is_dir():
        raise DataError(
            f"{root}: not a {dataset} root: expected folders {img_root} and {gt_root} "
            f"(layout: leftImg8bit/<split>/<city>/*{IMG_SUFFIX}.png, gtFine/<split>/<city>/*_gtFine_*.png)"
        )
    out = []
    for image in sorted(img_root.glob(f"*/*{IMG_SUFFIX}.*")):
        stem = image.stem[: -len(IMG_SUFFIX)]
        group = image.parent.name
        out.append((image, [gt_root / group / f"{stem}{s}.png" for s in mask_suffixes], stem))
    return out


@register_dataset
class Cityscapes(SegDataset):
    name = "cityscapes"
    description = "Cityscapes fine annotations (34 label ids -> 19 train ids)"
    group_pattern = r"([^/]+)/[^/]+$"  # the city folder: leftImg8bit/train/aachen/... -> aachen
    options = ("label_type",)
    option_types = {"label_type": "text"}

    @staticmethod
    def default_classes() -> tuple[list[str], np.ndarray]:
        names, palette, _, _ = cityscapes_table()
        return names, palette

    def __init__(self, root, split="train", transform=None, label_type: str = "auto") -> None:
        """``label_type``: ``auto`` / ``labelIds`` / ``labelTrainIds`` (which label files; 19 classes), or
        ``misc20``: 20 classes, the 19 train classes plus ``misc`` (19) = every labelled class that is
        ignored in the official evaluation (parking, guard rail, caravan, static, ...); unlabeled, ego
        vehicle, rectification border, out of roi and license plate stay 255 (see
        ``tables.cityscapes_misc20_table``). ``misc20`` reads ``*_gtFine_labelIds.png`` (train-id files
        have already lost the distinction)."""
        if label_type not in ("auto", "labelIds", "labelTrainIds", "misc20"):
            raise UsageError(
                f"cityscapes: label_type must be auto, labelIds, labelTrainIds or misc20, not {label_type!r}"
            )
        names, palette, self._id_lut, self._train_lut = cityscapes_table()
        self.label_type = label_type
        if label_type == "misc20":
            names, palette, self._id_lut = cityscapes_misc20_table()
        super().__init__(root, split, transform, names, palette)
        suffixes = {
            "auto": ["_gtFine_labelIds", "_gtFine_labelTrainIds"],
            "labelIds": ["_gtFine_labelIds"],
            "labelTrainIds": ["_gtFine_labelTrainIds"],
            "misc20": ["_gtFine_labelIds"],
        }[label_type]
        for image, masks, stem in official_pairs(Path(root), split, suffixes, "Cityscapes"):
            found = next((m for m in masks if m.is_file()), None)
            if found is None:
                raise DataError(f"{masks[0]}: label file for image {image} not found (looked for {', '.join(m.name for m in masks)})")
            self.samples.append(Sample(image, found, stem))

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if self.label_type == "misc20":
            return apply_lut(raw, self._id_lut, path, "Cityscapes label ids 0-33 or 255")
        if path.name.endswith("_labelTrainIds.png"):
            return apply_lut(raw, self._train_lut, path, "Cityscapes train ids 0-18 or 255")
        return apply_lut(raw, self._id_lut, path, "Cityscapes label ids 0-33 or 255")

"""Oxford-IIIT Pet trimaps: ``images/*.jpg``, ``annotations/trimaps/*.png``, ``annotations/{trainval,test}.txt``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import Sample, SegDataset
from .base import register_dataset
from .tables import IGNORE, apply_lut, make_lut, oxford_pet_table

PALETTE = np.array([[220, 20, 60], [0, 0, 0], [255, 255, 255]], dtype=np.uint8)
VAL_FRACTION = 0.1


def split_trainval(stems: list[str], seed: int) -> tuple[list[str], list[str]]:
    """Deterministic 90/10 split of ``trainval`` (both parts keep the list file's order)."""
    n = len(stems)
    n_val = int(round(n * VAL_FRACTION)) if n > 1 else 0
    if n > 1:
        n_val = max(1, n_val)
    perm = np.random.default_rng(seed).permutation(n)
    val_idx = set(perm[:n_val].tolist())
    train = [s for i, s in enumerate(stems) if i not in val_idx]
    val = [s for i, s in enumerate(stems) if i in val_idx]
    return train, val


@register_dataset
class OxfordPet(SegDataset):
    name = "oxford-pet"
    description = "Oxford-IIIT Pet trimaps (pet / background / boundary; option binary: boundary ignored)"
    group_pattern = r"([^/]+)_\d+\.[^/.]+$"  # the breed: images/Abyssinian_100.jpg -> Abyssinian
    splits = ("trainval", "test", "train", "val")
    options = ("binary", "seed")
    option_types = {"binary": "bool", "seed": "count"}

    @staticmethod
    def default_classes() -> tuple[list[str], np.ndarray]:
        names, _ = oxford_pet_table()
        return names, PALETTE

    def __init__(self, root, split="trainval", transform=None, binary: bool = False, seed: int = 0) -> None:
        names, trimap = oxford_pet_table()
        mapping = dict(trimap)
        if binary:
            boundary = names.index(next(n for n in names if n.startswith("boundary")))
            mapping = {v: (IGNORE if t == boundary else t) for v, t in trimap.items()}
            names = [n for i, n in enumerate(names) if i != boundary]
        super().__init__(root, split, transform, names, PALETTE[: len(names)])
        self.binary = bool(binary)
        self._lut = make_lut(mapping)
        root = Path(root)
        img_dir, tri_dir = root / "images", root / "annotations" / "trimaps"
        list_name = "test" if split == "test" else "trainval"
        list_file = root / "annotations" / f"{list_name}.txt"
        for need in (img_dir, tri_dir):
            if not need.is_dir():
                raise DataError(
                    f"{root}: not an Oxford-IIIT Pet root: expected folder {need} "
                    "(layout: images/*.jpg, annotations/trimaps/*.png, annotations/trainval.txt|test.txt)"
                )
        if not list_file.is_file():
            raise DataError(f"{list_file}: split list not found (first column of each line is the image stem)")
        stems = []
        for line in list_file.read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                stems.append(line.split()[0])
        if split in ("train", "val"):
            stems = split_trainval(stems, int(seed))[0 if split == "train" else 1]
        for stem in stems:
            image = img_dir / f"{stem}.jpg"
            if not image.is_file():
                alt = [p for p in (img_dir / f"{stem}.jpeg", img_dir / f"{stem}.png") if p.is_file()]
                if not alt:
                    raise DataError(f"{image}: image listed in {list_file} not found")
                image = alt[0]
            mask = tri_dir / f"{stem}.png"
            if not mask.is_file():
                raise DataError(f"{mask}: trimap for image {image} not found")
            self.samples.append(Sample(image, mask, stem))

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        return apply_lut(raw, self._lut, path, "trimap values 1, 2, 3")

"""Any folder of ``images/`` + ``masks/`` (optionally under ``<split>/``), paired by file stem.

Index masks hold class ids (255 = ignore); with a palette file (CSV ``id,name,r,g,b`` or JSON) color
masks are decoded by exact color and class names come from the palette.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from ..viz.palette import default_palette
from .base import IMAGE_EXTENSIONS, Sample, SegDataset, read_raw_mask
from .registry import register_dataset
from .tables import IGNORE, ColorDecoder, apply_lut, make_lut


def read_palette_file(path: str | Path) -> list[tuple[int, str, tuple[int, int, int]]]:
    """``(id, name, (r, g, b))`` rows from a CSV (``id,name,r,g,b``) or JSON palette file.

    JSON: a list of ``{"id", "name", "color": [r, g, b]}`` (or ``r``/``g``/``b`` keys), or
    ``{"classes": [...], "palette": [[r, g, b], ...]}``. Id 255 marks the ignore color.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: palette file not found")
    rows: list[tuple[int, str, tuple[int, int, int]]] = []
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                names, colors = data["classes"], data["palette"]
                if len(names) != len(colors):
                    raise ValueError("'classes' and 'palette' have different lengths")
                rows = [(i, str(n), tuple(int(v) for v in c)) for i, (n, c) in enumerate(zip(names, colors))]
            else:
                for e in data:
                    color = e["color"] if "color" in e else (e["r"], e["g"], e["b"])
                    rows.append((int(e["id"]), str(e["name"]), tuple(int(v) for v in color)))
        else:
            with open(path, newline="", encoding="utf-8") as fh:
                for r in csv.DictReader(fh):
                    rows.append((int(r["id"]), r["name"], (int(r["r"]), int(r["g"]), int(r["b"]))))
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{path}: not a palette file ({exc}); expected CSV with header id,name,r,g,b or JSON "
            '[{"id": 0, "name": "road", "color": [128, 64, 128]}, ...]'
        ) from exc
    ids = sorted(i for i, _, _ in rows if i != IGNORE)
    if ids != list(range(len(ids))):
        raise DataError(f"{path}: class ids must be 0..K-1 (255 = ignore), got {ids}")
    for _, _, c in rows:
        if len(c) != 3 or not all(0 <= v <= 255 for v in c):
            raise DataError(f"{path}: color {c} is not an RGB triple of 0-255 values")
    colors = [c for _, _, c in rows]
    if len(set(colors)) != len(colors):
        raise DataError(f"{path}: two entries share a color; colors must be unique to decode masks")
    return rows


def _class_names(n: int) -> list[str]:
    return [f"class_{i}" for i in range(n)]


def _default_palette(n: int) -> np.ndarray:
    """Distinct colors (the Pascal VOC scheme) starting at VOC color 1, so that no class is black."""
    return default_palette(n + 1)[1:]


@register_dataset
class FolderDataset(SegDataset):
    name = "folder"
    description = "Your own images/ + masks/ (or <split>/images, <split>/masks), index or palette color masks"
    options = ("palette", "num_classes")

    def __init__(self, root, split="train", transform=None, palette=None, num_classes: int | None = None) -> None:
        root = Path(root)
        base = root / split if (root / split / "images").is_dir() else root
        img_dir, mask_dir = base / "images", base / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise DataError(
                f"{root}: expected folders images/ and masks/ either in the root or in {root / split}/ "
                f"(missing {img_dir if not img_dir.is_dir() else mask_dir})"
            )
        masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTENSIONS}
        samples = []
        for image in sorted(p for p in img_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            mask = masks.get(image.stem)
            if mask is None:
                raise DataError(f"{mask_dir / (image.stem + '.png')}: mask for image {image} not found")
            samples.append(Sample(image, mask, image.stem))
        self._decoder = None
        if palette is not None:
            rows = read_palette_file(palette)
            entries = sorted((r for r in rows if r[0] != IGNORE), key=lambda r: r[0])
            names = [n for _, n, _ in entries]
            colors = np.array([c for _, _, c in entries], dtype=np.uint8)
            self._decoder = ColorDecoder({c: i for i, _, c in rows})
            if num_classes is not None and int(num_classes) != len(names):
                raise UsageError(f"{palette}: palette has {len(names)} classes but num_classes={num_classes}")
        else:
            if num_classes is None:
                num_classes = self._infer_num_classes(samples)
            num_classes = int(num_classes)
            if not 1 <= num_classes <= 254:
                raise UsageError(f"folder: num_classes must be 1-254, not {num_classes}")
            names, colors = _class_names(num_classes), _default_palette(num_classes)
        super().__init__(root, split, transform, names, colors)
        self.samples = samples
        self._lut = make_lut({i: i for i in range(len(names))} | {IGNORE: IGNORE})

    @staticmethod
    def _infer_num_classes(samples: list[Sample]) -> int:
        """Largest id over all masks + 1 (reads every mask once; give num_classes to skip this)."""
        top = 0
        for s in samples:
            raw = read_raw_mask(s.mask)
            vals = raw[raw != IGNORE]
            if vals.size:
                top = max(top, int(vals.max()) + 1)
        return max(top, 1)

    def load_mask(self, i: int) -> np.ndarray:
        sample = self.samples[i]
        if sample.mask is None:
            raise DataError(f"folder: sample {sample.name} has no mask file")
        raw = read_raw_mask(sample.mask, color=True) if self._is_color(sample.mask) else read_raw_mask(sample.mask)
        return self.decode_mask(raw, sample.mask)

    def _is_color(self, path: Path) -> bool:
        if self._decoder is None:
            return False
        from PIL import Image

        try:
            with Image.open(path) as im:
                return im.mode in ("RGB", "RGBA")
        except OSError:
            return False

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:
            return self._decoder(raw, path)
        return apply_lut(raw, self._lut, path, f"class ids 0-{self.num_classes - 1} or 255")

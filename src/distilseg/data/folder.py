"""Any folder of ``images/`` + ``masks/`` (optionally under ``<split>/``), paired by file stem.

Index masks hold class ids (255 = ignore); with a palette file (CSV ``id,name,r,g,b`` or JSON) color
masks are decoded by exact color and class names come from the palette.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from ..viz.palette import default_palette
from .base import IMAGE_EXTENSIONS, Sample, SegDataset, read_raw_mask

_MASK_TOP: dict[tuple[str, int, int], int | str] = {}  # (path, mtime_ns, size) -> top value, or a problem
_NOTED_ORPHANS: set[Path] = set()


def _mask_top(path: Path) -> int | str:
    """Largest value of an index mask other than 255 (-1: none), or why it cannot be read; cached per file
    version, so the class count inference and the value check read each mask once."""
    st = path.stat()
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key not in _MASK_TOP:
        try:
            raw = read_raw_mask(path)
        except DataError as exc:
            msg = str(exc)
            _MASK_TOP[key] = msg[len(f"{path}: "):] if msg.startswith(f"{path}: ") else msg
        else:
            vals = raw[raw != IGNORE]
            _MASK_TOP[key] = int(vals.max()) if vals.size else -1
    return _MASK_TOP[key]


def _pair(base: Path) -> tuple[list[Sample], list[Path]]:
    """Samples of one ``images/`` + ``masks/`` folder pair, paired by stem, and the masks without an image."""
    img_dir, mask_dir = base / "images", base / "masks"
    masks = {p.stem: p for p in _files(mask_dir)}
    samples = []
    images = _files(img_dir)
    stems: dict[str, Path] = {}
    for image in images:
        if image.stem in stems:  # masks pair by stem: one mask cannot label two different images
            raise DataError(f"{image}: images {stems[image.stem].name} and {image.name} share the name "
                            f"{image.stem!r}, and masks pair with images by name; rename one of them")
        stems[image.stem] = image
    for image in images:
        mask = masks.pop(image.stem, None)
        if mask is None:
            raise DataError(f"{mask_dir / (image.stem + '.png')}: mask for image {image} not found")
        samples.append(Sample(image, mask, image.stem))
    return samples, sorted(masks.values())


def _files(folder: Path) -> list[Path]:
    """The image files of ``folder`` by name; an image name that cannot be opened (a broken or looping link)
    is a ``DataError`` naming it rather than an ``OSError`` later."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            p.stat()
        except OSError as exc:
            raise DataError(f"{p}: cannot be read ({exc.strerror or exc}; a broken or looping link?)") from exc
        found.append(p)
    return found


def _split_folders(root: Path) -> list[Path]:
    """Every folder holding images/ + masks/ that some split of ``root`` reads."""
    def ok(d: Path) -> bool:
        return (d / "images").is_dir() and (d / "masks").is_dir()

    return ([root] if ok(root) else []) + [d for d in sorted(root.iterdir()) if d.is_dir() and ok(d)]
from .base import register_dataset
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
            # utf-8-sig: Excel writes a byte-order mark before the header
            with open(path, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                fields = [f.strip().lower() for f in (reader.fieldnames or [])]
                missing = [k for k in ("id", "name", "r", "g", "b") if k not in fields]
                if missing:
                    raise DataError(
                        f"{path}: line 1: not a palette file: the header {','.join(fields) or '(empty)'} lacks "
                        f"{','.join(missing)}; expected CSV with header id,name,r,g,b"
                    )
                reader.fieldnames = fields
                for r in reader:
                    try:
                        rows.append((int(r["id"]), r["name"].strip(), (int(r["r"]), int(r["g"]), int(r["b"]))))
                    except (AttributeError, ValueError, TypeError) as exc:
                        raise DataError(
                            f"{path}: line {reader.line_num}: not a palette entry ({exc}); expected "
                            "id,name,r,g,b with an integer id and 0-255 color values"
                        ) from exc
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
    option_types = {"palette": "path", "num_classes": "positive"}

    def __init__(self, root, split="train", transform=None, palette=None, num_classes: int | None = None) -> None:
        root = Path(root)
        base = root / split if (root / split / "images").is_dir() else root
        img_dir, mask_dir = base / "images", base / "masks"
        if not img_dir.is_dir() or not mask_dir.is_dir():
            raise DataError(
                f"{root}: expected folders images/ and masks/ either in the root or in {root / split}/ "
                f"(missing {img_dir if not img_dir.is_dir() else mask_dir})"
            )
        samples, self.orphan_masks = _pair(base)
        if self.orphan_masks and mask_dir not in _NOTED_ORPHANS:  # once per folder, not once per split
            _NOTED_ORPHANS.add(mask_dir)
            shown = ", ".join(p.name for p in self.orphan_masks[:5])
            more = f" (+{len(self.orphan_masks) - 5} more)" if len(self.orphan_masks) > 5 else ""
            print(f"distilseg: note: {mask_dir}: {len(self.orphan_masks)} mask(s) without an image, ignored: "
                  f"{shown}{more}", file=sys.stderr)
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
                # once over every split: a class present only in val must still get a model output
                num_classes = self._infer_num_classes([s for d in _split_folders(root) for s in _pair(d)[0]])
            num_classes = int(num_classes)
            if not 1 <= num_classes <= 254:
                raise UsageError(f"folder: num_classes must be 1-254, not {num_classes}")
            names, colors = _class_names(num_classes), _default_palette(num_classes)
        super().__init__(root, split, transform, names, colors)
        self.samples = samples
        self._lut = make_lut({i: i for i in range(len(names))} | {IGNORE: IGNORE})

    @staticmethod
    def _infer_num_classes(samples: list[Sample]) -> int:
        """Largest id over all masks + 1 (reads every mask once, in threads; unreadable masks are left to
        the data check, which names them)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=4) as pool:
            tops = [t for t in pool.map(lambda s: _mask_top(s.mask), samples) if isinstance(t, int)]
        return max([t + 1 for t in tops] + [1])

    def known_problem(self, i: int) -> tuple[str, str] | None:
        """An index mask holding a value >= num_classes (or unreadable), found without the full check."""
        mask = self.samples[i].mask
        if self._decoder is not None or mask is None or not mask.is_file():
            return None
        top = _mask_top(mask)
        if isinstance(top, str):
            return str(mask), top
        if top >= self.num_classes:
            return str(mask), (
                f"mask holds value {top} but the dataset has {self.num_classes} classes (0-{self.num_classes - 1}, "
                "255 = ignore); fix the mask or give a larger num_classes"
            )
        return None

    def mask_mode_problem(self, mode: str) -> str | None:
        if self._decoder is None and mode in ("RGB", "RGBA"):
            return f"mask is a color image ({mode}) but no palette file was given (for color masks give one)"
        return None

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
            with Image.open(path) as im:  # palette PNGs (P) too: decoded by their colors, not their indices
                return im.mode in ("RGB", "RGBA", "P", "PA")
        except OSError:
            return False

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:
        if raw.ndim == 3:
            return self._decoder(raw, path)
        return apply_lut(raw, self._lut, path, f"class ids 0-{self.num_classes - 1} or 255")

"""Label tables shipped with the package (``data/tables/*.csv``) and the lookup tables built from them.

Why: every adapter decodes masks with one vectorized lookup (``np.take`` on a 256-entry LUT, or a
24-bit color LUT), never with per-pixel Python; the facts (ids, names, colors) live in CSV files copied
from the datasets' official definitions so that they can be checked against the originals in tests.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import DataError

TABLES_DIR = Path(__file__).resolve().parent / "tables"
IGNORE = 255
#: marker for "value is not a class nor ignore" inside 256-entry LUTs (never a valid train id here)
INVALID = 254


def read_table(name: str, folder: str | Path | None = None) -> list[dict[str, str]]:
    """Rows of ``<folder>/<name>.csv`` (default: the packaged copy) as dicts of strings."""
    path = Path(folder or TABLES_DIR) / f"{name}.csv"
    if not path.is_file():
        raise DataError(f"{path}: label table not found")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def rgb(row: dict[str, str]) -> tuple[int, int, int]:
    return int(row["r"]), int(row["g"]), int(row["b"])


def make_lut(mapping: dict[int, int]) -> np.ndarray:
    """256-entry uint8 LUT: listed source values map to their target, every other value to INVALID."""
    lut = np.full(256, INVALID, dtype=np.uint8)
    for src, dst in mapping.items():
        if 0 <= src <= 255:
            lut[src] = dst
    return lut


def apply_lut(raw: np.ndarray, lut: np.ndarray, path: str | Path, what: str) -> np.ndarray:
    """Map ``raw`` (uint8 HxW) through ``lut``; values the LUT marks INVALID raise a DataError."""
    out = np.take(lut, raw)
    if (out == INVALID).any():
        bad = np.unique(raw[out == INVALID])
        shown = ", ".join(str(int(v)) for v in bad[:12])
        more = "" if bad.size <= 12 else f" (+{bad.size - 12} more)"
        raise DataError(
            f"{path}: mask holds values that are not {what}: {shown}{more}; "
            "check that the file is the right kind of label image for this dataset"
        )
    return out


# ---------------------------------------------------------------------------------------------- camvid
@lru_cache(maxsize=None)
def camvid_table() -> tuple[list[str], np.ndarray, np.ndarray]:
    """(class names 0-10, palette (11,3), LUT: 0-10 -> same, 11 (void) -> 255)."""
    rows = read_table("camvid")
    classes = [r for r in rows if int(r["train_id"]) != IGNORE]
    classes.sort(key=lambda r: int(r["train_id"]))
    names = [r["name"] for r in classes]
    palette = np.array([rgb(r) for r in classes], dtype=np.uint8)
    mapping = {int(r["train_id"]): int(r["train_id"]) for r in classes}
    mapping[len(classes)] = IGNORE  # value 11 = Unlabelled / void in the SegNet label files
    return names, palette, make_lut(mapping)


# ------------------------------------------------------------------------------------------ cityscapes
@lru_cache(maxsize=None)
def cityscapes_table() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(19 train-id names, palette, LUT labelIds -> train ids, LUT labelTrainIds -> train ids)."""
    rows = read_table("cityscapes")
    by_train: dict[int, dict[str, str]] = {}
    mapping: dict[int, int] = {}
    for r in rows:
        label_id, train_id = int(r["id"]), int(r["train_id"])
        train_id = IGNORE if train_id < 0 else train_id
        if label_id >= 0:
            mapping[label_id] = train_id
        if train_id != IGNORE and train_id not in by_train:
            by_train[train_id] = r
    mapping[IGNORE] = IGNORE  # license plate (-1) is written as 255 in uint8 label files
    ids = sorted(by_train)
    names = [by_train[t]["name"] for t in ids]
    palette = np.array([rgb(by_train[t]) for t in ids], dtype=np.uint8)
    train_lut = make_lut({t: t for t in ids} | {IGNORE: IGNORE})
    return names, palette, make_lut(mapping), train_lut


#: Cityscapes label ids that stay ignored (255) in the 20-class ``misc20`` variant: not scene content but
#: "no annotation" or capture artifacts (unlabeled, ego vehicle, rectification border, out of roi).
#: License plate (id -1, written as 255 in uint8 files) stays 255 too.
CITYSCAPES_MISC20_IGNORED_IDS = (0, 1, 2, 3)
CITYSCAPES_MISC_TRAIN_ID = 19
CITYSCAPES_MISC_COLOR = (255, 255, 255)  # used by no Cityscapes class


@lru_cache(maxsize=None)
def cityscapes_misc20_table() -> tuple[list[str], np.ndarray, np.ndarray]:
    """The 20-class variant: (names = the 19 train classes + ``misc``, palette, LUT labelIds -> 0-19 / 255).

    Every labelled Cityscapes class that is ``ignoreInEval`` (static, dynamic, ground, parking, rail track,
    guard rail, bridge, tunnel, polegroup, caravan, trailer) becomes ``misc`` = 19; the ids in
    ``CITYSCAPES_MISC20_IGNORED_IDS`` and license plate stay ignored (255).
    """
    names, palette, _, _ = cityscapes_table()
    mapping: dict[int, int] = {}
    for r in read_table("cityscapes"):
        label_id, train_id = int(r["id"]), int(r["train_id"])
        if label_id < 0:
            continue
        if 0 <= train_id < IGNORE:
            mapping[label_id] = train_id
        elif label_id in CITYSCAPES_MISC20_IGNORED_IDS:
            mapping[label_id] = IGNORE
        else:
            mapping[label_id] = CITYSCAPES_MISC_TRAIN_ID
    mapping[IGNORE] = IGNORE  # license plate (-1) as written in uint8 label files
    names20 = list(names) + ["misc"]
    palette20 = np.concatenate([palette, np.array([CITYSCAPES_MISC_COLOR], dtype=np.uint8)])
    return names20, palette20, make_lut(mapping)


# ------------------------------------------------------------------------------------------------- idd
@lru_cache(maxsize=None)
def idd_levels() -> dict[int, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per level 1/2/3: (class names, palette, LUT level3 id -> level id).

    Names: level 3 and 2 join the distinct label names of each group ("person/animal"), level 1 joins the
    distinct categories; the color is the first label's of the group. The LUT maps level3 ids (0-25, 255)
    to the level; idd.csv defines level3 -> level1/level2 as a function (checked in the tests).
    """
    rows = [r for r in read_table("idd") if int(r["level3_id"]) != IGNORE]
    out: dict[int, tuple[list[str], np.ndarray, np.ndarray]] = {}
    for level in (1, 2, 3):
        key = f"level{level}_id"
        groups: dict[int, list[dict[str, str]]] = {}
        for r in rows:
            groups.setdefault(int(r[key]), []).append(r)
        ids = sorted(groups)
        if ids != list(range(len(ids))):
            raise DataError(f"idd.csv: level{level} ids are not contiguous from 0: {ids}")
        field = "category" if level == 1 else "name"
        names = ["/".join(dict.fromkeys(r[field] for r in groups[i])) for i in ids]
        palette = np.array([rgb(groups[i][0]) for i in ids], dtype=np.uint8)
        mapping = {int(r["level3_id"]): int(r[key]) for r in rows}
        mapping[IGNORE] = IGNORE
        out[level] = (names, palette, make_lut(mapping))
    return out


@lru_cache(maxsize=None)
def idd_rgb_table() -> tuple[list[str], np.ndarray, dict[tuple[int, int, int], int]]:
    """(26 level3 names, palette, color -> level3 id incl. black -> 255) from idd_level3_rgb.csv."""
    rows = read_table("idd_level3_rgb")
    classes = sorted((r for r in rows if int(r["level3_id"]) != IGNORE), key=lambda r: int(r["level3_id"]))
    names = [r["name"] for r in classes]
    palette = np.array([rgb(r) for r in classes], dtype=np.uint8)
    colors = {rgb(r): int(r["level3_id"]) for r in rows}
    return names, palette, colors


# ------------------------------------------------------------------------------------------ oxford pet
@lru_cache(maxsize=None)
def oxford_pet_table() -> tuple[list[str], dict[int, int]]:
    """(names by train id, trimap value -> train id)."""
    rows = sorted(read_table("oxford_pet"), key=lambda r: int(r["train_id"]))
    return [r["name"] for r in rows], {int(r["trimap_value"]): int(r["train_id"]) for r in rows}


# ------------------------------------------------------------------------------------- color decoding
def pack_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW uint32 with r<<16 | g<<8 | b."""
    img = np.ascontiguousarray(image[..., :3])
    packed = img[..., 0].astype(np.uint32) << 16
    packed |= img[..., 1].astype(np.uint32) << 8
    packed |= img[..., 2]
    return packed


class ColorDecoder:
    """Exact-color decoder through a 2**24-entry uint8 lookup table indexed by the packed RGB value.

    Why a full LUT: a 1920x1080 mask is one gather (~10 ms) instead of a binary search per pixel
    (``np.searchsorted`` over the sorted palette is 5-10x slower). The table (16 MiB) is built once per
    palette and shared by all decoders of that palette. Colors not in the palette hold INVALID, and an
    unknown color raises a DataError naming the file, the color and one pixel position.
    """

    _LUTS: dict[tuple, np.ndarray] = {}

    def __init__(self, colors: dict[tuple[int, int, int], int]):
        if any(v == INVALID for v in colors.values()):
            raise ValueError(f"class id {INVALID} is reserved for unknown colors")
        self.colors = dict(colors)
        key = tuple(sorted(self.colors.items()))
        if key not in self._LUTS:
            lut = np.full(1 << 24, INVALID, dtype=np.uint8)
            for (r, g, b), v in self.colors.items():
                lut[(r << 16) | (g << 8) | b] = v
            self._LUTS[key] = lut
        self.lut = self._LUTS[key]

    def __call__(self, image: np.ndarray, path: str | Path = "<array>") -> np.ndarray:
        if image.ndim != 3 or image.shape[2] < 3:
            raise DataError(f"{path}: expected an RGB color-coded mask, got an array of shape {image.shape}")
        out = np.take(self.lut, pack_rgb(image))
        bad = out == INVALID
        if bad.any():
            y, x = np.argwhere(bad)[0]
            r, g, b = (int(v) for v in image[y, x, :3])
            n = int(bad.sum())
            raise DataError(
                f"{path}: color ({r}, {g}, {b}) at pixel (x={x}, y={y}) is not in the palette "
                f"({n} pixel(s) with unknown colors); masks must use the dataset's exact colors "
                "(no anti-aliasing or JPEG compression)"
            )
        return out

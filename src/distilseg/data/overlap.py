"""``distilseg data overlap``: what two splits share, by group (street, city) and by near-duplicate image.

Why: a validation split that shares streets with the training split, or holds copies of training images, gives
numbers that do not hold on new footage. CamVid's val frames, for one, lie between training frames of the same
drive. Groups come from ``data.groups`` (each adapter's default or ``--group-by REGEX``). Near duplicates are found
with a 64-bit perceptual hash (imagehash's pHash: a DCT of the 32x32 grayscale image), so a resized or re-encoded
copy is found too; two images are near duplicates when their hashes differ in at most ``--max-distance`` bits.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["register_overlap", "perceptual_hashes", "near_duplicates", "split_overlap", "run_overlap"]

DEFAULT_MAX_DISTANCE = 6  # of 64 bits: a re-encoded or resized copy differs in 0-4, unrelated frames in ~32


def register_overlap(sub: argparse._SubParsersAction) -> None:
    """Add ``data overlap`` to the ``data`` subcommands."""
    p = sub.add_parser(
        "overlap",
        help="groups (streets, cities) and near-duplicate images shared by two splits",
        description="Find the groups two splits share (a sequence, a city, or any regex on the file path) and "
        "near-duplicate images across them (perceptual hash, so resized or re-encoded copies are found). Prints one "
        "line and writes OUT/overlap.json.",
    )
    p.add_argument("--dataset", required=True, help="dataset name (see `distilseg datasets`)")
    p.add_argument("--root", default=None, help="dataset root folder")
    p.add_argument("--dataset-args", nargs="*", default=[], metavar="K=V", help="dataset options")
    p.add_argument("--splits", nargs=2, required=True, metavar=("A", "B"), help="the two splits, e.g. train val")
    p.add_argument("--group-by", default=None, metavar="REGEX",
                   help="regex searched in each image path relative to the root; its first capture group names the "
                        "group (default: the dataset's own, e.g. the CamVid sequence prefix, the Cityscapes city)")
    p.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE, metavar="BITS",
                   help=f"near duplicates differ in at most BITS of the 64-bit hash (default {DEFAULT_MAX_DISTANCE})")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder for overlap.json")
    p.set_defaults(func=run_overlap)


def _hash_one(path: Path) -> int:
    import imagehash
    from PIL import Image

    from .base import read_rgb

    bits = imagehash.phash(Image.fromarray(read_rgb(path))).hash.flatten()
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def perceptual_hashes(ds: Any, workers: int = 4) -> np.ndarray:
    """One 64-bit pHash per sample of ``ds`` (uint64), in sample order; samples without a file are refused."""
    paths = []
    for s in ds.samples:
        if s.image is None:
            raise UsageError(f"dataset {ds.name}: samples have no image files to compare")
        paths.append(Path(s.image))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return np.array(list(pool.map(_hash_one, paths)), dtype=np.uint64)


def near_duplicates(ha: np.ndarray, hb: np.ndarray, max_distance: int, chunk: int = 256) -> list[tuple[int, int, int]]:
    """``(i, j, hamming distance)`` for every pair with distance <= ``max_distance``, sorted by distance."""
    found: list[tuple[int, int, int]] = []
    hb8 = hb.astype(np.uint64)
    for start in range(0, len(ha), chunk):
        x = ha[start:start + chunk, None].astype(np.uint64) ^ hb8[None, :]
        dist = np.unpackbits(x.view(np.uint8).reshape(x.shape + (8,)), axis=-1).sum(axis=-1)
        for i, j in zip(*np.nonzero(dist <= max_distance)):
            found.append((start + int(i), int(j), int(dist[i, j])))
    return sorted(found, key=lambda t: (t[2], t[0], t[1]))


def split_overlap(a: Any, b: Any, group_by: str | None = None, max_distance: int = DEFAULT_MAX_DISTANCE,
                  workers: int = 4) -> dict[str, Any]:
    """The ``overlap.json`` document for datasets ``a`` and ``b`` (see the module docstring)."""
    from .groups import group_pattern, shared_groups

    pattern = group_pattern(a, group_by)
    shared = shared_groups(a, b, pattern) if pattern is not None else {}
    ha, hb = perceptual_hashes(a, workers), perceptual_hashes(b, workers)
    pairs = near_duplicates(ha, hb, max_distance)
    return {
        "dataset": a.name, "splits": [a.split, b.split], "num_images": [len(a), len(b)],
        "group_by": pattern.pattern if pattern is not None else None,
        "shared_groups": shared,
        "hash": "pHash, 64 bits (imagehash)", "max_distance": int(max_distance),
        "near_duplicates": [[str(a.samples[i].image), str(b.samples[j].image), d] for i, j, d in pairs],
    }


def summary_line(doc: dict[str, Any]) -> str:
    from .groups import format_shared

    a, b = doc["splits"]
    shared = doc["shared_groups"]
    if doc["group_by"] is None:
        groups = "no grouping (this dataset has no default; give --group-by REGEX)"
    elif shared:
        groups = f"{len(shared)} shared group{'s' if len(shared) != 1 else ''}: {format_shared(shared, a, b)}"
    else:
        groups = "no shared group"
    n = len(doc["near_duplicates"])
    return (f"{doc['dataset']} {a}/{b}: {groups}; {n} near-duplicate image pair{'s' if n != 1 else ''} "
            f"(pHash distance <= {doc['max_distance']})")


def run_overlap(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json, ensure_output_dir
    from .registry import create_dataset

    if not 0 <= args.max_distance <= 64:
        raise UsageError(f"--max-distance must be 0..64 bits, got {args.max_distance}")
    if args.splits[0] == args.splits[1]:
        raise UsageError(f"--splits {args.splits[0]} {args.splits[1]}: give two different splits")
    from ..parsing import parse_key_values

    opts = parse_key_values(args.dataset_args, "--dataset-args")
    out = ensure_output_dir(args.out)
    target = out / "overlap.json"
    _refuse_foreign(target)
    a, b = (create_dataset(args.dataset, root=args.root, split=s, **opts) for s in args.splits)
    doc = split_overlap(a, b, args.group_by, args.max_distance)
    atomic_write_json(target, doc)
    print(f"{summary_line(doc)}; wrote {target}")
    return 0


def _refuse_foreign(path: Path) -> None:
    """overlap.json may replace an earlier overlap.json, never a file of the user's with that name."""
    import json

    if not path.exists():
        return
    try:
        ours = isinstance(doc := json.loads(path.read_text()), dict) and "shared_groups" in doc
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise UsageError(f"{path}: exists and is not an overlap report of distilseg; choose another --out")

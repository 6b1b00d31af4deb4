"""``distilseg datasets`` and ``distilseg data inspect``."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("datasets", help="list the dataset adapters", description="List the dataset adapters.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_datasets)

    data = subparsers.add_parser("data", help="dataset tools (inspect, overlap)", description="Dataset tools.")
    data.set_defaults(func=lambda args: _help(data))
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    q = sub.add_parser(
        "inspect",
        help="class statistics, suggested class weights, a sample grid and decoded masks",
        description="Write OUT/stats.json (image sizes, per-class pixel counts and frequencies, suggested "
        "class weights) and OUT/samples.png; optionally dump the decoded masks and validate every file.",
    )
    q.add_argument("--dataset", required=True, help="dataset name (see `distilseg datasets`)")
    q.add_argument("--root", default=None, help="dataset root folder (not needed for synthetic)")
    q.add_argument("--split", default=None, help="split (default: the dataset's first, usually train)")
    q.add_argument("--out", required=True, help="output folder")
    q.add_argument("--dump-masks", action="store_true", help="write OUT/masks/<stem>.png (uint8 train ids, 255 ignore)")
    q.add_argument("--validate", action="store_true", help="decode and check every file first")
    q.add_argument("--skip-bad", action="store_true", help="with --validate: leave bad samples out instead of failing")
    q.add_argument("--level", type=int, choices=(1, 2, 3), default=None, help="IDD label level (default 3)")
    q.add_argument("--binary", action="store_true", help="oxford-pet: pet/background only, boundary ignored")
    q.add_argument("--palette", default=None, help="folder: palette file (CSV id,name,r,g,b or JSON) for color masks")
    q.add_argument("--num-classes", type=int, default=None, help="folder: number of classes of index masks")
    q.add_argument("--num-samples", type=int, default=6, help="rows in samples.png (default 6)")
    q.add_argument("--no-legend", action="store_true", help="samples.png without the class legend")
    q.add_argument("--workers", type=int, default=4, help="decoding threads (default 4)")
    q.set_defaults(func=run_inspect)
    from .overlap import register_overlap

    register_overlap(sub)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_datasets(args: argparse.Namespace) -> int:
    from .registry import get_dataset_info, list_datasets

    infos = [get_dataset_info(n) for n in list_datasets()]
    if args.json:
        for info in infos:
            info.pop("palette", None)
        print(json.dumps(infos, indent=2))
        return 0
    print(f"{'NAME':<12} {'CLASSES':>7}  {'ROOT':<8} {'SPLITS':<26} DESCRIPTION")
    for info in infos:
        k = "any" if info["num_classes"] is None else str(info["num_classes"])
        root = "needed" if info["requires_root"] else "-"
        print(f"{info['name']:<12} {k:>7}  {root:<8} {','.join(info['splits']):<26} {info['description']}")
    return 0


def _options(args: argparse.Namespace) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if args.level is not None:
        opts["level"] = args.level
    if args.binary:
        opts["binary"] = True
    if args.palette is not None:
        opts["palette"] = args.palette
    if args.num_classes is not None:
        opts["num_classes"] = args.num_classes
    return opts


def run_inspect(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from ..errors import UsageError
    from ..io import atomic_write, atomic_write_json
    from .registry import _get, create_dataset
    from .stats import compute_class_stats
    from .validate import validate_dataset

    if args.num_samples < 0 or args.workers < 1:
        raise UsageError("--num-samples must be >= 0 and --workers >= 1")
    split = args.split or _get(args.dataset).splits[0]
    ds = create_dataset(args.dataset, root=args.root, split=split, **_options(args))
    out = Path(args.out)
    _check_inspect_out(out, ds, args.dump_masks)
    out.mkdir(parents=True, exist_ok=True)

    validation = None
    if args.validate or args.skip_bad:
        report = validate_dataset(ds, full=True, skip_bad=args.skip_bad, workers=args.workers, progress=True)
        validation = report.to_dict()
        for b in report.bad:
            print(f"skipped {b.file}: {b.problem}")
    elif len(ds) == 0:
        validate_dataset(ds, full=False)  # raises the empty-split error

    on_mask = None
    if args.dump_masks:
        mask_dir = out / "masks"
        mask_dir.mkdir(parents=True, exist_ok=True)

        split_of = getattr(ds, "split_of", None)  # joined splits: one subfolder per split (names may repeat)

        def on_mask(i: int, mask: np.ndarray) -> None:
            img = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L")
            folder = mask_dir / split_of(i) if split_of else mask_dir
            folder.mkdir(exist_ok=True)
            atomic_write(folder / f"{ds.samples[i].name}.png", lambda tmp: img.save(tmp, format="PNG"))

    stats = compute_class_stats(ds, workers=args.workers, progress=True, on_mask=on_mask)
    if validation is not None:
        stats["validation"] = validation
    orphans = getattr(ds, "orphan_masks", None)
    if orphans:  # masks without an image: not part of the split, listed so that none goes unnoticed
        stats["orphan_masks"] = [str(p) for p in orphans]
    atomic_write_json(out / "stats.json", stats)

    wrote = [str(out / "stats.json")]
    if args.num_samples and len(ds):
        wrote.append(str(_samples_png(ds, out / "samples.png", args.num_samples, legend=not args.no_legend)))
    if args.dump_masks:
        wrote.append(f"{len(ds)} masks in {out / 'masks'}")
    sizes = ", ".join(f"{k} ({v})" for k, v in stats["image_sizes"].items())
    print(f"{ds.name}/{ds.split}: {stats['num_images']} images, sizes {sizes}, {ds.num_classes} classes: {', '.join(ds.classes)}")
    if orphans:
        print(f"{len(orphans)} mask(s) without an image ignored (listed in stats.json orphan_masks)")
    print("wrote " + "; ".join(wrote))
    return 0


def _is_inspect_stats(path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and {"num_images", "image_sizes", "pixel_counts"} <= set(data)


def _check_inspect_out(out, ds, dump_masks: bool) -> None:
    """Refuse, before any work, to write over files that are not an earlier ``data inspect`` output:
    ``OUT/stats.json``, ``OUT/samples.png`` and, with ``--dump-masks``, ``OUT/masks/`` (e.g. ``--out`` the
    dataset root, whose masks/ holds the original labels)."""
    from ..errors import UsageError

    stats = out / "stats.json"
    own = stats.is_file() and _is_inspect_stats(stats)
    if stats.exists() and not own:
        raise UsageError(f"--out {out}: {stats} exists and is not an earlier `data inspect` result; "
                         f"choose another --out")
    written = [out / "samples.png"] + ([out / "masks"] if dump_masks else [])
    for path in written:
        if path.exists() and not own:
            raise UsageError(f"--out {out}: {path} exists and {out} holds no earlier `data inspect` result "
                             f"(stats.json); choose another --out")
    if dump_masks and (out / "masks").exists():
        target = (out / "masks").resolve()
        for s in ds.samples:
            for f in (s.image, s.mask):
                if f is not None and target in Path(f).resolve().parents:
                    raise UsageError(f"--out {out}: --dump-masks would write into {out / 'masks'}, which holds "
                                     f"the dataset's own file {f}; choose another --out")


def _samples_png(ds, path, n: int, legend: bool = True):
    """Grid of evenly spaced samples: image | colored mask, with a legend of class colors (black = void)."""
    import numpy as np

    from ..viz import colorize, save_grid

    idx = np.unique(np.linspace(0, len(ds) - 1, num=min(n, len(ds))).round().astype(int))
    rows = [[ds.load_image(int(i)), colorize(ds.load_mask(int(i)), ds.palette)] for i in idx]
    names = [ds.samples[int(i)].name for i in idx]
    return save_grid(rows, path, col_titles=["image", "mask"], row_titles=names,
                     legend=(ds.classes, ds.palette) if legend else None)

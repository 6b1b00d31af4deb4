"""``distilseg eval``: exact scoring of a model on a dataset split at the labels' native resolution.

Why this way: each image goes through the same ``Segmenter.predict`` path as ``distilseg predict``
(resize to the artifact's size, normalize, logits resized back to the image's own size, argmax), and the
prediction is compared with the *unresized* mask. So the reported numbers are those of the deployed
predictor at full resolution, and can be recomputed from ``predict``'s saved label maps.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..checks import size_pair
from ..errors import UsageError
from ..inference.scoring import confusion_of, evaluate_model, write_report

__all__ = ["evaluate_model", "register_eval", "run_eval", "confusion_of", "write_report"]


# ---- CLI ------------------------------------------------------------------------------------------------
def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint", required=True, metavar="DIR|FILE.onnx|zoo:NAME",
        help="model artifact folder (or a training output folder with best/), an ONNX file, or zoo:NAME",
    )


def register_eval(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distilseg eval``."""
    p = subparsers.add_parser(
        "eval",
        help="score a model on a dataset split (metrics.json, per-class table, confusion, samples)",
        description="Evaluate a model at the labels' native resolution and write metrics.json, per_class.md, "
        "confusion.png and samples.png to --out.",
    )
    from ..inference.options import add_inference_arguments

    add_checkpoint_argument(p)
    p.add_argument("--dataset", required=True, help="dataset name (see `distilseg datasets`)")
    p.add_argument("--root", default=None, help="dataset root folder")
    p.add_argument("--dataset-args", nargs="*", default=[], metavar="K=V", help="extra dataset options")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--holdout", default=None, metavar="GROUP[,GROUP]",
                   help="score only the frames of these groups of --split (the groups a run held out of training, "
                        "e.g. --split train+val --holdout 0001TP)")
    p.add_argument("--group-by", default=None, metavar="REGEX",
                   help="what names a sample's group (default: the dataset's own; CamVid: the sequence prefix)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--img-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="network input size (default: the artifact's input_size)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--samples", type=int, default=4, help="rows in samples.png (default: 4)")
    p.add_argument("--no-legend", action="store_true", help="samples.png without the class legend")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_inference_arguments(p)
    p.set_defaults(func=run_eval)


def apply_img_size(segmenter: Any, img_size: list[int] | None) -> None:
    """``--img-size`` overrides the artifact's input size (an ONNX model with a fixed size may refuse)."""
    if img_size is None:
        return
    img_size = list(size_pair(img_size, "--img-size"))
    static = getattr(segmenter, "static_size", None)
    if static is not None and tuple(static) != tuple(img_size):
        raise UsageError(
            f"--img-size {img_size[0]} {img_size[1]}: this ONNX model has a fixed input size "
            f"{static[0]}x{static[1]}; export it with a dynamic size or drop --img-size"
        )
    try:
        segmenter.input_size = tuple(img_size)
    except (AttributeError, ValueError) as exc:
        raise UsageError(f"--img-size {img_size[0]} {img_size[1]}: this model cannot change its input size ({exc})")


def run_eval(args: argparse.Namespace) -> int:
    from ..data import create_dataset
    from ..io import ensure_output_dir
    from ..inference.segmenter import load

    ensure_output_dir(args.out, create=False)  # before scoring the whole split, not after
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    if args.samples < 0:
        raise UsageError(f"--samples must be 0 (no samples.png) or more, got {args.samples}")
    segmenter = load(args.checkpoint, device=args.device)
    apply_img_size(segmenter, args.img_size)
    from ..inference.options import options_from_args

    segmenter.set_inference(**options_from_args(args))
    from ..parsing import parse_key_values

    options = parse_key_values(args.dataset_args, "--dataset-args")
    dataset = create_dataset(args.dataset, root=args.root, split=args.split, **options)
    if args.holdout or args.group_by:
        dataset = _held_out_frames(dataset, args.holdout, args.group_by)
    metrics, cm, samples = evaluate_model(
        segmenter, dataset, batch_size=args.batch_size, progress=not args.no_progress,
        num_samples_png=args.samples, source=args.checkpoint,
    )
    if args.holdout:
        metrics["split"] = f"{args.split} [{args.holdout}]"
    write_report(Path(args.out), metrics, cm, samples, list(dataset.classes), np.asarray(dataset.palette),
                 legend=not args.no_legend)
    from ..metrics import format_table

    print(format_table(metrics))
    wrote = "metrics.json, per_class.md, confusion.png" + (", samples.png" if samples else "")
    print(f"wrote {wrote} to {args.out}")
    return 0


def _held_out_frames(dataset: Any, holdout: str | None, group_by: str | None) -> Any:
    """The frames of the ``--holdout`` groups of ``dataset`` (its split's name says which were kept)."""
    from ..data.groups import parse_group_list, required_group_pattern, select_groups

    if not holdout:
        raise UsageError("--group-by goes with --holdout GROUP (the groups to score)")
    groups = parse_group_list(holdout)
    return select_groups(dataset, groups, required_group_pattern(dataset, group_by), keep=True)

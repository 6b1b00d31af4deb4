"""``distilseg predict``: class maps, color masks and overlays for image files, folders or globs.

Why it expands globs itself: on Windows shells (and when quoted) patterns reach us unexpanded. Every
output is written at the input's original resolution, atomically, so a killed run leaves no torn PNGs;
``<stem>_labels.png`` holds the raw class indices so results can be re-scored exactly.
"""
from __future__ import annotations

import argparse
import fnmatch
import glob
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..errors import DataError, UsageError

__all__ = ["IMAGE_EXTENSIONS", "expand_inputs", "register_predict", "run_predict", "save_png"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _check_image_file(path: Path) -> None:
    """Read only the header: an explicitly named file that is not an image is an error before any work."""
    from PIL import Image, UnidentifiedImageError

    from ..data.base import frames_problem

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - forces the header to be parsed
            problem = frames_problem(im)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not an image ({exc})") from exc
    if problem:
        raise DataError(f"{path}: {problem}")


def expand_inputs(inputs: Iterable[str], bad: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Files, folders (their images, sorted by name) and glob patterns -> a de-duplicated list of images.

    An input that matches nothing, a folder without images, or a named file that is not an image raises
    ``DataError`` naming it; with a ``bad`` list (``--skip-bad``) an unreadable named file is appended to it
    as ``(path, reason)`` instead.
    """
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for f in sorted(path.iterdir()):  # an image name that cannot be opened (a looping link) is said
                if _is_image_name(f) and not f.is_file() and not f.is_dir():
                    if bad is None:
                        raise DataError(f"{f}: cannot be read (a broken or looping link?)")
                    bad.append((f, f"{f}: cannot be read (a broken or looping link?)"))
            files = sorted(f for f in path.iterdir() if f.is_file() and _is_image_name(f))
            if not files:
                raise DataError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            for f in files:
                add(f)
        elif path.is_file():
            try:
                _check_image_file(path)
            except DataError as exc:
                if bad is None:
                    raise
                bad.append((path, str(exc)))
                continue
            add(path)
        elif glob.has_magic(str(raw)):
            matches = sorted(_glob(str(raw)))
            files = [m for m in matches if m.is_file() and _is_image_name(m)]
            if not files:
                raise DataError(f"{raw}: pattern matches no image files")
            for f in files:
                add(f)
        else:
            raise DataError(f"{raw}: no such file, folder or matching pattern")
    return out


def _glob(pattern: str) -> list[Path]:
    """``glob.glob(pattern, recursive=True)`` without following links into folders: ``**`` over a folder with
    links to itself (``ln -s . l1``) would otherwise walk an exponential tree of paths."""
    if "**" not in pattern:
        return [Path(m) for m in glob.glob(pattern)]
    parts = Path(pattern).parts
    first = next(i for i, p in enumerate(parts) if glob.has_magic(p))
    top = Path(*parts[:first]) if first else Path(".")
    want = parts[first:]
    found = []
    for folder, dirs, files in os.walk(top, followlinks=False):
        rel = Path(folder).relative_to(top).parts
        for name in files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            if _matches(want, (*rel, name)):
                found.append(Path(folder) / name)
    return found


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether path ``parts`` match glob ``pattern`` parts (``**`` = zero or more folders; hidden names only
    by a pattern that starts with a dot, as ``glob``)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return _matches(pattern[1:], parts) or (bool(parts) and not parts[0].startswith(".")
                                               and _matches(pattern, parts[1:]))
    return (bool(parts) and (not parts[0].startswith(".") or pattern[0].startswith("."))
            and fnmatch.fnmatchcase(parts[0], pattern[0]) and _matches(pattern[1:], parts[1:]))


def save_png(path: str | Path, array: np.ndarray) -> Path:
    """Write a uint8 HxW (grayscale, exact values) or HxWx3 (RGB) array as PNG, atomically."""
    from PIL import Image

    from ..io import atomic_write

    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"save_png expects uint8, got {array.dtype}")
    image = Image.fromarray(array)  # uint8 HxW -> "L", HxWx3 -> "RGB"
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _output_stems(files: list[Path]) -> list[str]:
    """Output names are the input stems; two inputs with the same stem would overwrite each other."""
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise UsageError(
                f"{f} and {stems[f.stem]} would both write {f.stem}_*.png; predict them into separate --out folders"
            )
        stems[f.stem] = f
    return [f.stem for f in files]


def register_predict(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distilseg predict``."""
    from .evaluate import add_checkpoint_argument
    from ..inference.options import add_inference_arguments

    p = subparsers.add_parser(
        "predict",
        help="segment images or videos: <stem>_color.png, <stem>_overlay.png (and <stem>_labels.png); "
        "<stem>_overlay.mp4 for videos",
        description="Segment image files, folders (all images inside, sorted) or glob patterns; outputs are "
        "written at each input's original resolution. Video files (.mp4, .avi, .mov, .mkv, ...) give "
        "<stem>_overlay.mp4 (and <stem>_labels/<frame>.png with --save-labels); with --as-video the images "
        "(e.g. a folder of frames, in name order) are treated as the frames of one video.",
    )
    add_checkpoint_argument(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--save-labels", action="store_true",
                   help="also write <stem>_labels.png: the uint8 class index of every pixel")
    p.add_argument("--img-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="network input size (default: the artifact's input_size)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the mask (default: 0.5)")
    p.add_argument("--legend", action=argparse.BooleanOptionalAction, default=None,
                   help="class legend (names, colors, black = void): on by default for videos (a strip over the "
                   "bottom rows); for images --legend adds a strip under the color and overlay PNGs and writes "
                   "legend.png")
    p.add_argument("--as-video", "--video", dest="as_video", action="store_true",
                   help="treat the image inputs (in name order) as the frames of one video: writes "
                   "<folder>_overlay.mp4")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of --as-video frames (default 30)")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="videos and --as-video frames: segment every N-th frame (output rate divided by N)")
    p.add_argument("--skip-bad", action="store_true",
                   help="skip unreadable image files (listed at the end) instead of stopping")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_inference_arguments(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from ..io import ensure_output_dir
    from ..progress import progress_bar
    from ..viz import add_legend, colorize, overlay, save_legend
    from .evaluate import apply_img_size
    from ..inference.options import options_from_args
    from ..inference.segmenter import load, read_image
    from .video import segment_video
    from .video_io import frame_folder_source, is_video_file, open_video

    ensure_output_dir(args.out, create=False)  # before any work
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if args.every < 1:
        raise UsageError(f"--every must be a positive integer, got {args.every}")
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise UsageError(f"--fps must be positive, got {args.fps}")
    videos = [Path(v) for v in args.inputs if is_video_file(v) and not Path(v).is_dir()]
    image_inputs = [v for v in args.inputs if not (is_video_file(v) and not Path(v).is_dir())]
    sources = [open_video(v) for v in videos]  # an unreadable video fails here, before any work
    bad: list[tuple[Path, str]] = []
    files = expand_inputs(image_inputs, bad=bad if args.skip_bad else None) if image_inputs else []
    stems = _output_stems(files) if not args.as_video else []
    segmenter = load(args.checkpoint, device=args.device)
    apply_img_size(segmenter, args.img_size)
    segmenter.set_inference(**options_from_args(args))
    palette = np.asarray(segmenter.palette, dtype=np.uint8)
    names = segmenter.class_names
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = not args.no_progress
    common = dict(every=args.every, save_labels=args.save_labels, alpha=args.alpha,
                  legend=args.legend is not False, batch_size=args.batch_size, progress=progress)
    for path, source in zip(videos, sources):
        result = segment_video(segmenter, source, out, path.stem, **common)
        print(f"wrote {result['video']}: {result['frames']} frames, {result['fps']:.1f} frames/s end to end")
    if args.as_video and files:
        first = Path(image_inputs[0])
        stem = first.name if first.is_dir() else first.stem
        result = segment_video(segmenter, frame_folder_source(files, fps=args.fps, name=str(first)), out, stem,
                               **common)
        print(f"wrote {result['video']}: {result['frames']} frames, {result['fps']:.1f} frames/s end to end")
    elif files:
        if args.legend:
            save_legend(names, palette, out / "legend.png", void=False)
        done = 0
        bar = progress_bar(total=len(files), desc="predict", unit="img", disable=not progress)
        try:
            for start in range(0, len(files), args.batch_size):
                chunk, images = [], []
                for i in range(start, min(len(files), start + args.batch_size)):
                    try:
                        images.append(read_image(files[i]))
                        chunk.append(i)
                    except DataError as exc:
                        if not args.skip_bad:
                            raise
                        bad.append((files[i], str(exc)))
                for i, image in zip(chunk, images):
                    segmenter.check_window(image.shape[:2], str(files[i]))
                preds = segmenter.predict(images, batch_size=args.batch_size) if images else []
                for i, image, pred in zip(chunk, images, preds):
                    legend = (names, palette) if args.legend else None
                    _write_outputs(out, stems[i], image, pred, palette, args.save_labels, args.alpha, colorize,
                                   overlay, legend=legend, add_legend=add_legend)
                done += len(chunk)
                bar.update(min(len(files), start + args.batch_size) - start)
        finally:
            bar.close()
        kinds = "color, overlay" + (", labels" if args.save_labels else "")
        print(f"wrote {kinds} for {done} image(s) to {out}")
    if bad:
        print(f"skipped {len(bad)} unreadable file(s):", file=sys.stderr)
        for path, reason in bad:
            print(f"  {reason if str(path) in reason else f'{path}: {reason}'}", file=sys.stderr)
        if not videos and not done and not (args.as_video and files):
            raise DataError(f"{bad[0][0]}: no readable image among the inputs")
    return 0


def _write_outputs(out: Path, stem: str, image: np.ndarray, pred: np.ndarray, palette: np.ndarray,
                   save_labels: bool, alpha: float, colorize: Any, overlay: Any,
                   legend: tuple[list[str], np.ndarray] | None = None, add_legend: Any = None) -> None:
    if pred.shape != image.shape[:2]:  # the Segmenter contract; a mismatch is a bug
        raise RuntimeError(f"{stem}: prediction {pred.shape} does not match image {image.shape[:2]}")
    color, over = colorize(pred, palette), overlay(image, pred, palette, alpha=alpha)
    if legend is not None:  # a strip under the picture; the label map stays exact
        color = add_legend(color, legend[0], legend[1], void=False)
        over = add_legend(over, legend[0], legend[1], void=False)
    save_png(out / f"{stem}_color.png", color)
    save_png(out / f"{stem}_overlay.png", over)
    if save_labels:
        save_png(out / f"{stem}_labels.png", pred.astype(np.uint8))

"""``distilseg predict``: class maps, color masks and overlays for image files, folders or globs.

Why it expands globs itself: on Windows shells (and when quoted) patterns reach us unexpanded. Every
output is written at the input's original resolution, atomically, so a killed run leaves no torn PNGs;
``<stem>_labels.png`` holds the raw class indices so results can be re-scored exactly.
"""
from __future__ import annotations

import argparse
import glob
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

    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - forces the header to be parsed
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not an image ({exc})") from exc


def expand_inputs(inputs: Iterable[str]) -> list[Path]:
    """Files, folders (their images, sorted by name) and glob patterns -> a de-duplicated list of images.

    An input that matches nothing, a folder without images, or a named file that is not an image raises
    ``DataError`` naming it.
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
            files = sorted(f for f in path.iterdir() if f.is_file() and _is_image_name(f))
            if not files:
                raise DataError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            for f in files:
                add(f)
        elif path.is_file():
            _check_image_file(path)
            add(path)
        elif glob.has_magic(str(raw)):
            matches = sorted(Path(m) for m in glob.glob(str(raw), recursive=True))
            files = [m for m in matches if m.is_file() and _is_image_name(m)]
            if not files:
                raise DataError(f"{raw}: pattern matches no image files")
            for f in files:
                add(f)
        else:
            raise DataError(f"{raw}: no such file, folder or matching pattern")
    return out


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

    p = subparsers.add_parser(
        "predict",
        help="segment images: <stem>_color.png, <stem>_overlay.png (and <stem>_labels.png)",
        description="Segment image files, folders (all images inside, sorted) or glob patterns; outputs are "
        "written at each input's original resolution.",
    )
    add_checkpoint_argument(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--save-labels", action="store_true",
                   help="also write <stem>_labels.png: the uint8 class index of every pixel")
    p.add_argument("--tta", choices=["flip"], default=None, help="test-time augmentation")
    p.add_argument("--img-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="network input size (default: the artifact's input_size)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the mask (default: 0.5)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..viz import colorize, overlay
    from .evaluate import apply_img_size
    from .segmenter import load, read_image

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be between 0 and 1, got {args.alpha}")
    files = expand_inputs(args.inputs)
    stems = _output_stems(files)
    segmenter = load(args.checkpoint, device=args.device)
    apply_img_size(segmenter, args.img_size)
    palette = np.asarray(segmenter.palette, dtype=np.uint8)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(files), desc="predict", unit="img", disable=args.no_progress, file=sys.stderr)
    try:
        for start in range(0, len(files), args.batch_size):
            chunk = list(range(start, min(len(files), start + args.batch_size)))
            images = [read_image(files[i]) for i in chunk]
            preds = segmenter.predict(images, batch_size=args.batch_size, tta=args.tta)
            for i, image, pred in zip(chunk, images, preds):
                _write_outputs(out, stems[i], image, pred, palette, args.save_labels, args.alpha, colorize, overlay)
            bar.update(len(chunk))
    finally:
        bar.close()
    kinds = "color, overlay" + (", labels" if args.save_labels else "")
    print(f"wrote {kinds} for {len(files)} image(s) to {out}")
    return 0


def _write_outputs(out: Path, stem: str, image: np.ndarray, pred: np.ndarray, palette: np.ndarray,
                   save_labels: bool, alpha: float, colorize: Any, overlay: Any) -> None:
    if pred.shape != image.shape[:2]:  # the Segmenter contract; a mismatch is a bug
        raise RuntimeError(f"{stem}: prediction {pred.shape} does not match image {image.shape[:2]}")
    save_png(out / f"{stem}_color.png", colorize(pred, palette))
    save_png(out / f"{stem}_overlay.png", overlay(image, pred, palette, alpha=alpha))
    if save_labels:
        save_png(out / f"{stem}_labels.png", pred.astype(np.uint8))

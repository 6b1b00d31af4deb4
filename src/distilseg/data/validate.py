"""Dataset validation: catch broken files before a training run trips over them.

``full=True`` decodes every image and mask (PIL ``verify`` + load, mask values through the adapter's
decoder, sizes). ``full=False`` is the quick check ``train`` runs before its first step: the file list,
sizes from the headers only, a truncation check that reads only the end of every file (a PNG must end
with its IEND chunk, a JPEG with the EOI marker), and a full decode of the first few samples.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..errors import DataError
from .base import SegDataset, header_info, image_mode_problem, size_mismatch

QUICK_FULL_SAMPLES = 3
PNG_END = b"IEND\xaeB`\x82"
JPEG_END = b"\xff\xd9"


@dataclass
class BadSample:
    index: int
    name: str
    file: str
    problem: str


@dataclass
class ValidationReport:
    dataset: str
    split: str
    full: bool
    checked: int
    bad: list[BadSample] = field(default_factory=list)
    removed: int = 0

    @property
    def ok(self) -> bool:
        return not self.bad

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def check_file_end(path: Path) -> str | None:
    """Cheap truncation test from the last bytes of a PNG/JPEG; None when it looks complete."""
    suffix = path.suffix.lower()
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 64))
            tail = fh.read()
    except OSError as exc:
        return f"cannot read file ({exc})"
    if size == 0:
        return "file is empty"
    if suffix == ".png" and not tail.endswith(PNG_END):
        return "PNG file is truncated (no IEND chunk at the end)"
    if suffix in (".jpg", ".jpeg") and JPEG_END not in tail.rstrip(b"\x00\r\n "):
        return "JPEG file is truncated (no end-of-image marker)"
    return None




def _verify(path: Path) -> None:
    with Image.open(path) as im:
        im.verify()


def _check_files(ds: SegDataset, i: int) -> tuple[str, str] | None:
    """Quick per-sample check: existence, tail bytes, header sizes (as displayed: EXIF orientation applied)
    and modes, and what the adapter already knows (e.g. mask values). Returns (file, problem) or None."""
    s = ds.samples[i]
    if s.image is None:  # generated samples (synthetic): nothing on disk to check
        return None
    if not s.image.is_file():
        return str(s.image), "image file not found"
    if s.mask is None or not s.mask.is_file():
        return str(s.mask or s.image), f"mask file for image {s.image} not found"
    for p in (s.image, s.mask):
        problem = check_file_end(p)
        if problem:
            return str(p), problem
    try:
        isize, imode, _ = header_info(s.image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return str(s.image), f"not a readable image ({exc})"
    try:
        msize, mmode, _ = header_info(s.mask)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return str(s.mask), f"not a readable image ({exc})"
    problem = image_mode_problem(imode)
    if problem:
        return str(s.image), problem
    problem = ds.mask_mode_problem(mmode)
    if problem:
        return str(s.mask), problem
    if isize != msize:
        return str(s.mask), size_mismatch(s.image, s.mask, isize, msize)
    return ds.known_problem(i)


def _check_full(ds: SegDataset, i: int) -> tuple[str, str] | None:
    """Full per-sample check: verify + decode both files, mask values and sizes."""
    s = ds.samples[i]
    if s.image is not None:
        found = _check_files(ds, i)
        if found:
            return found
        for p in (s.image, s.mask):
            try:
                _verify(p)
            except Exception as exc:  # PIL raises many kinds for damaged files
                return str(p), f"damaged image file ({exc})"
    try:
        image = ds.load_image(i)
    except DataError as exc:
        return str(s.image), _strip(str(exc), s.image)
    try:
        mask = ds.load_mask(i)
    except DataError as exc:
        return str(s.mask), _strip(str(exc), s.mask)
    if image.shape[:2] != mask.shape:
        isize, msize = (image.shape[1], image.shape[0]), (mask.shape[1], mask.shape[0])
        return str(s.mask or s.name), size_mismatch(s.image, s.mask, isize, msize)
    return None


def _strip(msg: str, path: Path | None) -> str:
    prefix = f"{path}: "
    return msg[len(prefix):] if path is not None and msg.startswith(prefix) else msg


def validate_dataset(
    dataset: SegDataset, full: bool = True, skip_bad: bool = False, workers: int = 4, progress: bool = False
) -> ValidationReport:
    """Check every sample; raise DataError naming the bad files, or with ``skip_bad`` drop them.

    With ``skip_bad`` the bad samples are removed from ``dataset.samples`` and listed in the report.
    """
    where = f"{dataset.root or dataset.name} (dataset {dataset.name!r}, split {dataset.split!r})"
    if len(dataset) == 0:
        raise DataError(f"{where}: the split is empty: no image/mask pairs found; check --root and --split")
    n = len(dataset)

    def check(i: int) -> tuple[str, str] | None:
        if full or i < QUICK_FULL_SAMPLES:
            return _check_full(dataset, i)
        return _check_files(dataset, i)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        it = pool.map(check, range(n))
        if progress:
            from ..progress import progress_bar

            it = progress_bar(it, total=n, desc=f"validate {dataset.name}/{dataset.split}", unit="img")
        results = list(it)
    report = ValidationReport(dataset.name, dataset.split, full, n)
    for i, r in enumerate(results):
        if r is not None:
            report.bad.append(BadSample(i, dataset.samples[i].name, r[0], r[1]))
    if report.bad and not skip_bad:
        shown = "; ".join(f"{b.file}: {b.problem}" for b in report.bad[:5])
        more = f" (and {len(report.bad) - 5} more)" if len(report.bad) > 5 else ""
        raise DataError(
            f"{len(report.bad)} bad sample(s) in {where}: {shown}{more}; "
            "fix or remove these files, or use --skip-bad to leave them out"
        )
    if report.bad:
        drop = {b.index for b in report.bad}
        dataset.samples = [s for i, s in enumerate(dataset.samples) if i not in drop]
        report.removed = len(drop)
        if not dataset.samples:
            raise DataError(f"{where}: every sample is bad; nothing left to use (first: {report.bad[0].file}: {report.bad[0].problem})")
    return report

"""Dataset base class, sample records and batching shared by every adapter."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Sample:
    """One image/mask pair; ``name`` is the original stem (used for dumped masks and predictions)."""

    image: Path | None
    mask: Path | None
    name: str


EXIF_ORIENTATION = 0x0112
GRAY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def exif_orientation(im: Image.Image) -> int:
    """EXIF orientation tag (1-8; 1 = as stored) from what opening the file parsed, without decoding pixels.

    The header check and the decoders use this same value, so they always agree on the displayed size
    (a PNG ``eXIf`` chunk placed after the pixel data, which few viewers honour, is not looked for).
    """
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # a malformed EXIF block: viewers ignore it, so do we
        return 1


_TRANSPOSE = {  # EXIF orientation -> the operation that shows the picture upright (as ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def upright(im: Image.Image) -> Image.Image:
    """``im`` as image viewers show it: its EXIF orientation applied (a malformed EXIF block is ignored)."""
    method = _TRANSPOSE.get(exif_orientation(im))
    return im.transpose(method) if method is not None else im


def header_info(path: Path) -> tuple[tuple[int, int], str, int]:
    """``((W, H) as displayed, mode, EXIF orientation)`` from the header only (no pixel decode).

    Orientations 5-8 turn the picture by 90 degrees, so width and height swap.
    """
    with Image.open(path) as im:
        w, h = im.size
        orientation = exif_orientation(im)
        return ((h, w) if orientation >= 5 else (w, h)), im.mode, orientation


def image_mode_problem(mode: str) -> str | None:
    """Why an image of this PIL mode cannot be read as RGB, or None (see :func:`image_to_rgb`)."""
    if mode == "F" or mode.startswith("F;"):
        return f"floating-point image (mode {mode}) has no defined 0-255 range; save it as 8-bit RGB"
    return None


def frames_problem(im: Image.Image) -> str | None:
    """Why a file of several pictures (multi-page TIFF, animated PNG/WebP) is not read as one image, or None:
    reading only its first page would leave the rest out without a word."""
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        return (f"holds {frames} pictures (pages or animation frames), but one file is one image here; save each "
                f"page as its own file (for the frames of a video, give the video or a folder of frames)")
    return None


def image_to_rgb(im: Image.Image, where: str | Path = "<image>") -> np.ndarray:
    """The one conversion of a PIL image to HxWx3 uint8 RGB used by training, validation and predict.

    The EXIF orientation is applied (as image viewers do; :func:`upright`). 16-bit grayscale (modes I;16*,
    and I as Pillow reads 16-bit PNG/TIFF) is scaled to 8 bits by its bit depth (value >> 8):
    ``convert("RGB")`` would clip every value above 255 to white. Float images, and 32-bit values beyond 16 bits, are refused.
    """
    problem = image_mode_problem(im.mode) or frames_problem(im)
    if problem:
        raise DataError(f"{where}: {problem}")
    im = upright(im)
    if im.mode in GRAY16_MODES:
        arr = np.asarray(im)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            raise DataError(
                f"{where}: 32-bit image (mode {im.mode}) with values {int(arr.min())}..{int(arr.max())} "
                "outside the 16-bit range; save it as 8-bit RGB"
            )
        gray = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.array(im.convert("RGB"), dtype=np.uint8)


def read_rgb(path: str | Path) -> np.ndarray:
    """Image file -> HxWx3 uint8 RGB (see :func:`image_to_rgb`); a missing or unreadable file is a
    DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            return image_to_rgb(im, path)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image ({exc}); the file may be truncated or not an image") from exc


def read_raw_mask(path: Path, color: bool = False) -> np.ndarray:
    """Label file -> HxW uint8 (index masks, palette PNGs give their indices) or HxWx3 when ``color``
    (palette PNGs then give their colors). The EXIF orientation is applied, as for images."""
    if not path.is_file():
        raise DataError(f"{path}: mask file not found")
    try:
        with Image.open(path) as im:
            if not color and im.mode in ("RGB", "RGBA"):
                raise DataError(
                    f"{path}: mask is a color image ({im.mode}) but this dataset expects single-channel "
                    "class indices (for color masks give a palette file)"
                )
            im = upright(im)
            if color:
                return np.asarray(im.convert("RGB"))
            arr = np.asarray(im)
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read mask ({exc}); the file may be truncated or not an image") from exc
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"{path}: mask values outside 0-255 ({int(arr.min())}..{int(arr.max())})")
        arr = arr.astype(np.uint8)
    if arr.ndim == 3:  # e.g. LA
        arr = arr[..., 0]
    return arr


def size_mismatch(image: Path | None, mask: Path | None, isize: tuple[int, int], msize: tuple[int, int]) -> str:
    """Problem text for a mask whose (W, H) differs from its image's; names an EXIF rotation if any."""
    text = f"mask is {msize[0]}x{msize[1]} (WxH) but its image {image} is {isize[0]}x{isize[1]}"
    orientation = 1
    for p in (image, mask):
        if p is not None and orientation == 1:
            try:
                orientation = header_info(p)[2]
            except (OSError, SyntaxError, ValueError):
                pass
    if orientation != 1:
        text += (
            f" after applying the EXIF orientation tag ({orientation}) as viewers do; the mask may have "
            "been drawn on the unrotated pixels: rotate the mask to match, or remove the tag"
        )
    return text


class LoaderDataError(DataError):
    """A DataError raised while loading a sample, which stays one line through a DataLoader worker.

    ``DataLoader`` re-raises a worker's exception as ``type(exc)(text)`` where the text is a whole
    traceback ("Caught X in DataLoader worker process 0. Original Traceback ... X: message"); this class
    keeps only the original message, so the CLI still prints one line naming the file.
    """

    MARK = "LoaderDataError: "

    def __init__(self, message: str = "") -> None:
        if message.startswith("Caught ") and "Original Traceback" in message and self.MARK in message:
            message = message[message.rindex(self.MARK) + len(self.MARK):].strip()
        super().__init__(message)


def default_transform(image: np.ndarray, mask: np.ndarray) -> dict[str, torch.Tensor]:
    """ToTensor + ImageNet normalization; the mask stays at its native size as a long tensor."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return {"image": (img - mean) / std, "mask": torch.from_numpy(np.ascontiguousarray(mask)).long()}


class SegDataset(torch.utils.data.Dataset):
    """Base class: subclasses fill ``samples`` and implement ``decode_mask`` (raw label -> train ids).

    Class attributes describe the dataset for ``distilseg datasets`` before anything is loaded.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    requires_root: ClassVar[bool] = True
    options: ClassVar[tuple[str, ...]] = ()
    # each option's kind, checked by ``create_dataset`` before the adapter sees it (``registry.OPTION_KINDS``)
    option_types: ClassVar[dict[str, str]] = {}
    color_masks: ClassVar[bool] = False
    # default grouping (data.groups): a regex on the image path relative to the root; None = no default
    group_pattern: ClassVar[str | None] = None
    ignore_index: int = IGNORE_INDEX

    def __init__(
        self,
        root: str | Path | None,
        split: str,
        transform: Callable[..., dict[str, Any]] | None,
        classes: list[str],
        palette: np.ndarray,
    ) -> None:
        self.root = Path(root).expanduser() if root is not None else None
        self.split = split
        self.transform = transform
        self.classes = list(classes)
        self.palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        self.samples: list[Sample] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, root={self.root}, n={len(self)})"

    def load_image(self, i: int) -> np.ndarray:
        sample = self.samples[i]
        if sample.image is None:
            raise DataError(f"{self.name}: sample {sample.name} has no image file")
        return read_rgb(sample.image)

    def load_mask(self, i: int) -> np.ndarray:
        sample = self.samples[i]
        if sample.mask is None:
            raise DataError(f"{self.name}: sample {sample.name} has no mask file")
        raw = read_raw_mask(sample.mask, color=self.color_masks)
        return self.decode_mask(raw, sample.mask)

    def decode_mask(self, raw: np.ndarray, path: Path) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def mask_mode_problem(self, mode: str) -> str | None:
        """Why a mask file of this PIL mode cannot be decoded by this dataset (header-only check)."""
        if not self.color_masks and mode in ("RGB", "RGBA"):
            return f"mask is a color image ({mode}) but this dataset expects single-channel class indices"
        return None

    def known_problem(self, i: int) -> tuple[str, str] | None:
        """``(file, problem)`` already known for sample ``i`` without reading it (adapters may override)."""
        return None

    # --skip-bad while loading: None = raise; "replace" = the next good sample instead (training);
    # "ignore" = the next good sample with an all-ignore mask, which scores nothing (validation).
    on_bad: str | None = None

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < 0:
            i += len(self)
        bad = getattr(self, "bad_found", None)
        if self.on_bad is not None and bad and i in bad:
            return self._substitute(i)
        try:
            return self._get(i)
        except DataError as exc:
            if self.on_bad is None:
                # one line naming the file, also when this runs in a DataLoader worker process
                raise LoaderDataError(str(exc)) from exc
            self._record_bad(i, str(exc))
            return self._substitute(i)

    def _record_bad(self, i: int, problem: str) -> None:
        """Remember (in this process' copy of the dataset) and list a sample that failed to load."""
        if getattr(self, "bad_found", None) is None:
            self.bad_found: dict[int, str] = {}
        self.bad_found[i] = problem
        name = self.samples[i].name
        print(f"distilseg: skipped bad sample {name} of split {self.split!r}: {problem} (--skip-bad)",
              file=sys.stderr, flush=True)

    def _substitute(self, i: int) -> dict[str, Any]:
        n = len(self)
        for k in range(1, n):
            j = (i + k) % n
            if j in self.bad_found:
                continue
            try:
                out = self._get(j)
            except DataError as exc:
                self._record_bad(j, str(exc))
                continue
            if self.on_bad == "ignore":
                out["mask"] = torch.full_like(out["mask"], self.ignore_index)
            return out
        raise DataError(f"{self.root or self.name}: every sample of split {self.split!r} is bad (--skip-bad)")

    def _get(self, i: int) -> dict[str, Any]:
        image = self.load_image(i)
        mask = self.load_mask(i)
        if image.shape[:2] != mask.shape[:2]:
            s = self.samples[i]
            raise DataError(
                f"{s.mask or s.name}: "
                + size_mismatch(s.image, s.mask, (image.shape[1], image.shape[0]), (mask.shape[1], mask.shape[0]))
            )
        if self.transform is None:
            out = default_transform(image, mask)
        else:
            out = self.transform(image=image, mask=mask)
        m = out["mask"]
        m = torch.as_tensor(m) if not isinstance(m, torch.Tensor) else m
        sample = {"image": out["image"], "mask": m.long(), "name": self.samples[i].name, "index": i}
        if "image_clean" in out:  # build_train_transform(clean_view=True): the teacher's view
            sample["image_clean"] = out["image_clean"]
        return sample


def collate_segmentation(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack images/masks when all shapes match, else keep lists (native-size eval masks differ)."""
    out: dict[str, Any] = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        if isinstance(values[0], torch.Tensor):
            same = all(v.shape == values[0].shape for v in values)
            out[key] = torch.stack(values) if same else values
        elif key == "index":
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out


# The adapter table: here, below the adapters, so that they register without importing ``registry``
# (which imports them): ``registry`` reads it, the adapters' modules fill it.
_REGISTRY: dict[str, type[SegDataset]] = {}


def register_dataset(cls: type[SegDataset]) -> type[SegDataset]:
    """Class decorator: adds an adapter under ``cls.name``."""
    _REGISTRY[cls.name] = cls
    return cls

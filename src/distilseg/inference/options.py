"""Inference options shared by ``predict``, ``eval``, the video path and ``distilseg.load(...).predict``.

Why one dataclass and one parser: the resize policy, sliding window and test-time augmentation must mean
the same thing in every command and in the Python API, and be validated in one place (one ``parse_tta``
instead of one per segmenter), so that ``eval``'s numbers are those of ``predict`` run with the same flags.

- ``resize``: ``fixed`` (resize to the model's ``input_size``; the historical behaviour), ``keep-ratio``
  (scale so that the short side is ``short_side``, aspect ratio kept, padded to the model's stride, logits
  cropped back) or ``none`` (native resolution, padded to the stride). Scores always come back at each
  image's own size.
- ``slide``: overlapping ``window`` crops every ``stride`` pixels, run ``window_batch`` at a time, logits
  averaged where windows overlap (``inference.tiling``).
- ``tta``: scales and/or horizontal flip; the softmax probabilities of every pass are averaged at the
  image's native size.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from ..errors import UsageError

__all__ = [
    "RESIZE_POLICIES",
    "TTA",
    "InferenceOptions",
    "parse_tta",
    "resolve_options",
    "add_inference_arguments",
    "options_from_args",
]

RESIZE_POLICIES = ("fixed", "keep-ratio", "none")
MAX_TTA_SCALES = 8


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: network passes at each of ``scales`` (relative to the resize policy's
    size), each also mirrored when ``flip``."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    @property
    def passes(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def __bool__(self) -> bool:  # "no TTA" is falsy, like the historical ``tta=None``
        return self.passes > 1

    def __str__(self) -> str:
        parts = []
        if tuple(self.scales) != (1.0,):
            parts.append("scales=" + ",".join(f"{s:g}" for s in self.scales))
        if self.flip:
            parts.append("flip")
        return " ".join(parts) or "none"


def parse_tta(spec: Any) -> TTA:
    """``None`` / ``"none"`` / ``"flip"`` / ``"scales=0.75,1,1.25 flip"`` / a list of such words / a ``TTA``.

    The one validator of test-time augmentation (torch and ONNX segmenters, ``predict`` and ``eval``).
    """
    if isinstance(spec, TTA):
        return spec
    if spec is None:
        return TTA()
    if isinstance(spec, str):
        words = spec.replace(";", " ").split()
    elif isinstance(spec, Iterable):
        words = [w for item in spec for w in str(item).replace(";", " ").split()]
    else:
        raise UsageError(f"unknown test-time augmentation {spec!r}; use e.g. 'flip' or 'scales=0.75,1,1.25 flip'")
    scales: tuple[float, ...] = (1.0,)
    flip = False
    for word in words:
        low = word.lower()
        if low in ("", "none"):
            continue
        if low in ("flip", "hflip"):
            flip = True
        elif low.startswith("scales="):
            try:
                values = tuple(float(v) for v in low[len("scales="):].split(",") if v.strip())
            except ValueError:
                raise UsageError(f"test-time augmentation {word!r}: scales must be numbers, e.g. scales=0.75,1,1.25")
            if not values or not all(math.isfinite(v) for v in values) or min(values) <= 0 or max(values) > 4 \
                    or len(values) > MAX_TTA_SCALES:
                raise UsageError(f"test-time augmentation {word!r}: give 1 to {MAX_TTA_SCALES} scales in (0, 4]")
            scales = values
        else:
            raise UsageError(f"unknown test-time augmentation {word!r}; use 'flip' and/or 'scales=0.75,1,1.25'")
    return TTA(scales=scales, flip=flip)


def _pair(value: Any, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        value = (value, value)
    try:
        pair = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(f"{what} must be two positive integers H W, got {value!r}")
    if len(pair) != 2 or min(pair) < 1:
        raise UsageError(f"{what} must be two positive integers H W, got {list(pair)}")
    return pair  # type: ignore[return-value]


@dataclass(frozen=True)
class InferenceOptions:
    resize: str = "fixed"
    short_side: int | None = None
    slide: bool = False
    window: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    window_batch: int = 4
    tta: TTA = field(default_factory=TTA)


def resolve_options(base: InferenceOptions | None = None, **changes: Any) -> InferenceOptions:
    """``base`` with ``changes`` applied (``None`` values leave a field alone), validated.

    ``window``/``stride`` given without ``slide`` switch the sliding window on.
    """
    base = base or InferenceOptions()
    unknown = set(changes) - {f.name for f in dataclasses.fields(InferenceOptions)}
    if unknown:
        raise UsageError(f"unknown inference option(s): {', '.join(sorted(unknown))}")
    values = dataclasses.asdict(base)
    values["tta"] = base.tta
    for key, value in changes.items():
        if value is not None:
            values[key] = value
    resize = str(values["resize"]).replace("_", "-").lower()
    if resize not in RESIZE_POLICIES:
        raise UsageError(f"unknown resize policy {values['resize']!r}; choose {', '.join(RESIZE_POLICIES)}")
    short_side = values["short_side"]
    if short_side is not None:
        if int(short_side) < 1:
            raise UsageError(f"--short-side must be a positive integer, got {short_side}")
        short_side = int(short_side)
    window = _pair(values["window"], "--window")
    stride = _pair(values["stride"], "--stride")
    slide = bool(values["slide"]) or (changes.get("window") is not None or changes.get("stride") is not None)
    if window is not None and stride is not None and (stride[0] > window[0] or stride[1] > window[1]):
        raise UsageError(
            f"--stride {stride[0]} {stride[1]} is larger than --window {window[0]} {window[1]}: pixels between "
            f"windows would never be predicted; use a stride <= the window"
        )
    if int(values["window_batch"]) < 1:
        raise UsageError(f"--window-batch must be a positive integer, got {values['window_batch']}")
    return InferenceOptions(
        resize=resize, short_side=short_side, slide=slide, window=window, stride=stride,
        window_batch=int(values["window_batch"]), tta=parse_tta(values["tta"]),
    )


# ---- CLI -------------------------------------------------------------------------------------------------
def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resize --short-side --slide --window --stride --window-batch --tta`` (predict and eval)."""
    g = parser.add_argument_group("inference (resize policy, sliding window, test-time augmentation)")
    g.add_argument("--resize", choices=RESIZE_POLICIES, default="fixed",
                   help="fixed: resize to the model's input size (default); keep-ratio: scale the short side to "
                   "--short-side keeping the aspect ratio; none: native resolution. keep-ratio and none pad to "
                   "the model's stride and crop the logits back")
    g.add_argument("--short-side", type=int, default=None, metavar="N",
                   help="with --resize keep-ratio: the short side in pixels (default: the model's shorter input side)")
    g.add_argument("--slide", action="store_true",
                   help="sliding-window inference: overlapping windows, logits averaged where they overlap")
    g.add_argument("--window", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="--slide window size (default: the model's input size)")
    g.add_argument("--stride", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="--slide step between windows (default: 2/3 of the window)")
    g.add_argument("--window-batch", type=int, default=4, metavar="N",
                   help="windows per network call; bounds the memory of --slide (default 4)")
    g.add_argument("--tta", nargs="+", default=None, metavar="AUG",
                   help="test-time augmentation: flip and/or scales=0.75,1,1.25 (softmax averaged at native size)")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of ``Segmenter.set_inference`` from parsed ``add_inference_arguments`` flags."""
    return {
        "resize": getattr(args, "resize", None),
        "short_side": getattr(args, "short_side", None),
        "slide": bool(getattr(args, "slide", False)),
        "window": getattr(args, "window", None),
        "stride": getattr(args, "stride", None),
        "window_batch": getattr(args, "window_batch", None),
        "tta": parse_tta(getattr(args, "tta", None)),
    }


def default_stride(window: Sequence[int]) -> tuple[int, int]:
    """Two thirds of the window (a third of overlap), at least 1."""
    return (max(1, (2 * int(window[0])) // 3), max(1, (2 * int(window[1])) // 3))

"""Image -> network input and network scores -> class scores, in one place.

Why one module: the torch ``Segmenter``, the ``OnnxSegmenter`` and the export check must preprocess
exactly alike (scale to [0, 1], bilinear antialiased resize, normalize with the artifact's mean/std) and
treat the scores alike (flip TTA, bilinear resize back), or their predictions and the agreement numbers
compare different things.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.base import IMAGENET_MEAN, IMAGENET_STD  # the one definition


def normalization(mean: Sequence[float] | None, std: Sequence[float] | None) -> tuple[list[float], list[float]]:
    """Mean/std on the 0-1 scale (ImageNet when missing; values above 1 are taken to be on the 0-255 scale)."""
    m = [float(v) for v in (mean or IMAGENET_MEAN)]
    s = [float(v) for v in (std or IMAGENET_STD)]
    if max(m) > 1.0 or max(s) > 1.0:
        m, s = [v / 255.0 for v in m], [v / 255.0 for v in s]
    return m, s


def normalization_tensors(
    mean: Sequence[float] | None, std: Sequence[float] | None, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``normalization`` as two ``1 x 3 x 1 x 1`` float32 tensors on ``device``."""
    m, s = normalization(mean, std)
    return (torch.tensor(m, dtype=torch.float32, device=device).view(1, 3, 1, 1),
            torch.tensor(s, dtype=torch.float32, device=device).view(1, 3, 1, 1))


def image_to_input(
    array: np.ndarray, size: Sequence[int] | None, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """HxWx3 uint8 -> ``1 x 3 x H x W`` float32 on ``mean``'s device: /255, bilinear antialiased resize to
    ``size`` (when given), then ``(x - mean) / std`` with the tensors of ``normalization_tensors``."""
    if not array.flags.writeable:  # e.g. straight from PIL; torch wants a writable buffer
        array = array.copy()
    x = torch.from_numpy(array).to(mean.device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return (x - mean) / std


def uint8_image_to_input(frame: np.ndarray, size: Sequence[int], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``image_to_input`` with the antialiased bilinear resize done on uint8 (torch's vectorized
    uint8 kernel, ~5x cheaper at 1080p than resizing a float copy); the input differs from the float path by
    at most one grey level (the INT8 model quantizes its input to about that step anyway)."""
    if not frame.flags.writeable:
        frame = frame.copy()
    x = torch.from_numpy(frame).permute(2, 0, 1).unsqueeze(0)  # channels-last view, no copy
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(int(v) for v in size), mode="bilinear", align_corners=False, antialias=True)
    x = x.to(mean.device).float().div_(255.0)
    return ((x - mean) / std).contiguous()


def flip_average(logits: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """Flip TTA: the log of the averaged softmax of the logits and the (re-mirrored) mirror's logits."""
    prob = (logits.float().softmax(1) + flipped.float().softmax(1)) / 2
    return prob.clamp_min(1e-12).log()


def resize_scores(scores: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``N x C x h x w`` scores -> ``N x C x H x W`` (bilinear; unchanged when already at ``size``)."""
    if tuple(scores.shape[-2:]) == tuple(size):
        return scores
    return F.interpolate(scores, size=tuple(size), mode="bilinear", align_corners=False)


def policy_size(
    hw: Sequence[int], resize: str, input_size: Sequence[int] | None, short_side: int | None, scale: float = 1.0
) -> tuple[int, int]:
    """The network-side size of an ``hw`` image under a resize policy (before any stride padding).

    ``fixed``: ``input_size`` (the image's own size when it is ``None``); ``keep-ratio``: the short side
    becomes ``short_side``, the aspect ratio is kept; ``none``: the image's own size. ``scale`` multiplies
    the result (multi-scale test-time augmentation).
    """
    h, w = int(hw[0]), int(hw[1])
    if resize == "keep-ratio":
        if short_side is None:
            raise ValueError("keep-ratio needs short_side")
        f = float(short_side) / min(h, w)
        th, tw = h * f, w * f
    elif resize == "fixed" and input_size is not None:
        th, tw = float(input_size[0]), float(input_size[1])
    else:
        th, tw = float(h), float(w)
    return max(1, int(round(th * scale))), max(1, int(round(tw * scale)))


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``N x C x H x W`` bottom/right with zeros (= the normalized mean, as ``SegmentationModel``
    pads) so that H and W are multiples of ``multiple``; the caller crops the logits back."""
    m = max(int(multiple), 1)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return pad_to_size(x, (h + (-h) % m, w + (-w) % m))


def pad_to_size(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Pad ``N x C x H x W`` bottom/right with zeros to at least ``size`` (never crops)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    ph, pw = max(0, int(size[0]) - h), max(0, int(size[1]) - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x

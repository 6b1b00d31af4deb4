"""Sliding-window inference over any ``logits_fn(batch N x 3 x h x w float) -> N x C x h x w logits``.

Why a callable and not a model: the torch ``Segmenter`` and the ONNX Runtime segmenter (fp32 or INT8)
both expose one network pass with that signature, so tiling is written (and tested) once for all of them.
Windows overlap; every pixel's logits are the mean over the windows that cover it (a count map divides
the sum). At most ``window_batch`` windows are in flight at a time, so the network's memory is bounded by
the window batch whatever the image size; only the image-sized logits accumulator grows with the image.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..errors import UsageError

__all__ = ["window_starts", "sliding_window_logits"]

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets covering ``0..length-1`` with ``window``-long steps of ``stride``; the last window is
    aligned with the end, so every pixel is covered and no window leaves the image."""
    if window > length:
        raise UsageError(f"window {window} is larger than the image side {length}")
    if stride < 1 or stride > window:
        raise UsageError(f"stride {stride} must lie in 1..window ({window})")
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


@torch.inference_mode()
def sliding_window_logits(
    logits_fn: LogitsFn,
    batch: torch.Tensor,
    window: Sequence[int],
    stride: Sequence[int],
    window_batch: int = 4,
) -> torch.Tensor:
    """``N x 3 x H x W`` -> ``N x C x H x W`` float32 logits averaged over overlapping windows.

    ``window`` must fit inside ``H x W`` (pad the input first otherwise).
    """
    if batch.dim() != 4:
        raise ValueError(f"expected an N x 3 x H x W batch, got shape {tuple(batch.shape)}")
    n, _, h, w = batch.shape
    wh, ww = int(window[0]), int(window[1])
    sh, sw = int(stride[0]), int(stride[1])
    if wh > h or ww > w:
        raise UsageError(f"window {wh}x{ww} is larger than the image {h}x{w}")
    tiles = [(i, y, x) for i in range(n) for y in window_starts(h, wh, sh) for x in window_starts(w, ww, sw)]
    acc: torch.Tensor | None = None
    count = torch.zeros((1, 1, h, w), dtype=torch.float32, device=batch.device)
    for y in window_starts(h, wh, sh):
        for x in window_starts(w, ww, sw):
            count[..., y:y + wh, x:x + ww] += 1
    step = max(1, int(window_batch))
    for start in range(0, len(tiles), step):
        part = tiles[start:start + step]
        crops = torch.cat([batch[i:i + 1, :, y:y + wh, x:x + ww] for i, y, x in part], dim=0)
        logits = logits_fn(crops).float()
        if tuple(logits.shape[-2:]) != (wh, ww) or logits.shape[0] != len(part):
            raise RuntimeError(f"logits_fn returned shape {tuple(logits.shape)} for {len(part)} windows of {wh}x{ww}")
        if acc is None:
            acc = torch.zeros((n, logits.shape[1], h, w), dtype=torch.float32, device=logits.device)
        for k, (i, y, x) in enumerate(part):
            acc[i, :, y:y + wh, x:x + ww] += logits[k]
    assert acc is not None
    return acc / count.to(acc.device)

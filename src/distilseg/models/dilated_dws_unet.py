"""U-Net built from parallel dilated depthwise-separable blocks (dilations 1, 2, 3).

Why: each stage sees three receptive fields for roughly the cost of one dense 3x3 conv, which makes a
light U-Net with context comparable to a much wider plain one.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .base import SegmentationModel, apply_seed_pretrained
from .blocks import ConvBNReLU, DilatedDWSBlock, resize_to
from .registry import register_model
from .unet import check_unet_args

__all__ = ["DilatedDWSUNet", "dilated_dws_unet"]


class DilatedStage(nn.Sequential):
    """Two dilated DWS blocks: the first maps channels, the second keeps them (so it is residual)."""

    def __init__(self, in_ch: int, out_ch: int, rates: Sequence[int]) -> None:
        super().__init__(DilatedDWSBlock(in_ch, out_ch, rates), DilatedDWSBlock(out_ch, out_ch, rates))


class DilatedDWSUNet(SegmentationModel):
    """Stem 3x3 conv, ``depth`` max-pool levels of dilated DWS stages, bilinear decoder with skips."""

    supports_grad_checkpointing = True

    def __init__(
        self, num_classes: int, depth: int = 4, base_width: int = 32, rates: Sequence[int] = (1, 2, 3)
    ) -> None:
        super().__init__()
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.output_stride = 2**depth
        self.stem = ConvBNReLU(3, widths[0], 3)
        self.inc = DilatedStage(widths[0], widths[0], rates)
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DilatedStage(widths[i], widths[i + 1], rates)) for i in range(depth)
        )
        self.ups = nn.ModuleList(
            DilatedStage(widths[i + 1] + widths[i], widths[i], rates) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.feature_channels = widths + list(reversed(widths[:-1]))

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = [self._stage(self.inc, self.stem(x))]
        for down in self.downs:
            skips.append(self._stage(down, skips[-1]))
        feats = list(skips)
        y = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            y = self._stage(up, torch.cat([skip, resize_to(y, skip.shape[-2:])], dim=1))
            feats.append(y)
        return self.head(y), feats


@register_model
def dilated_dws_unet(
    num_classes: int,
    *,
    depth: int = 4,
    base_width: int = 32,
    rates: tuple[int, ...] = (1, 2, 3),
    pretrained: str | None = None,
) -> nn.Module:
    """U-Net of parallel dilated (1, 2, 3) depthwise-separable convs fused by 1x1 conv, with residuals."""
    check_unet_args("dilated_dws_unet", depth, base_width)
    rates = tuple(int(r) for r in rates)
    if not rates or min(rates) < 1:
        raise UsageError(f"dilated_dws_unet: rates must be positive integers, got {rates!r}")
    model = DilatedDWSUNet(num_classes, depth=depth, base_width=base_width, rates=rates)
    return apply_seed_pretrained(model, pretrained, "dilated_dws_unet")

"""Attention U-Net (Oktay et al. 2018): additive attention gates filter each skip connection."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import SegmentationModel, apply_seed_pretrained
from .blocks import AttentionGate, DoubleConv, resize_to
from .registry import register_model
from .unet import check_unet_args

__all__ = ["AttentionUNet", "attention_unet"]


class AttentionUpBlock(nn.Module):
    """Upsample the deeper map, gate the skip with it (the coarser map says where to look), double conv."""

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, bilinear: bool = True) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            up_ch = in_ch
        else:
            up_ch = in_ch // 2
            self.up = nn.ConvTranspose2d(in_ch, up_ch, kernel_size=2, stride=2)
        self.gate = AttentionGate(gate_ch=in_ch, skip_ch=skip_ch, inter_ch=max(1, skip_ch // 2))
        self.conv = DoubleConv(up_ch + skip_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        gated = self.gate(x, skip)  # gating signal: the coarse decoder map before upsampling
        x = resize_to(self.up(x), skip.shape[-2:])
        return self.conv(torch.cat([gated, x], dim=1))


class AttentionUNet(SegmentationModel):
    """U-Net whose decoder stages weight skip features with attention gates before concatenation."""

    def __init__(self, num_classes: int, depth: int = 4, base_width: int = 32, bilinear: bool = True) -> None:
        super().__init__()
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.output_stride = 2**depth
        self.inc = DoubleConv(3, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.ups = nn.ModuleList(
            AttentionUpBlock(widths[i + 1], widths[i], widths[i], bilinear=bilinear) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.feature_channels = widths + list(reversed(widths[:-1]))

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        feats = list(skips)
        y = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            y = up(y, skip)
            feats.append(y)
        return self.head(y), feats


@register_model
def attention_unet(
    num_classes: int,
    *,
    depth: int = 4,
    base_width: int = 32,
    bilinear: bool = True,
    pretrained: str | None = None,
) -> nn.Module:
    """Attention U-Net: additive attention gates on the skip connections (Oktay et al. 2018)."""
    check_unet_args("attention_unet", depth, base_width)
    model = AttentionUNet(num_classes, depth=depth, base_width=base_width, bilinear=bilinear)
    return apply_seed_pretrained(model, pretrained, "attention_unet")

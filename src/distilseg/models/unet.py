"""Plain U-Net (Ronneberger et al. 2015) with BatchNorm; the CPU demo model in small configurations."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .base import SegmentationModel, apply_seed_pretrained
from .blocks import AttentionGate, DoubleConv, resize_to
from .registry import register_model

__all__ = ["UNet", "unet", "check_unet_args"]


def check_unet_args(arch: str, depth: int, base_width: int) -> None:
    if not isinstance(depth, int) or not 1 <= depth <= 6:
        raise UsageError(f"{arch}: depth must be an integer from 1 to 6, got {depth!r}")
    if not isinstance(base_width, int) or base_width < 1:
        raise UsageError(f"{arch}: base_width must be a positive integer, got {base_width!r}")


class UpBlock(nn.Module):
    """Upsample the deeper map x2 (bilinear or transposed conv), concatenate the skip, double conv.

    ``gated=True`` (Attention U-Net) first weights the skip with an additive attention gate whose gating
    signal is the coarse decoder map before upsampling (the coarser map says where to look).
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, bilinear: bool = True, gated: bool = False) -> None:
        super().__init__()
        if bilinear:
            self.up: nn.Module = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
            up_ch = in_ch
        else:
            up_ch = in_ch // 2
            self.up = nn.ConvTranspose2d(in_ch, up_ch, kernel_size=2, stride=2)
        self.gate = AttentionGate(gate_ch=in_ch, skip_ch=skip_ch, inter_ch=max(1, skip_ch // 2)) if gated else None
        self.conv = DoubleConv(up_ch + skip_ch, out_ch)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        if self.gate is not None:
            skip = self.gate(x, skip)  # gating signal: the coarse decoder map before upsampling
        x = resize_to(self.up(x), skip.shape[-2:])
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(SegmentationModel):
    """Encoder of ``depth`` max-pool levels (channels ``base_width * 2**i``) and a mirrored decoder.

    Features: encoder level outputs (shallow to the bottleneck) then each decoder stage's output; the last
    is the full-resolution decoder map that the 1x1 classifier reads.
    """

    gated_skips = False  # True in AttentionUNet: attention gates on the skip connections
    supports_grad_checkpointing = True  # every level runs through ``_stage``

    def __init__(self, num_classes: int, depth: int = 4, base_width: int = 32, bilinear: bool = True) -> None:
        super().__init__()
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.output_stride = 2**depth
        self.inc = DoubleConv(3, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1])) for i in range(depth)
        )
        self.ups = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], widths[i], bilinear=bilinear, gated=self.gated_skips)
            for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.feature_channels = widths + list(reversed(widths[:-1]))

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = [self._stage(self.inc, x)]
        for down in self.downs:
            skips.append(self._stage(down, skips[-1]))
        feats = list(skips)
        y = skips[-1]
        for up, skip in zip(self.ups, reversed(skips[:-1])):
            y = self._stage(up, y, skip)
            feats.append(y)
        return self.head(y), feats


@register_model
def unet(
    num_classes: int,
    *,
    depth: int = 4,
    base_width: int = 32,
    bilinear: bool = True,
    encoder: str | None = None,
    pretrained: str | None = None,
    **encoder_kwargs: Any,
) -> nn.Module:
    """U-Net (BatchNorm, bilinear or transposed-conv upsampling); encoder=NAME uses a timm backbone."""
    if encoder is not None:
        from .encoder_unet import build_encoder_unet  # lazy: pulls in timm

        return build_encoder_unet(num_classes, encoder=encoder, pretrained=pretrained, **encoder_kwargs)
    if encoder_kwargs:
        raise UsageError(
            f"unet: unknown argument(s) {', '.join(sorted(encoder_kwargs))} "
            f"(only valid together with encoder=NAME)"
        )
    check_unet_args("unet", depth, base_width)
    model = UNet(num_classes, depth=depth, base_width=base_width, bilinear=bilinear)
    return apply_seed_pretrained(model, pretrained, "unet")

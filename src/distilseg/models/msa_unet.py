"""Multi-scale attention U-Net: the original system's teacher, and its compressed student.

Topology:
- encoder of 5 levels (widths ``base_width * (1, 2, 4, 8, 16) * width``), each two multi-kernel
  (ACNet-style 3x3 + 1x3 + 3x1) conv layers with ReLU, max-pool between levels;
- 4 decoder stages with UNet3+ full-scale skips: every encoder level is brought to the stage's resolution
  (max-pool down, or bilinear up) and projected by a 3x3 conv to ``skip_channels``; the concatenated skips
  are filtered by CBAM channel attention, concatenated with the upsampled previous decoder output (the
  bottleneck for the first stage) and merged by the stage's multi-kernel fusion layer.

For the deeper levels the 3x3 projection runs *before* the bilinear upsampling (at the level's own, lower
resolution): the two nearly commute and this keeps the full-resolution stage affordable.

``depthwise=True`` swaps every multi-kernel conv (except the very first, which sees only 3 RGB channels)
and every skip projection for depthwise-separable versions; ``msa_unet_student`` is that with ``width=0.5``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .base import SegmentationModel, apply_seed_pretrained
from .blocks import AsymConvBN, ChannelAttention, ConvBNReLU, DWSConv, make_divisible, resize_to
from .registry import register_model

__all__ = ["MSAUNet", "msa_unet", "msa_unet_student"]

LEVEL_MULTIPLIERS = (1, 2, 4, 8, 16)


class SkipProjection(nn.Module):
    """Bring encoder level ``src`` to decoder level ``dst``'s resolution with ``out_ch`` channels."""

    def __init__(self, in_ch: int, out_ch: int, src: int, dst: int, depthwise: bool) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2 ** (dst - src)) if src < dst else None
        self.upsample = src > dst
        self.proj = DWSConv(in_ch, out_ch) if depthwise else ConvBNReLU(in_ch, out_ch, 3)

    def forward(self, x: Tensor, size: torch.Size) -> Tensor:
        if self.pool is not None:
            x = self.pool(x)
        x = self.proj(x)
        return resize_to(x, size) if self.upsample else x


class DecoderStage(nn.Module):
    """One full-scale decoder stage at encoder level ``level``."""

    def __init__(
        self, enc_widths: list[int], level: int, skip_ch: int, prev_ch: int, out_ch: int, depthwise: bool
    ) -> None:
        super().__init__()
        self.skips = nn.ModuleList(
            SkipProjection(w, skip_ch, src=i, dst=level, depthwise=depthwise) for i, w in enumerate(enc_widths)
        )
        cat_ch = skip_ch * len(enc_widths)
        self.attention = ChannelAttention(cat_ch, reduction=8)
        self.fuse = nn.Sequential(AsymConvBN(cat_ch + prev_ch, out_ch, depthwise=depthwise), nn.ReLU(inplace=True))

    def forward(self, enc: list[Tensor], prev: Tensor, level: int) -> Tensor:
        size = enc[level].shape[-2:]
        skips = torch.cat([proj(e, size) for proj, e in zip(self.skips, enc)], dim=1)
        skips = self.attention(skips)
        return self.fuse(torch.cat([skips, resize_to(prev, size)], dim=1))


class MSAUNet(SegmentationModel):
    """Multi-kernel encoder, full-scale skips with channel attention, multi-kernel fusion decoder."""

    def __init__(
        self,
        num_classes: int,
        base_width: int = 32,
        width: float = 1.0,
        depthwise: bool = False,
        skip_channels: int | None = None,
        decoder_channels: int | None = None,
    ) -> None:
        super().__init__()
        enc = [make_divisible(base_width * m * width) for m in LEVEL_MULTIPLIERS]
        skip_ch = make_divisible((skip_channels or base_width) * width)
        dec_ch = make_divisible((decoder_channels or 2 * base_width) * width)
        levels = len(enc)
        self.output_stride = 2 ** (levels - 1)
        self.encoder = nn.ModuleList()
        for i, w in enumerate(enc):
            in_ch = 3 if i == 0 else enc[i - 1]
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i > 0 else []
            layers += [
                AsymConvBN(in_ch, w, depthwise=depthwise and i > 0),
                nn.ReLU(inplace=True),
                AsymConvBN(w, w, depthwise=depthwise),
                nn.ReLU(inplace=True),
            ]
            self.encoder.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(
            DecoderStage(enc, level, skip_ch, enc[-1] if level == levels - 2 else dec_ch, dec_ch, depthwise)
            for level in reversed(range(levels - 1))
        )
        self.head = nn.Conv2d(dec_ch, num_classes, 1)
        self.feature_channels = enc + [dec_ch] * (levels - 1)

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        nhwc = _nhwc_inference(self, x)
        if nhwc:
            x = x.contiguous(memory_format=torch.channels_last)
        enc: list[Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            enc.append(x)
        feats = list(enc)
        y = enc[-1]
        for stage, level in zip(self.decoder, reversed(range(len(enc) - 1))):
            y = stage(enc, y, level)
            feats.append(y)
        logits = self.head(y)
        return (logits.contiguous() if nhwc else logits), feats


def _nhwc_inference(model: nn.Module, x: Tensor) -> bool:
    """Run inference on the CPU in channels-last layout: the depthwise and 1x1 convs, which are most of this
    network's time, run about twice as fast in oneDNN on NHWC maps (``benchmarks/seed_latency.py``). Not while
    training (the backward pass of the depthwise convs is not faster) nor while tracing for export."""
    return (not model.training and x.device.type == "cpu" and not torch.jit.is_tracing()
            and not torch.jit.is_scripting())


def _build(
    arch: str,
    num_classes: int,
    base_width: int,
    width: float,
    depthwise: bool,
    skip_channels: int | None,
    decoder_channels: int | None,
    pretrained: str | None,
) -> nn.Module:
    if not isinstance(base_width, int) or base_width < 1:
        raise UsageError(f"{arch}: base_width must be a positive integer, got {base_width!r}")
    if not width > 0:
        raise UsageError(f"{arch}: width must be > 0, got {width!r}")
    for label, value in (("skip_channels", skip_channels), ("decoder_channels", decoder_channels)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise UsageError(f"{arch}: {label} must be a positive integer, got {value!r}")
    model = MSAUNet(num_classes, base_width, width, bool(depthwise), skip_channels, decoder_channels)
    return apply_seed_pretrained(model, pretrained, arch)


@register_model
def msa_unet(
    num_classes: int,
    *,
    base_width: int = 32,
    width: float = 1.0,
    depthwise: bool = False,
    skip_channels: int | None = None,
    decoder_channels: int | None = None,
    pretrained: str | None = None,
) -> nn.Module:
    """Multi-scale attention U-Net teacher: multi-kernel blocks, full-scale skips, channel attention."""
    return _build("msa_unet", num_classes, base_width, width, depthwise, skip_channels, decoder_channels, pretrained)


@register_model
def msa_unet_student(
    num_classes: int,
    *,
    base_width: int = 32,
    width: float = 0.5,
    depthwise: bool = True,
    skip_channels: int | None = None,
    decoder_channels: int | None = None,
    pretrained: str | None = None,
) -> nn.Module:
    """Compressed msa_unet: half width, depthwise-separable multi-kernel blocks (same topology)."""
    return _build(
        "msa_unet_student", num_classes, base_width, width, depthwise, skip_channels, decoder_channels, pretrained
    )

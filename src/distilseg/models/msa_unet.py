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

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .base import SegmentationModel, apply_seed_pretrained
from .blocks import AsymConvBN, ChannelAttention, ConvBNReLU, DWSConv, fold_bn, make_divisible, resize_to
from .registry import register_model

__all__ = ["MSAUNet", "msa_unet", "msa_unet_student"]

LEVEL_MULTIPLIERS = (1, 2, 4, 8, 16)
STRIPE_ROWS = 32  # rows per band of the inference form's decoder fusion (DecoderStage._folded_forward)


class SkipProjection(nn.Module):
    """Bring encoder level ``src`` to decoder level ``dst``'s resolution with ``out_ch`` channels."""

    def __init__(self, in_ch: int, out_ch: int, src: int, dst: int, depthwise: bool) -> None:
        super().__init__()
        self.pool = nn.MaxPool2d(2 ** (dst - src)) if src < dst else None
        self.upsample = src > dst
        self.proj = DWSConv(in_ch, out_ch) if depthwise else ConvBNReLU(in_ch, out_ch, 3)

    def forward(self, x: Tensor, size: torch.Size, folded: bool = False, pooled: bool = False) -> Tensor:
        """``pooled``: ``x`` is already at level ``dst``'s resolution (taken from the network's pool pyramid)."""
        if self.pool is not None and not pooled:
            x = self.pool(x)
        x = _folded_conv_bn_act(self.proj, x) if folded else self.proj(x)
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

    def forward(
        self, enc: list[Tensor], prev: Tensor, level: int, pool_to: Callable[[int, int], Tensor] | None = None
    ) -> Tensor:
        """``pool_to`` (the inference form): ``pool_to(src, dst)`` is encoder level ``src`` max-pooled to level
        ``dst``'s resolution, computed once per forward for all stages."""
        size = enc[level].shape[-2:]
        if pool_to is not None:
            enc = [pool_to(i, level) if i < level else e for i, e in enumerate(enc)]
            if prev.shape[0] == 1:
                return self._folded_forward(enc, prev, size)
        folded = pool_to is not None
        skips = torch.cat([proj(e, size, folded, folded) for proj, e in zip(self.skips, enc)], dim=1)
        skips = self.attention(skips)
        return self.fuse(torch.cat([skips, resize_to(prev, size)], dim=1))

    def _folded_forward(self, enc: list[Tensor], prev: Tensor, size: torch.Size) -> Tensor:
        """The same function for one image, with less memory traffic at the stage's (often full) resolution.

        Why: at 360x480 the level-0 stage concatenates 112 full-resolution channels and spends more time
        moving them between memory and the cores than computing. Here:
        - the attention pools run on each skip map before the concatenation (pooling is per channel);
        - the channel-attention scale goes into the fusion conv's kernel (scaling an input channel of a
          convolution scales its kernel slice) instead of rescaling 80 full-resolution channels;
        - the concatenation and the fusion convs run in bands of ``STRIPE_ROWS`` rows (plus one row of halo on
          each side for the 3x3 kernel), so the 112-channel band stays in the CPU cache between them.
        Batch size 1 only: the attention scale differs per image."""
        pieces = [proj(e, size, True, True) for proj, e in zip(self.skips, enc)]
        avg = torch.cat([F.adaptive_avg_pool2d(p, 1) for p in pieces], dim=1)
        mx = torch.cat([F.adaptive_max_pool2d(p, 1) for p in pieces], dim=1)
        scale = self.attention.scale(avg, mx).reshape(-1)
        pieces.append(resize_to(prev, size))
        asym = self.fuse[0]
        kernel, bias, pw = asym.folded_weights()
        conv = asym.square[0]
        scale = torch.cat([scale, scale.new_ones(kernel.shape[0 if conv.groups > 1 else 1] - scale.numel())])
        kernel = kernel * (scale.reshape(-1, 1, 1, 1) if conv.groups > 1 else scale.reshape(1, -1, 1, 1))
        height = int(size[0])
        bands = []
        for top in range(0, height, STRIPE_ROWS):
            bottom = min(top + STRIPE_ROWS, height)
            lo, hi = max(top - 1, 0), min(bottom + 1, height)
            # rows lo..hi-1 in, 'same' padding; the halo rows' own outputs (which saw zero padding) are dropped
            x = torch.cat([p[:, :, lo:hi] for p in pieces], dim=1)
            y = F.conv2d(x, kernel, bias, 1, 1, 1, conv.groups)[:, :, top - lo:bottom - lo]
            if pw is not None:
                y = F.conv2d(y, pw[0], pw[1])
            bands.append(self.fuse[1](y))
        return bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)


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
        pyramid: dict[tuple[int, int], Tensor] = {}

        def pool_to(src: int, dst: int) -> Tensor:
            # MaxPool2d(4) = MaxPool2d(2) twice (the same windows), so each level is pooled once, from the
            # level above it, and the encoder's own pooling is reused
            if src == dst:
                return enc[src]
            if (src, dst) not in pyramid:
                pyramid[src, dst] = F.max_pool2d(pool_to(src, dst - 1), 2)
            return pyramid[src, dst]

        for i, stage in enumerate(self.encoder):
            if nhwc and i > 0:
                x = pool_to(i - 1, i)
                for layer in list(stage)[1:]:
                    x = layer(x)
            else:
                x = stage(x)
            enc.append(x)
        feats = list(enc)
        y = enc[-1]
        for stage, level in zip(self.decoder, reversed(range(len(enc) - 1))):
            y = stage(enc, y, level, pool_to if nhwc else None)
            feats.append(y)
        logits = self.head(y)
        return (logits.contiguous() if nhwc else logits), feats


def _nhwc_inference(model: nn.Module, x: Tensor) -> bool:
    """Run the CPU inference form: channels-last layout (the depthwise and 1x1 convs, which are most of this
    network's time, run about twice as fast in oneDNN on NHWC maps), BatchNorms folded into the convs before
    them, and the decoder stages' lower-traffic form (``DecoderStage._folded_forward``); measured by
    ``benchmarks/seed_latency.py``. Not while training (the backward pass of the depthwise convs is not faster,
    and BatchNorm must see batch statistics) nor while tracing for export (ONNX Runtime folds by itself)."""
    return (not model.training and x.device.type == "cpu" and not torch.jit.is_tracing()
            and not torch.jit.is_scripting() and not torch.compiler.is_compiling())


def _folded_conv_bn_act(block: nn.Sequential, x: Tensor) -> Tensor:
    """Run a ``ConvBNReLU`` (or a ``DWSConv``, two of them) in eval mode with each BatchNorm folded into its
    conv: the same values, one pass over the map instead of two."""
    if isinstance(block, DWSConv):
        return _folded_conv_bn_act(block[1], _folded_conv_bn_act(block[0], x))
    conv, bn = block[0], block[1]
    weight, bias = fold_bn(conv.weight, bn)
    y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return block[2](y) if len(block) > 2 else y


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

"""LiteStudent: a sub-1M-parameter real-time road-scene network (DABNet / CGNet style) with a light decoder.

Design (why each part is there):
- a 3-conv stem to 1/2 and two downsampling steps to 1/8: road scenes need context more than detail,
  and 1/8 keeps the deep stage cheap at 360x480;
- Depthwise Asymmetric Bottleneck (DAB) modules (``blocks.DABModule``): a local depthwise 3x1+1x3 branch
  plus a dilated depthwise 3x1+1x3 branch, summed, pointwise, residual; dilations grow 2, 4, 8, 16 (and
  repeat) through the last stage so the 1/8 map sees most of the image;
- input-image injection at 1/4 and 1/8 (the image average-pooled and fed into each downsampling step)
  and long concatenations of each stage's input and output, as DABNet does: cheap paths for colour and
  edges. DABNet concatenates the 3 image channels before the downsampling conv; here the image gets its
  own 3x3 conv whose output is added to the downsampling conv's. A conv over a concatenation is exactly
  the sum of convs over its parts, and this keeps every big conv's channel count a multiple of 8, which
  ONNX Runtime's fast (NCHWc) CPU kernels need: the 131-channel conv was the slowest op of the network;
- a light decoder: the 1/8 context map, projected and upsampled, is fused with the 1/4 detail map by two
  depthwise-separable convs before the classifier; logits at 1/4 are bilinearly upsampled by the base class.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .base import SegmentationModel, apply_seed_pretrained
from .blocks import ConvBNReLU, DABModule, DWSConv
from .registry import register_model

__all__ = ["LiteStudent", "lite_student"]


class InjectDown(nn.Module):
    """Stride-2 3x3 conv + BN of the features, plus a 3x3 conv + BN of the image at the new scale; ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.features = ConvBNReLU(in_ch, out_ch, 3, stride=2, act=None)
        self.image = ConvBNReLU(3, out_ch, 3, act=None)

    def forward(self, x: Tensor, image: Tensor) -> Tensor:
        return F.relu(self.features(x) + self.image(image))


class LiteStudent(SegmentationModel):
    """Stem (1/2) -> down + DAB x N (1/4) -> down + dilated DAB x M (1/8) -> 1/4 fusion decoder."""

    output_stride = 8

    def __init__(
        self,
        num_classes: int,
        stem_channels: int = 32,
        stage_channels: Sequence[int] = (64, 128),
        stage2_dilations: Sequence[int] = (2, 2, 2),
        stage3_dilations: Sequence[int] = (2, 4, 8, 16, 2, 4, 8, 16, 2, 4, 8, 16),
        decoder_channels: int = 64,
        reduce_kernel: int = 1,
        light_stem: bool = True,
    ) -> None:
        super().__init__()
        c1, (c2, c3) = stem_channels, stage_channels
        stem_block = DWSConv if light_stem else ConvBNReLU
        self.stem = nn.Sequential(ConvBNReLU(3, c1, 3, stride=2), stem_block(c1, c1, 3), stem_block(c1, c1, 3))
        self.down2 = InjectDown(c1, c2)
        self.stage2 = nn.Sequential(*(DABModule(c2, d, reduce_kernel) for d in stage2_dilations))
        self.down3 = InjectDown(2 * c2, c3)
        self.stage3 = nn.Sequential(*(DABModule(c3, d, reduce_kernel) for d in stage3_dilations))
        skip_ch = max(8, decoder_channels // 2)
        self.context_proj = ConvBNReLU(2 * c3, decoder_channels, 1)
        self.detail_proj = ConvBNReLU(2 * c2, skip_ch, 1)
        self.fuse = nn.Sequential(
            DWSConv(decoder_channels + skip_ch, decoder_channels),
            DWSConv(decoder_channels, decoder_channels),
        )
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(decoder_channels, num_classes, 1))
        self.feature_channels = [c1, 2 * c2, 2 * c3, decoder_channels]

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        img4 = F.avg_pool2d(x, 4)
        img8 = F.avg_pool2d(img4, 2)
        s1 = self.stem(x)  # 1/2
        d2 = self.down2(s1, img4)  # 1/4
        s2 = torch.cat([self.stage2(d2), d2], dim=1)
        d3 = self.down3(s2, img8)  # 1/8
        s3 = torch.cat([self.stage3(d3), d3], dim=1)
        context = F.interpolate(self.context_proj(s3), size=s2.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([context, self.detail_proj(s2)], dim=1))  # 1/4
        return self.classifier(y), [s1, s2, s3, y]


@register_model
def lite_student(
    num_classes: int,
    *,
    stem_channels: int = 32,
    stage_channels: tuple[int, int] = (64, 128),
    stage2_dilations: tuple[int, ...] = (2, 2, 2),
    stage3_dilations: tuple[int, ...] = (2, 4, 8, 16, 2, 4, 8, 16, 2, 4, 8, 16),
    decoder_channels: int = 64,
    reduce_kernel: int = 1,
    light_stem: bool = True,
    pretrained: str | None = None,
) -> nn.Module:
    """Real-time student (<1M params): DAB modules, image injection, 1/4-1/8 fusion decoder."""
    stage_channels = tuple(int(c) for c in stage_channels)
    if len(stage_channels) != 2 or min(stage_channels) < 2:
        raise UsageError(f"lite_student: stage_channels must be two integers >= 2, got {stage_channels!r}")
    if stem_channels < 1 or decoder_channels < 1:
        raise UsageError("lite_student: stem_channels and decoder_channels must be positive")
    d2 = tuple(int(d) for d in stage2_dilations)
    d3 = tuple(int(d) for d in stage3_dilations)
    if not d2 or not d3 or min(d2 + d3) < 1:
        raise UsageError(f"lite_student: dilations must be non-empty lists of positive integers, got {d2}, {d3}")
    if reduce_kernel not in (1, 3):
        raise UsageError(f"lite_student: reduce_kernel must be 1 or 3, got {reduce_kernel!r}")
    model = LiteStudent(
        num_classes, stem_channels, stage_channels, d2, d3, decoder_channels, reduce_kernel, bool(light_stem)
    )
    return apply_seed_pretrained(model, pretrained, "lite_student")

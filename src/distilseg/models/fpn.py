"""Feature Pyramid Network decoder over a timm ``features_only`` encoder (Kirillov et al. 2019, "Panoptic
Feature Pyramid Networks", the semantic branch; segmentation_models_pytorch's ``FPN`` layout, made lighter).

Why this head: it decodes at 1/4 (or 1/8) of the input and upsamples the logits, so on a CPU it costs a fraction of a
full-resolution U-Net decoder while still fusing every scale (measured: a full-resolution U-Net
decoder on EfficientNet-Lite0 ran at 67 ms in ONNX Runtime at 360x480). With ``encoder_depth=4`` the encoder
is cut after stride 16 (EfficientNet-Lite0 through its 112-channel stage: 0.70M parameters), which makes the
small students of ``configs/camvid/``.

Decoder: a 1x1 lateral conv brings each encoder level from ``decode_stride`` (4, or 8 for the cheapest head,
LR-ASPP's choice) down to the deepest to
``pyramid_channels``; top-down, each level adds the nearest-upsampled level above it; each pyramid level then
goes through one 3x3 conv-BN-ReLU (depthwise-separable with ``separable=True``) to ``segmentation_channels``,
is upsampled bilinearly to ``decode_stride``, and the levels are summed; a 1x1 classifier predicts there and the
logits are upsampled bilinearly to the input size.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .base import SegmentationModel
from .pretrained import create_timm_encoder, input_adapter, load_local_weights, local_weights_path
from .registry import register_model


def _conv_bn_relu(cin: int, cout: int, separable: bool) -> nn.Sequential:
    if not separable:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class FPN(SegmentationModel):
    """timm encoder + FPN semantic head. Features: the encoder levels used (shallow to deep), then the fused
    map (at ``decode_stride``) before the classifier."""

    def __init__(
        self,
        num_classes: int,
        encoder: str = "efficientnet_lite0",
        encoder_depth: int = 5,
        pyramid_channels: int = 128,
        segmentation_channels: int = 64,
        separable: bool = False,
        dropout: float = 0.1,
        decode_stride: int = 4,
        encoder_pretrained: str | None = None,
    ) -> None:
        super().__init__()
        if not 3 <= int(encoder_depth) <= 5:
            raise UsageError(f"fpn: encoder_depth must be 3, 4 or 5 (deepest stride 8, 16 or 32), got {encoder_depth}")
        if int(decode_stride) not in (4, 8):
            raise UsageError(f"fpn: decode_stride must be 4 or 8, got {decode_stride}")
        if pyramid_channels < 1 or segmentation_channels < 1:
            raise UsageError("fpn: pyramid_channels and segmentation_channels must be positive")
        out_indices = tuple(range(int(encoder_depth)))
        self.encoder = create_timm_encoder(encoder, encoder_pretrained, out_indices=out_indices)
        self.input_norm = input_adapter(self.encoder)
        channels = list(self.encoder.feature_info.channels())
        reductions = list(self.encoder.feature_info.reduction())
        if int(decode_stride) not in reductions:
            raise UsageError(
                f"fpn(encoder={encoder!r}): the encoder has no stride-{decode_stride} level (strides {reductions})"
            )
        self._first = reductions.index(int(decode_stride))  # levels from decode_stride down to the deepest
        used = channels[self._first:]
        self.lateral = nn.ModuleList(nn.Conv2d(c, pyramid_channels, 1) for c in used)
        self.smooth = nn.ModuleList(_conv_bn_relu(pyramid_channels, segmentation_channels, separable) for _ in used)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Conv2d(segmentation_channels, num_classes, 1)
        self.output_stride = int(max(reductions))
        self.feature_channels = channels + [segmentation_channels]

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = list(self.encoder(self.input_norm(x)))
        levels = feats[self._first:]
        pyramid = [lat(f) for lat, f in zip(self.lateral, levels)]
        for i in range(len(pyramid) - 2, -1, -1):  # top-down
            pyramid[i] = pyramid[i] + F.interpolate(pyramid[i + 1], size=pyramid[i].shape[-2:], mode="nearest")
        size = pyramid[0].shape[-2:]
        fused = None
        for conv, p in zip(self.smooth, pyramid):
            y = conv(p)
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            fused = y if fused is None else fused + y
        return self.head(self.dropout(fused)), feats + [fused]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())


@register_model
def fpn(
    num_classes: int,
    encoder: str = "efficientnet_lite0",
    encoder_depth: int = 5,
    pyramid_channels: int = 128,
    segmentation_channels: int = 64,
    separable: bool = False,
    dropout: float = 0.1,
    decode_stride: int = 4,
    pretrained: str | None = None,
    **kw: Any,
) -> nn.Module:
    """FPN head (decodes at 1/4, or 1/8 with decode_stride=8) on a timm encoder, default EfficientNet-Lite0;
    encoder_depth=4 cuts it at 1/16."""
    if kw:
        raise UsageError(f"fpn: unknown argument(s) {', '.join(sorted(kw))}")
    local = local_weights_path(pretrained) if pretrained is not None else None
    model = FPN(
        num_classes,
        encoder=encoder,
        encoder_depth=encoder_depth,
        pyramid_channels=int(pyramid_channels),
        segmentation_channels=int(segmentation_channels),
        separable=bool(separable),
        dropout=float(dropout),
        decode_stride=int(decode_stride),
        encoder_pretrained=None if local is not None else pretrained,
    )
    if local is not None:
        model.pretrained_report = load_local_weights(
            model, local, {"model": model, "encoder": model.encoder}, arch=f"fpn(encoder={encoder!r})"
        )
    return model

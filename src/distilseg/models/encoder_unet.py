"""U-Net decoder over a timm ``features_only`` encoder (the segmentation_models_pytorch layout).

Why: ImageNet-pretrained encoders (resnet34, efficientnet, convnext ...) with a light U-Net decoder are
the usual strong, cheap segmentation baseline. Not registered itself: ``unet(encoder=NAME)`` calls
``build_encoder_unet``.

Decoder: starting from the deepest encoder map, each block upsamples (nearest) to the next shallower
skip's size, concatenates it and applies two conv-BN-ReLU; blocks past the shallowest skip upsample x2
without a skip until stride 1; then a 3x3 conv classifier (smp's ``SegmentationHead``).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .base import SegmentationModel
from .pretrained import create_timm_encoder, input_adapter, load_local_weights, local_weights_path


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = _conv_bn_relu(in_channels + skip_channels, out_channels)
        self.conv2 = _conv_bn_relu(out_channels, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None = None) -> Tensor:
        if skip is not None:
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = torch.cat([x, skip], dim=1)
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv2(self.conv1(x))


class EncoderUNet(SegmentationModel):
    """timm encoder + U-Net decoder. Features: encoder levels (shallow to deep) then each decoder block's
    output in decoding order; the last is the final decoder map before the classifier."""

    def __init__(
        self,
        num_classes: int,
        encoder: str = "resnet34",
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        encoder_pretrained: str | None = None,
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        self.encoder = create_timm_encoder(encoder, encoder_pretrained, **encoder_kwargs)
        self.input_norm = input_adapter(self.encoder)
        channels = list(self.encoder.feature_info.channels())
        reductions = list(self.encoder.feature_info.reduction())
        extra = int(round(math.log2(reductions[0]))) if reductions[0] > 1 else 0
        needed = len(channels) - 1 + extra
        decoder_channels = [int(c) for c in decoder_channels]
        if len(decoder_channels) != needed or any(c < 1 for c in decoder_channels):
            raise UsageError(
                f"unet(encoder={encoder!r}): decoder_channels needs {needed} positive widths "
                f"(encoder strides {reductions}), got {decoder_channels}"
            )
        in_chs = [channels[-1]] + decoder_channels[:-1]
        skip_chs = list(reversed(channels[:-1])) + [0] * extra
        self.decoder = nn.ModuleList(DecoderBlock(i, s, o) for i, s, o in zip(in_chs, skip_chs, decoder_channels))
        self.head = nn.Conv2d(decoder_channels[-1], num_classes, 3, padding=1)
        self.output_stride = int(max(reductions))  # skips must line up: pad to the deepest stride
        self.feature_channels = channels + decoder_channels

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        feats = list(self.encoder(self.input_norm(x)))
        skips = list(reversed(feats[:-1]))
        y = feats[-1]
        outs = []
        for i, block in enumerate(self.decoder):
            y = block(y, skips[i] if i < len(skips) else None)
            outs.append(y)
        return self.head(y), feats + outs

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())


def build_encoder_unet(
    num_classes: int,
    encoder: str = "resnet34",
    pretrained: str | None = None,
    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
    **kw: Any,
) -> nn.Module:
    """U-Net with a timm encoder; ``pretrained``: None, "imagenet", a timm tag / hub id, or a local file
    (encoder-only weights go into the encoder, a full-model state dict into the whole model)."""
    local = local_weights_path(pretrained) if pretrained is not None else None
    model = EncoderUNet(
        num_classes,
        encoder=encoder,
        decoder_channels=decoder_channels,
        encoder_pretrained=None if local is not None else pretrained,
        **kw,
    )
    if local is not None:
        model.pretrained_report = load_local_weights(
            model, local, {"model": model, "encoder": model.encoder}, arch=f"unet(encoder={encoder!r})"
        )
    return model

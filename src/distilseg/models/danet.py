"""DANet: Dual Attention Network (Fu et al., CVPR 2019) over a timm encoder.

Why: a strong context-aware teacher. The head runs a position attention module (spatial self-attention,
query/key reduced to C/8) and a channel attention module in parallel on the encoder's last (stride 8)
feature map; both start as identities (learnable ``gamma`` initialised to 0) so training starts from the
plain encoder features and learns how much context to mix in.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .base import AuxSegmentationModel
from .pretrained import create_timm_encoder, load_local_weights, local_weights_path
from .registry import register_model

log = logging.getLogger("distilseg.models")


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PositionAttention(nn.Module):
    """PAM: every position attends to every other; out = gamma * attended + x."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        reduced = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, reduced, 1)
        self.key = nn.Conv2d(channels, reduced, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # N x HW x C'
        k = self.key(x).flatten(2)  # N x C' x HW
        attn = torch.softmax(torch.bmm(q, k), dim=-1)  # N x HW x HW (row i: weights of position i)
        v = self.value(x).flatten(2)  # N x C x HW
        out = torch.bmm(v, attn.transpose(1, 2)).view(n, c, h, w)
        return self.gamma * out + x


class ChannelAttention(nn.Module):
    """CAM: channel-to-channel attention from the Gram matrix; out = gamma * attended + x."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        f = x.flatten(2)  # N x C x HW
        energy = torch.bmm(f, f.transpose(1, 2))  # N x C x C
        # As in the reference code: subtract from the row max (numerically stable, favours dissimilar channels).
        energy = energy.amax(dim=-1, keepdim=True).expand_as(energy) - energy
        attn = torch.softmax(energy, dim=-1)
        out = torch.bmm(attn, f).view(n, c, h, w)
        return self.gamma * out + x


class DANetHead(nn.Module):
    """conv -> PAM -> conv and conv -> CAM -> conv in parallel, summed (the fused head feature)."""

    def __init__(self, in_channels: int, inter_channels: int) -> None:
        super().__init__()
        self.conv_pa_in = _conv_bn_relu(in_channels, inter_channels)
        self.conv_ca_in = _conv_bn_relu(in_channels, inter_channels)
        self.pam = PositionAttention(inter_channels)
        self.cam = ChannelAttention()
        self.conv_pa_out = _conv_bn_relu(inter_channels, inter_channels)
        self.conv_ca_out = _conv_bn_relu(inter_channels, inter_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pa = self.conv_pa_out(self.pam(self.conv_pa_in(x)))
        ca = self.conv_ca_out(self.cam(self.conv_ca_in(x)))
        return pa + ca, pa, ca


def _classifier(channels: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1))


class DANet(AuxSegmentationModel):
    """Encoder (timm ``features_only``, stride 8 where supported) + dual attention head + classifier.

    Features: every encoder level (shallow to deep) then the fused head feature. With ``aux_loss=True`` the
    two branch classifiers of the paper exist and ``forward_aux`` returns
    ``(logits, [position-branch logits, channel-branch logits])`` (for a deep-supervision loss);
    ``forward`` always returns only the fused logits.
    """

    def __init__(
        self,
        num_classes: int,
        encoder: str = "efficientnet_b3",
        output_stride: int = 8,
        head_channels: int | None = None,
        aux_loss: bool = False,
        encoder_pretrained: str | None = None,
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        self.encoder = _make_encoder(encoder, encoder_pretrained, output_stride, encoder_kwargs)
        enc_channels = list(self.encoder.feature_info.channels())
        deep = enc_channels[-1]
        inter = head_channels or max(deep // 4, 8)
        self.head = DANetHead(deep, inter)
        self.classifier = _classifier(inter, num_classes)
        self.aux_classifiers = (
            nn.ModuleList([_classifier(inter, num_classes), _classifier(inter, num_classes)]) if aux_loss else None
        )
        self.output_stride = 1  # convolutional encoder: any input size; logits are resized by the base class
        self.feature_channels = enc_channels + [inter]

    def _run(self, x: Tensor, with_aux: bool) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        feats = list(self.encoder(x))
        fused, pa, ca = self.head(feats[-1])
        logits = self.classifier(fused)
        aux: list[Tensor] = []
        if with_aux and self.aux_classifiers is not None:
            aux = [c(f) for c, f in zip(self.aux_classifiers, (pa, ca))]
        return logits, feats + [fused], aux

    @property
    def has_aux(self) -> bool:
        return self.aux_classifiers is not None

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())


def _make_encoder(name: str, pretrained: str | None, output_stride: int, kwargs: dict[str, Any]) -> nn.Module:
    if output_stride not in (8, 16, 32):
        raise UsageError(f"danet: output_stride must be 8, 16 or 32, got {output_stride!r}")
    if output_stride == 32:
        return create_timm_encoder(name, pretrained, **kwargs)
    try:
        return create_timm_encoder(name, pretrained, output_stride=output_stride, **kwargs)
    except (TypeError, AssertionError, ValueError) as exc:
        # Encoders without dilation support (e.g. some transformers) keep their native stride.
        log.warning(
            "danet: encoder %s does not support output_stride=%d (%s); using its default", name, output_stride, exc
        )
        return create_timm_encoder(name, pretrained, **kwargs)


@register_model
def danet(
    num_classes: int,
    *,
    encoder: str = "efficientnet_b3",
    output_stride: int = 8,
    head_channels: int | None = None,
    aux_loss: bool = False,
    pretrained: str | None = None,
    **encoder_kwargs: Any,
) -> nn.Module:
    """DANet (position + channel attention head) on a timm encoder, default efficientnet_b3 at stride 8."""
    local = local_weights_path(pretrained) if pretrained is not None else None
    model = DANet(
        num_classes,
        encoder=encoder,
        output_stride=output_stride,
        head_channels=head_channels,
        aux_loss=aux_loss,
        encoder_pretrained=None if local is not None else pretrained,
        **encoder_kwargs,
    )
    if local is not None:
        targets = {"model": model, "encoder": model.encoder}
        model.pretrained_report = load_local_weights(model, local, targets, "danet")
    return model

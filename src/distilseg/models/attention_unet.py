"""Attention U-Net (Oktay et al. 2018): additive attention gates filter each skip connection."""
from __future__ import annotations

from torch import nn

from .base import apply_seed_pretrained
from .registry import register_model
from .unet import UNet, check_unet_args

__all__ = ["AttentionUNet", "attention_unet"]


class AttentionUNet(UNet):
    """U-Net whose decoder stages weight skip features with attention gates before concatenation."""

    gated_skips = True


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

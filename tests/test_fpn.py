"""The FPN head: where it decodes (stride 4 or 8), that every parameter learns, and its argument errors."""
from __future__ import annotations

import pytest
import torch

from distilseg.errors import UsageError
from distilseg.models import create_model


@pytest.mark.parametrize("decode_stride", [4, 8])
def test_fpn_decodes_at_its_stride_and_returns_input_size_logits(decode_stride: int) -> None:
    torch.manual_seed(0)
    model = create_model("fpn", 5, encoder="efficientnet_lite0", encoder_depth=4, pyramid_channels=16,
                         segmentation_channels=8, decode_stride=decode_stride)
    x = torch.randn(2, 3, 64, 96)
    logits, feats = model._forward(x)
    assert logits.shape[-2:] == (64 // decode_stride, 96 // decode_stride)
    assert feats[-1].shape == (2, 8, 64 // decode_stride, 96 // decode_stride)  # the fused map
    assert len(model.lateral) == (3 if decode_stride == 4 else 2)  # levels 4/8/16 or 8/16
    out = model(x)
    assert out.shape == (2, 5, 64, 96)
    out.square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


def test_stride_8_head_is_cheaper_than_stride_4() -> None:
    kw = dict(encoder="efficientnet_lite0", encoder_depth=4, pyramid_channels=96, segmentation_channels=64)
    p4 = sum(p.numel() for p in create_model("fpn", 11, **kw).parameters())
    p8 = sum(p.numel() for p in create_model("fpn", 11, decode_stride=8, **kw).parameters())
    # one lateral (24 -> 96 + bias) and one 3x3 smoothing conv-BN (96 -> 64) fewer
    assert p4 - p8 == (24 * 96 + 96) + (96 * 64 * 9 + 2 * 64)


@pytest.mark.parametrize("bad", [2, 16, 32])
def test_fpn_refuses_other_decode_strides(bad: int) -> None:
    with pytest.raises(UsageError, match="decode_stride must be 4 or 8"):
        create_model("fpn", 5, encoder="efficientnet_lite0", decode_stride=bad)

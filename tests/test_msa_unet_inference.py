"""The inference form of the multi-scale attention U-Nets (folded multi-kernel convs, channels-last on the CPU)
gives the training form's outputs for the same weights; the weights and their names do not change."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distilseg.models import create_model
from distilseg.models.blocks import AsymConvBN


def _randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """BatchNorm statistics and affine parameters far from their initial 0/1 (what training leaves)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)


def _reference_asym(block: AsymConvBN, x: torch.Tensor) -> torch.Tensor:
    """The block as the original system wrote it: BN(3x3) + BN(1x3) + BN(3x1) [-> BN(1x1)], eval statistics."""
    def conv_bn(seq: nn.Sequential, t: torch.Tensor) -> torch.Tensor:
        conv, bn = seq[0], seq[1]
        y = F.conv2d(t, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)

    y = conv_bn(block.square, x) + conv_bn(block.hor, x) + conv_bn(block.ver, x)
    return conv_bn(block.pointwise, y) if block.pointwise is not None else y


@pytest.mark.parametrize("depthwise", [False, True])
def test_folded_block_matches_the_branch_sum(depthwise: bool) -> None:
    torch.manual_seed(0)
    block = AsymConvBN(6, 10, depthwise=depthwise)
    _randomize_norms(block)
    block.eval()
    x = torch.randn(2, 6, 13, 17)
    with torch.no_grad():
        expected = _reference_asym(block, x)
        got = block(x)
    assert got.shape == expected.shape == (2, 10, 13, 17)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    kernel, _, pw = block.folded_weights()
    assert kernel.shape[-2:] == (3, 3) and (pw is not None) == depthwise


@pytest.mark.parametrize("arch", ["msa_unet_student", "msa_unet"])
@pytest.mark.parametrize(("batch", "stripe_rows"), [(2, 32), (1, 32), (1, 5)])
def test_inference_form_matches_training_form(
    arch: str, batch: int, stripe_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One state dict, two formulations: the folded channels-last network and the original branch-by-branch
    NCHW one (every AsymConvBN replaced by the reference above) agree on the logits and every feature map.

    Batch 1 takes the decoder's lower-traffic form (attention scale in the fusion kernel, fusion in bands of
    rows); 5-row bands put band borders, with their halo rows, inside every decoder level (48 rows at level 0)."""
    from distilseg.models import msa_unet

    monkeypatch.setattr(msa_unet, "STRIPE_ROWS", stripe_rows)
    torch.manual_seed(0)
    model = create_model(arch, 5, base_width=8)
    _randomize_norms(model, seed=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    x = torch.randn(batch, 3, 40, 56)  # not a multiple of the output stride: the padding path too
    lower_traffic_calls = []
    folded_forward = msa_unet.DecoderStage._folded_forward

    def spy(self, *args):
        lower_traffic_calls.append(args[-1])
        return folded_forward(self, *args)

    monkeypatch.setattr(msa_unet.DecoderStage, "_folded_forward", spy)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
    # batch 1: all four decoder stages (levels 3..0) took the lower-traffic form; batch 2: none did
    assert [tuple(size) for size in lower_traffic_calls] == ([(6, 8), (12, 16), (24, 32), (48, 64)] if batch == 1
                                                              else [])

    reference = create_model(arch, 5, base_width=8)
    assert reference.load_state_dict(state, strict=True)  # the same names and shapes: nothing was added
    reference.eval()
    monkeypatch.setattr(AsymConvBN, "forward", _reference_asym)
    monkeypatch.setattr(msa_unet, "_nhwc_inference", lambda model, x: False)
    with torch.no_grad():
        ref_logits, ref_feats = reference(x, return_features=True)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
    assert len(feats) == len(ref_feats)
    for f, r in zip(feats, ref_feats):
        torch.testing.assert_close(f, r, rtol=1e-4, atol=1e-4)


def test_training_mode_still_trains_every_branch() -> None:
    """In training the three branches run (their BatchNorms update and every kernel gets a gradient)."""
    torch.manual_seed(0)
    block = AsymConvBN(4, 4, depthwise=True).train()
    before = block.hor[1].running_mean.clone()
    block(torch.randn(2, 4, 9, 9)).sum().backward()
    assert not torch.equal(before, block.hor[1].running_mean)
    for seq in (block.square, block.hor, block.ver, block.pointwise):
        assert seq[0].weight.grad is not None and seq[0].weight.grad.abs().sum() > 0

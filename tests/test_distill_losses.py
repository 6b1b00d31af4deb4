"""KD loss terms, spec parsing and the Distiller hook (pure tensors: fast)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distilseg.distill.distiller import Distiller
from distilseg.distill.losses import (
    ChannelWiseDistillation,
    FeatureImitation,
    PixelKLDivergence,
    channel_distributions,
    parse_kd_spec,
    resolve_kd_spec,
)
from distilseg.errors import UsageError


def _pair(seed: int = 0, shape=(2, 3, 4, 5), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=g, dtype=dtype)
    t = torch.randn(shape, generator=g, dtype=dtype)
    return s, t


def _target(shape=(2, 4, 5)):
    tgt = torch.zeros(shape, dtype=torch.long)
    tgt[:, 0, :] = 255  # first row void
    tgt[0, 2, 3] = 255
    tgt[:, 1, :] = 1
    return tgt


def _losses():
    return [
        PixelKLDivergence(6.0),
        ChannelWiseDistillation(4.0),
        FeatureImitation(3, 3),
        FeatureImitation(3, 3, normalize=True),
    ]


@pytest.mark.parametrize("loss", _losses(), ids=["kl", "cwd", "feat", "feat_norm"])
def test_zero_when_equal_positive_otherwise(loss):
    s, t = _pair()
    tgt = _target()
    assert loss(t.clone(), t, tgt).item() == pytest.approx(0.0, abs=1e-6)
    assert loss(s, t, tgt).item() > 1e-3
    assert loss(s, t).item() > 1e-3


@pytest.mark.parametrize("loss", _losses(), ids=["kl", "cwd", "feat", "feat_norm"])
def test_gradcheck_double(loss):
    loss = loss.double()
    s, t = _pair(1, (1, 3, 4, 5), torch.float64)
    s.requires_grad_(True)
    tgt = _target((1, 4, 5))
    assert torch.autograd.gradcheck(lambda x: loss(x, t, tgt), (s,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("loss", _losses(), ids=["kl", "cwd", "feat", "feat_norm"])
def test_void_pixels_change_neither_loss_nor_gradient(loss):
    s, t = _pair(2)
    tgt = _target()
    void = (tgt == 255)[:, None].expand_as(s)
    s1 = s.clone().requires_grad_(True)
    l1 = loss(s1, t, tgt)
    (g1,) = torch.autograd.grad(l1, s1)
    s2 = torch.where(void, s * 10 + 7, s).requires_grad_(True)
    t2 = torch.where(void, -t * 5 - 3, t)
    l2 = loss(s2, t2, tgt)
    (g2,) = torch.autograd.grad(l2, s2)
    assert l2.item() == pytest.approx(l1.item(), rel=1e-5, abs=1e-7)
    assert torch.allclose(g1, g2, atol=1e-7)
    assert float(g1[void].abs().max()) == 0.0


def test_pixel_kl_value_and_t2_scaling():
    s, t = _pair(3)
    T = 6.0
    ps, pt = F.log_softmax(s / T, 1), F.log_softmax(t / T, 1)
    expected = (pt.exp() * (pt - ps)).sum(1).mean() * T * T
    assert PixelKLDivergence(T)(s, t).item() == pytest.approx(expected.item(), rel=1e-5)
    # same softened distributions at T=2 and T=4 (inputs scaled by 2): values differ exactly by 4 = (4/2)^2
    a = PixelKLDivergence(2.0)(s, t).item()
    b = PixelKLDivergence(4.0)(2 * s, 2 * t).item()
    assert b == pytest.approx(4 * a, rel=1e-5)


def test_pixel_kl_resizes_teacher():
    s, _ = _pair(4, (1, 3, 4, 4))
    t_small = s.clone()
    t_big = F.interpolate(t_small, size=(8, 8), mode="bilinear", align_corners=False)
    loss = PixelKLDivergence(1.0)
    # resizing the teacher back to 4x4 is what the loss does: same result as giving it pre-resized
    expected = loss(s, F.interpolate(t_big, size=(4, 4), mode="bilinear", align_corners=False))
    assert loss(s, t_big).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cwd_distributions_sum_to_one_and_value():
    s, t = _pair(5)
    tgt = _target()
    mask = tgt != 255
    d = channel_distributions(s, 4.0, mask)
    assert d.shape == (2, 3, 20)
    assert torch.allclose(d.sum(-1), torch.ones(2, 3), atol=1e-6)
    assert float(d.reshape(2, 3, 4, 5)[~mask[:, None].expand(2, 3, 4, 5)].abs().max()) == 0.0
    T = 4.0
    ls = F.log_softmax(s.reshape(2, 3, -1) / T, -1)
    lt = F.log_softmax(t.reshape(2, 3, -1) / T, -1)
    expected = (lt.exp() * (lt - ls)).sum(-1).mean() * T * T
    assert ChannelWiseDistillation(T)(s, t).item() == pytest.approx(expected.item(), rel=1e-5)
    a = ChannelWiseDistillation(2.0)(s, t).item()
    b = ChannelWiseDistillation(4.0)(2 * s, 2 * t).item()
    assert b == pytest.approx(4 * a, rel=1e-5)


def test_cwd_feature_adapter_and_feature_imitation_shapes():
    s = torch.randn(2, 4, 3, 3)
    t = torch.randn(2, 6, 6, 6)
    cwd = ChannelWiseDistillation(4.0, student_channels=4, teacher_channels=6)
    assert cwd.adapter is not None and cwd(s, t).item() > 0
    fi = FeatureImitation(4, 6)
    assert fi(s, t).item() > 0
    assert sum(p.numel() for p in fi.parameters()) == 4 * 6 + 6


def test_parse_kd_spec_and_presets():
    terms = parse_kd_spec("logits:0.35,cwd@T=3:1.0,feature@stage=-2@norm=1:0.5")
    assert terms == [
        ("logits", 0.35, {"T": 6.0}),
        ("cwd", 1.0, {"T": 3.0, "stage": None}),
        ("feature", 0.5, {"stage": -2, "norm": 1}),
    ]
    assert parse_kd_spec("kl@T=2") == [("logits", 1.0, {"T": 2.0})]
    assert resolve_kd_spec("original") == ([("logits", 0.35, {"T": 6.0})], 0.65)
    assert resolve_kd_spec("original", 0.5)[1] == 0.5
    assert resolve_kd_spec("cwd")[1] == 1.0
    assert resolve_kd_spec("original,cwd:2") == (
        [("logits", 0.35, {"T": 6.0}), ("cwd", 2.0, {"T": 4.0, "stage": None})], 0.65)
    for bad in ("", "nope:1", "logits:x", "logits@T=0", "logits@Q=1", "logits@T", "logits:-1", "a,,b"):
        with pytest.raises(UsageError):
            parse_kd_spec(bad)


class _TinyNet(nn.Module):
    """Stand-in with the model contract: forward(x, return_features) and feature_channels."""

    def __init__(self, width: int, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Conv2d(width, classes, 1)
        self.feature_channels = [width]

    def forward(self, x, return_features=False):
        f = self.body(x)
        y = self.head(f)
        return (y, [f]) if return_features else y


def test_distiller_frozen_teacher_terms_and_state_dict():
    torch.manual_seed(0)
    teacher, student = _TinyNet(8), _TinyNet(4)
    d = Distiller(teacher, "logits@T=6:0.35,cwd:1,feature:0.5", student.feature_channels, hard_weight=None)
    assert d.hard_weight == 1.0
    d.train()
    assert d.training and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    trainable = list(d.trainable_parameters())
    assert {id(p) for p in trainable} == {id(p) for p in d.losses["feature"].adapter.parameters()}
    assert not any(k.startswith("teacher.") for k in d.state_dict())
    assert set(d.state_dict()) == {"losses.feature.adapter.weight", "losses.feature.adapter.bias"}
    d.load_state_dict(d.state_dict(), strict=True)  # teacher keys are not expected back
    bn_mean = teacher.body[1].running_mean.clone()
    x = torch.randn(2, 3, 6, 7)
    tgt = torch.randint(0, 3, (2, 6, 7))
    logits, feats = student(x, return_features=True)
    terms = d(x, logits, feats, tgt)
    assert set(terms) == {"kd_logits", "kd_cwd", "kd_feature"}
    t_logits = teacher(x)
    assert terms["kd_logits"].item() == pytest.approx(0.35 * PixelKLDivergence(6.0)(logits, t_logits, tgt).item(), rel=1e-5)
    sum(terms.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert student.head.weight.grad is not None and d.losses["feature"].adapter.weight.grad is not None
    assert torch.equal(teacher.body[1].running_mean, bn_mean)  # eval mode: BN statistics untouched
    d2 = Distiller(_TinyNet(8), "original", [4])
    assert d2.hard_weight == 0.65 and list(d2.trainable_parameters()) == []
    with pytest.raises(UsageError):
        Distiller(_TinyNet(8), "feature@stage=3", [4])
    with pytest.raises(UsageError):
        Distiller(_TinyNet(8, classes=5), "logits", [4])(x, logits, feats, tgt)

"""Optimizer param groups and learning-rate schedule shapes (no data needed)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distilseg.training.optim import (
    build_optimizer,
    build_param_groups,
    build_scheduler,
    freeze_encoder,
    lr_multiplier,
)
from distilseg.errors import UsageError


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)  # weight 4-D (decay) + bias (no decay)
        self.norm = nn.GroupNorm(2, 4)
        self.scale = nn.Parameter(torch.ones(4))  # 1-D: no decay


def _group_of(groups, p):
    return [g for g in groups if any(q is p for q in g["params"])]


def test_no_weight_decay_on_norm_bias_and_1d():
    net = _Net()
    groups = build_param_groups(net, lr=0.1, weight_decay=0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(net.encoder[0].weight), id(net.head.weight)}
    for p in (net.encoder[1].weight, net.encoder[1].bias, net.head.bias, net.norm.weight, net.norm.bias, net.scale):
        (g,) = _group_of(groups, p)
        assert g["weight_decay"] == 0.0
    # every trainable parameter is in exactly one group
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())


def test_encoder_lr_multiplier_and_freeze():
    net = _Net()
    groups = build_param_groups(net, lr=0.1, weight_decay=0.0, encoder_lr_mult=0.1)
    (g,) = _group_of(groups, net.encoder[0].weight)
    assert g["lr"] == pytest.approx(0.01)
    (g,) = _group_of(groups, net.head.weight)
    assert g["lr"] == pytest.approx(0.1)
    assert freeze_encoder(net) == 3
    groups = build_param_groups(net, lr=0.1, weight_decay=0.0)
    ids = {id(p) for g in groups for p in g["params"]}
    assert id(net.encoder[0].weight) not in ids and id(net.head.weight) in ids


def test_freeze_without_encoder_is_usage_error():
    with pytest.raises(UsageError):
        freeze_encoder(nn.Conv2d(3, 2, 1))


def _curve(name, total=100, per_epoch=10, warmup_epochs=0.0, gamma=0.5):
    w = nn.Parameter(torch.zeros(1))
    opt = build_optimizer("sgd", [{"params": [w]}], lr=1.0)
    sched = build_scheduler(opt, name, total, per_epoch, warmup_epochs, gamma)["scheduler"]
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_exponential_multiplies_by_gamma_per_epoch():
    lrs = _curve("exponential", gamma=0.5)
    for step, lr in enumerate(lrs):
        assert lr == pytest.approx(0.5 ** (step // 10))


def test_poly_decreases_to_near_zero():
    lrs = _curve("poly")
    assert lrs[0] == pytest.approx(1.0)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] == pytest.approx((1 / 100) ** 0.9)
    assert lrs[-1] < 0.02


def test_cosine_with_warmup():
    lrs = _curve("cosine", warmup_epochs=1.0)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5)
    assert lrs[-1] < 0.001


def test_wsd_warmup_flat_then_decay():
    lrs = _curve("wsd", warmup_epochs=1.0)
    assert lrs[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert lrs[10:80] == pytest.approx([1.0] * 70)  # stable middle
    assert lrs[80:] == pytest.approx([1 - i / 20 for i in range(20)])


def test_none_and_unknown():
    w = nn.Parameter(torch.zeros(1))
    opt = build_optimizer("adamw", [{"params": [w]}], lr=1.0)
    assert build_scheduler(opt, "none", 10, 5) is None
    with pytest.raises(UsageError):
        build_scheduler(opt, "step", 10, 5)
    with pytest.raises(UsageError):
        build_optimizer("lion", [{"params": [w]}], lr=1.0)
    assert lr_multiplier("none", 3, 10, 5) == 1.0

"""Losses: near-zero when perfect, ignore pixels inert, gradcheck, focal(gamma=0) == CE, spec parsing."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distilseg.errors import UsageError
from distilseg.losses import (
    LOSS_NAMES,
    FocalLoss,
    LovaszSoftmaxLoss,
    WeightedSum,
    build_loss,
    class_weights_from_counts,
    parse_loss_spec,
)

K = 3


def _target(seed: int = 0, n: int = 2, h: int = 6, w: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, K, (n, h, w), generator=g)
    t[:, 0, :2] = 255
    return t


def _single(name: str) -> torch.nn.Module:
    return build_loss(name, K).losses[name]


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_perfect_near_zero_wrong_large(name: str) -> None:
    target = _target()
    perfect = F.one_hot(target.clamp(max=K - 1), K).permute(0, 3, 1, 2).float() * 30.0
    wrong = F.one_hot((target.clamp(max=K - 1) + 1) % K, K).permute(0, 3, 1, 2).float() * 30.0
    loss = _single(name)
    good, bad = loss(perfect, target).item(), loss(wrong, target).item()
    assert good < 1e-3, good
    assert bad > 0.5, bad


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_ignore_pixels_have_no_effect(name: str) -> None:
    target = _target(1)
    ignored = target == 255
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, K, 6, 6, generator=g, dtype=torch.float64)
    b = a.clone()
    noise = 100.0 * torch.randn(int(ignored.sum()) * K, generator=g, dtype=torch.float64)
    b[ignored.unsqueeze(1).expand_as(b)] = noise
    loss = _single(name)
    a.requires_grad_(True)
    b.requires_grad_(True)
    la, lb = loss(a, target), loss(b, target)
    la.backward()
    lb.backward()
    assert torch.allclose(la, lb, rtol=0, atol=1e-12)
    assert torch.allclose(a.grad, b.grad, rtol=0, atol=1e-12)
    assert a.grad[ignored.unsqueeze(1).expand_as(a)].abs().max().item() == 0.0
    assert a.grad.abs().sum().item() > 0


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_gradcheck_double(name: str) -> None:
    target = torch.tensor([[[0, 1, 2, 1], [2, 255, 0, 0], [1, 1, 2, 0], [0, 2, 255, 1]]])
    logits = torch.randn(1, K, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    logits.requires_grad_(True)
    loss = _single(name)
    assert torch.autograd.gradcheck(lambda x: loss(x, target), (logits,), eps=1e-6, atol=1e-5)


def test_focal_gamma0_equals_ce_with_and_without_weights() -> None:
    target = _target(2)
    logits = torch.randn(2, K, 6, 6, generator=torch.Generator().manual_seed(7))
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(FocalLoss(gamma=0.0)(logits, target), ce, atol=1e-6)
    w = torch.tensor([0.2, 1.0, 3.0])
    cew = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert torch.allclose(FocalLoss(gamma=0.0, alpha=w)(logits, target), cew, atol=1e-6)
    assert FocalLoss(gamma=2.0)(logits, target) < ce  # focusing only shrinks each term


def test_class_weights_change_ce_like_torch() -> None:
    target = _target(4)
    logits = torch.randn(2, K, 6, 6, generator=torch.Generator().manual_seed(8))
    w = torch.tensor([0.5, 2.0, 1.0])
    plain = build_loss("ce", K)(logits, target)
    weighted = build_loss("ce", K, class_weights=w)(logits, target)
    assert torch.allclose(weighted, F.cross_entropy(logits, target, weight=w, ignore_index=255), atol=1e-6)
    assert not torch.allclose(weighted, plain)
    with pytest.raises(UsageError, match="class weights"):
        build_loss("ce", K, class_weights=[1.0, 2.0])
    smooth = build_loss("ce", K, label_smoothing=0.1)(logits, target)
    assert torch.allclose(smooth, F.cross_entropy(logits, target, ignore_index=255, label_smoothing=0.1), atol=1e-6)
    assert build_loss("lovasz", K, lovasz_per_image=True).losses["lovasz"].per_image is True


def test_spec_parsing() -> None:
    assert parse_loss_spec("ce") == [("ce", 1.0)]
    assert parse_loss_spec(" ce:1, dice:0.5 ") == [("ce", 1.0), ("dice", 0.5)]
    assert parse_loss_spec("lovasz:2,focal_tversky") == [("lovasz", 2.0), ("focal_tversky", 1.0)]
    for bad, msg in [
        ("", "empty"),
        ("cee", "valid names: ce, focal, dice, tversky, focal_tversky, lovasz"),
        ("ce:x", "not a number"),
        ("ce:-1", ">= 0"),
        ("ce,,dice", "empty term"),
        ("ce,ce:2", "twice"),
    ]:
        with pytest.raises(UsageError, match=msg):
            parse_loss_spec(bad)


def test_weighted_sum_equals_sum_of_weighted_terms() -> None:
    target = _target(5)
    logits = torch.randn(2, K, 6, 6, generator=torch.Generator().manual_seed(9))
    loss = build_loss("ce:1,dice:0.5,lovasz:0.25", K)
    assert isinstance(loss, WeightedSum)
    total, terms = loss.forward_terms(logits, target)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    dice = _single("dice")(logits, target)
    lov = _single("lovasz")(logits, target)
    assert torch.allclose(total, ce + 0.5 * dice + 0.25 * lov, atol=1e-6)
    assert set(loss.last_terms) == {"ce", "dice", "lovasz"}
    assert loss.last_terms["dice"] == pytest.approx(0.5 * dice.item(), abs=1e-6)
    assert sum(loss.last_terms.values()) == pytest.approx(total.item(), abs=1e-5)


def test_all_ignored_gives_zero_with_graph() -> None:
    target = torch.full((1, 4, 4), 255)
    logits = torch.randn(1, K, 4, 4, requires_grad=True)
    loss = build_loss(",".join(LOSS_NAMES), K)
    value = loss(logits, target)
    value.backward()
    assert value.item() == 0.0
    assert logits.grad is not None and logits.grad.abs().max().item() == 0.0


def test_lovasz_hand_value_and_per_image() -> None:
    # One image, 2 classes, 2 pixels labelled 0 and 1, soft predictions p(class 0) = 0.75, 0.25 (both right).
    # Each class: errors [0.25, 0.25]. Whatever the tie order, the Lovasz gradient entries are the Jaccard
    # increments, which sum to 1 (fg [1,0]: [1 - 0/1, 1 - 1] = [1, 0]; fg [0,1]: [1 - 1/2, 1 - 1/2]),
    # so each class loss is 0.25 * 1 and the mean is 0.25.
    p0 = torch.tensor([0.75, 0.25])
    logits = torch.log(torch.stack([p0, 1 - p0])).reshape(1, 2, 1, 2)
    target = torch.tensor([[[0, 1]]])
    assert LovaszSoftmaxLoss()(logits, target).item() == pytest.approx(0.25, abs=1e-6)
    two = torch.cat([logits, logits.flip(-1)])
    targets = torch.cat([target, target.flip(-1)])
    assert LovaszSoftmaxLoss(per_image=True)(two, targets).item() == pytest.approx(0.25, abs=1e-6)


def test_class_weights_from_counts() -> None:
    w = class_weights_from_counts([10, 30, 60, 0], "median_freq")
    # freqs 0.1, 0.3, 0.6; median 0.3 -> 3, 1, 0.5; unseen class -> 0
    assert torch.allclose(w, torch.tensor([3.0, 1.0, 0.5, 0.0]))
    w2 = class_weights_from_counts(torch.tensor([50, 50]), "inv_log")
    assert torch.allclose(w2, torch.full((2,), 1.0 / torch.log(torch.tensor(1.52)).item()))
    with pytest.raises(UsageError, match="median_freq"):
        class_weights_from_counts([1, 2], "sqrt")
    with pytest.raises(UsageError):
        class_weights_from_counts([0, 0])


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bfloat16_logits_are_scored_in_float32(name: str) -> None:
    target = _target(6)
    logits = torch.randn(2, K, 6, 6, generator=torch.Generator().manual_seed(10)).bfloat16()
    loss = _single(name)
    low = loss(logits, target)
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(loss(logits.float(), target).item(), abs=1e-6)

"""Segmentation losses and ``build_loss("ce:1,dice:0.5")``.

Every loss takes ``logits N,C,H,W`` and ``target N,H,W`` (long, ``ignore_index`` = ignore) and returns a
scalar. Ignored pixels contribute nothing: neither to the value nor to the gradient (they are masked out
of both prediction and target, not merely given label 0). When a batch holds no valid pixel at all the
loss is an exact zero that still depends on the logits, so ``backward()`` works.

Pixel losses (``ce``, ``focal``) use ``class_weights``; the region losses (``dice``, ``tversky``,
``focal_tversky``, ``lovasz``) average over the classes present in the batch's ground truth and ignore
weights: they are already insensitive to class frequency.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import UsageError

__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "DiceLoss",
    "TverskyLoss",
    "FocalTverskyLoss",
    "LovaszSoftmaxLoss",
    "WeightedSum",
    "LOSS_NAMES",
    "build_loss",
    "parse_loss_spec",
    "class_weights_from_counts",
]


def _check(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() != 4 or target.dim() != 3 or (logits.shape[0], *logits.shape[2:]) != tuple(target.shape):
        raise ValueError(
            f"expected logits N,C,H,W and target N,H,W of the same N,H,W; got {tuple(logits.shape)} "
            f"and {tuple(target.shape)}"
        )


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half/bfloat16 logits (mixed precision) are scored in float32: sums over millions of pixels
    lose too much in 16 bits. float32/float64 pass through unchanged (gradcheck runs in float64)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _zero(logits: torch.Tensor) -> torch.Tensor:
    """A zero that keeps the graph (a batch with only ignore pixels)."""
    return logits.sum() * 0.0


class CrossEntropyLoss(nn.Module):
    """Pixel cross-entropy with ignore index, optional class weights and label smoothing."""

    def __init__(
        self, ignore_index: int = 255, class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.label_smoothing = float(label_smoothing)
        # non-persistent: the loss is rebuilt from the run config, so checkpoints do not depend on it
        self.register_buffer(
            "weight", None if class_weights is None else torch.as_tensor(class_weights).float(), persistent=False
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target)
        if not bool((target != self.ignore_index).any()):
            return _zero(logits)
        logits = _upcast(logits)
        weight = None if self.weight is None else self.weight.to(logits.device, logits.dtype)
        return F.cross_entropy(
            logits, target, weight=weight, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing
        )


class FocalLoss(nn.Module):
    """Focal loss (Lin et al.): ``-alpha_t (1 - p_t)^gamma log p_t``, mean over valid pixels.

    ``alpha`` is a per-class weight tensor (or ``None``); the mean is then weighted like
    ``F.cross_entropy``'s, so ``gamma=0`` reproduces (weighted) cross-entropy exactly.
    """

    def __init__(
        self, gamma: float = 2.0, alpha: torch.Tensor | Sequence[float] | None = None, ignore_index: int = 255
    ) -> None:
        super().__init__()
        self.gamma = float(gamma)
        self.ignore_index = ignore_index
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha).float(), persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target)
        valid = target != self.ignore_index
        if not bool(valid.any()):
            return _zero(logits)
        logits = _upcast(logits)
        logp = F.log_softmax(logits, dim=1)
        t = target.masked_fill(~valid, 0)
        logpt = logp.gather(1, t.unsqueeze(1)).squeeze(1)
        pt = logpt.exp()
        # ignored pixels are multiplied by an exact 0 (value and gradient); no boolean indexing copies
        w = valid.to(logits.dtype)
        if self.alpha is not None:
            w = w * self.alpha.to(logits.device, logits.dtype)[t]
        loss = -((1.0 - pt).clamp(min=0.0) ** self.gamma) * logpt
        return (w * loss).sum() / w.sum().clamp(min=torch.finfo(logits.dtype).tiny)


def _region_stats(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class soft ``tp, fp, fn`` over the batch (ignore pixels masked out) and the present mask.

    ``fp = sum(p) - tp`` and ``fn = count - tp``: one product with a boolean one-hot instead of three
    (deterministic, unlike scatter/index_add on GPU).
    """
    _check(logits, target)
    logits = _upcast(logits)
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1)
    probs = F.softmax(logits, dim=1) * valid.to(logits.dtype)
    classes = torch.arange(num_classes, device=target.device).view(1, num_classes, 1, 1)
    onehot = (target.unsqueeze(1) == classes) & valid
    dims = (0, 2, 3)
    tp = (probs * onehot.to(logits.dtype)).sum(dims)
    count = onehot.sum(dims).to(logits.dtype)
    fp = probs.sum(dims) - tp
    fn = count - tp
    return tp, fp, fn, count > 0


class DiceLoss(nn.Module):
    """Soft multi-class Dice, ``1 - mean_c (2 tp + s) / (2 tp + fp + fn + s)`` over present classes."""

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        tp, fp, fn, present = _region_stats(logits, target, self.ignore_index)
        if not bool(present.any()):
            return _zero(logits)
        dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth)
        return 1.0 - dice[present].mean()


class TverskyLoss(nn.Module):
    """Tversky loss: ``1 - (tp + s) / (tp + alpha fp + beta fn + s)``, mean over present classes.

    ``beta > alpha`` (default 0.3 / 0.7) penalizes missed pixels more than false alarms: better recall
    on small classes.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, ignore_index: int = 255, smooth: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)
        self.ignore_index = ignore_index
        self.smooth = float(smooth)

    def index(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tp, fp, fn, present = _region_stats(logits, target, self.ignore_index)
        ti = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return ti, present

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ti, present = self.index(logits, target)
        if not bool(present.any()):
            return _zero(logits)
        return (1.0 - ti[present]).mean()


class FocalTverskyLoss(TverskyLoss):
    """Focal Tversky (Abraham & Khan): ``mean_c (1 - TI_c)^gamma`` with ``gamma = 0.75``."""

    def __init__(
        self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, ignore_index: int = 255, smooth: float = 1.0
    ) -> None:
        super().__init__(alpha, beta, ignore_index, smooth)
        self.gamma = float(gamma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ti, present = self.index(logits, target)
        if not bool(present.any()):
            return _zero(logits)
        # clamp keeps the gradient finite where TI == 1 exactly (x^0.75 has an infinite slope at 0)
        return ((1.0 - ti[present]).clamp(min=1e-12) ** self.gamma).mean()


def _lovasz_grad(gt_sorted: torch.Tensor) -> torch.Tensor:
    """Gradient of the Lovász extension of the Jaccard loss w.r.t. sorted errors (Berman et al., Alg. 1)."""
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if gt_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def _lovasz_flat(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Lovász-softmax over flattened valid pixels (P,C), classes present in ``labels``; None if none."""
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).to(probs.dtype)
        if not bool(fg.any()):
            continue
        errors = (fg - probs[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, _lovasz_grad(fg[perm])))
    return torch.stack(losses).mean() if losses else None


class LovaszSoftmaxLoss(nn.Module):
    """Lovász-softmax (Berman et al. 2018): a convex surrogate of 1 - IoU, over present classes.

    ``per_image=True`` averages the loss of each image; otherwise the whole batch is one pixel set.
    """

    def __init__(self, ignore_index: int = 255, per_image: bool = False) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.per_image = bool(per_image)

    def _one(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
        probs = F.softmax(_upcast(logits), dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
        labels = target.reshape(-1)
        valid = labels != self.ignore_index
        return _lovasz_flat(probs[valid], labels[valid])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check(logits, target)
        if self.per_image:
            parts = [self._one(logits[i : i + 1], target[i : i + 1]) for i in range(logits.shape[0])]
            kept = [p for p in parts if p is not None]
            return torch.stack(kept).mean() if kept else _zero(logits)
        loss = self._one(logits, target)
        return loss if loss is not None else _zero(logits)


_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "ce": lambda ig, w, o: CrossEntropyLoss(ignore_index=ig, class_weights=w, label_smoothing=o["label_smoothing"]),
    "focal": lambda ig, w, o: FocalLoss(gamma=2.0, alpha=w, ignore_index=ig),
    "dice": lambda ig, w, o: DiceLoss(ignore_index=ig),
    "tversky": lambda ig, w, o: TverskyLoss(ignore_index=ig),
    "focal_tversky": lambda ig, w, o: FocalTverskyLoss(ignore_index=ig),
    "lovasz": lambda ig, w, o: LovaszSoftmaxLoss(ignore_index=ig, per_image=o["lovasz_per_image"]),
}
#: Names ``build_loss`` understands.
LOSS_NAMES: tuple[str, ...] = tuple(_FACTORIES)


class WeightedSum(nn.Module):
    """``sum_i w_i * loss_i``; remembers each weighted term of the last call for logging.

    ``forward_terms`` returns ``(total, {name: weighted term tensor})``. ``last_terms`` gives the same
    terms as floats, converted only when read (no device sync per step unless someone logs them).
    """

    def __init__(self, terms: dict[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise UsageError("a loss needs at least one term")
        self.weights = {name: float(w) for name, (w, _) in terms.items()}
        self.losses = nn.ModuleDict({name: module for name, (_, module) in terms.items()})
        self._last: dict[str, torch.Tensor] = {}

    def forward_terms(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        terms = {name: self.weights[name] * module(logits, target) for name, module in self.losses.items()}
        total = torch.stack(list(terms.values())).sum()
        self._last = {name: value.detach() for name, value in terms.items()}
        return total, terms

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.forward_terms(logits, target)[0]

    @property
    def last_terms(self) -> dict[str, float]:
        return {name: float(value) for name, value in self._last.items()}

    def extra_repr(self) -> str:
        return ",".join(f"{n}:{w:g}" for n, w in self.weights.items())


def parse_loss_spec(spec: str) -> list[tuple[str, float]]:
    """``"ce:1,dice:0.5"`` -> ``[("ce", 1.0), ("dice", 0.5)]``; ``"ce"`` means ``ce:1``."""
    from .parsing import parse_weighted_terms

    valid = ", ".join(LOSS_NAMES)
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"empty loss spec; use e.g. 'ce:1,dice:0.5' with names from: {valid}")
    out: list[tuple[str, float]] = []
    for name, weight in parse_weighted_terms(spec, "--loss"):
        name = name.lower()
        if name not in _FACTORIES:
            raise UsageError(f"unknown loss {name!r} in spec {spec!r}; valid names: {valid}")
        if any(name == n for n, _ in out):
            raise UsageError(f"loss {name!r} appears twice in spec {spec!r}")
        out.append((name, weight))
    return out


def build_loss(
    spec: str,
    num_classes: int,
    ignore_index: int = 255,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    *,
    label_smoothing: float = 0.0,
    lovasz_per_image: bool = False,
) -> WeightedSum:
    """Build a ``WeightedSum`` from a spec such as ``"ce:1,dice:0.5"`` (names: ``LOSS_NAMES``).

    ``class_weights`` (K,) weight ``ce`` and ``focal``; ``label_smoothing`` applies to ``ce``;
    ``lovasz_per_image`` averages Lovász-softmax per image instead of over the whole batch.
    """
    if class_weights is not None:
        class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
        if class_weights.shape != (num_classes,):
            raise UsageError(f"{tuple(class_weights.shape)} class weights given for {num_classes} classes")
    if not 0.0 <= float(label_smoothing) < 1.0:
        raise UsageError(f"label smoothing must lie in [0, 1), got {label_smoothing}")
    options = {"label_smoothing": float(label_smoothing), "lovasz_per_image": bool(lovasz_per_image)}
    terms = {
        name: (weight, _FACTORIES[name](ignore_index, class_weights, options))
        for name, weight in parse_loss_spec(spec)
    }
    return WeightedSum(terms)


def class_weights_from_counts(counts: Any, method: str = "median_freq") -> torch.Tensor:
    """Per-class loss weights (float32 tensor) from per-class pixel counts.

    Delegates to ``distilseg.data.stats.class_weights`` (one definition for ``data inspect`` and
    training): ``median_freq`` (Eigen & Fergus) ``median(freq) / freq_c`` over the classes that occur,
    0 for a class with no pixels; ``inv_log`` (ENet) ``1 / ln(1.02 + p_c)``.
    """
    from .data.stats import class_weights

    counts_np = np.asarray(counts.detach().cpu() if isinstance(counts, torch.Tensor) else counts, dtype=np.float64)
    if counts_np.ndim != 1 or counts_np.size == 0 or (counts_np < 0).any() or not np.isfinite(counts_np).all():
        raise UsageError("class pixel counts must be a non-empty 1-D list of non-negative numbers")
    if counts_np.sum() <= 0:
        raise UsageError("class pixel counts are all zero: no labelled pixels to weight by")
    return torch.as_tensor(np.asarray(class_weights(counts_np, method), dtype=np.float64), dtype=torch.float32)

"""Knowledge-distillation loss terms and the ``--kd`` spec parser.

Why these three: pixel-wise KL (Hinton-style, on softened class distributions) is what the original
system used (T = 6, soft weight 0.35, hard weight 0.65); channel-wise distillation (Shu et al. 2021) transfers
*where* each class/channel fires and is the strongest simple logit KD for segmentation; FitNets-style feature
imitation transfers intermediate representations. All are ignore-aware: pixels whose target is
``ignore_index`` (255, void) contribute nothing to the value and nothing to the gradient.

Every term computes in float32 (or float64 when given float64) even under autocast, because softmax/KL in
float16 underflows.
"""
from __future__ import annotations

import math

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError

__all__ = [
    "PixelKLDivergence",
    "ChannelWiseDistillation",
    "FeatureImitation",
    "channel_distributions",
    "parse_kd_spec",
    "resolve_kd_spec",
    "KD_PRESETS",
    "KD_SPEC_HELP",
]

# Value written at void positions before CWD's spatial softmax: exp(-1e4) is exactly 0 in float32/64, so
# void positions receive zero probability in both teacher and student maps (and thus zero KL and gradient),
# while staying finite (no inf - inf = nan). The masking happens after dividing by T.
VOID_FILL = -1.0e4


def _float(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def valid_mask(target: Tensor | None, size: tuple[int, int], batch: int, device, ignore_index: int = 255) -> Tensor:
    """Boolean ``N x H x W`` mask of non-void pixels at ``size`` (nearest resize of the target)."""
    if target is None:
        return torch.ones((batch, *size), dtype=torch.bool, device=device)
    if target.dim() != 3:
        raise ValueError(f"target must be N x H x W, got shape {tuple(target.shape)}")
    if tuple(target.shape[-2:]) != tuple(size):
        target = F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return (target != ignore_index).to(device)


class PixelKLDivergence(nn.Module):
    """Pixel-wise ``KL(softmax(t/T) || softmax(s/T)) * T^2`` over classes, averaged over non-void pixels.

    Teacher logits are resized (bilinear) to the student's spatial size when they differ. The ``T^2``
    factor keeps gradient magnitudes comparable across temperatures (Hinton et al. 2015).
    """

    def __init__(self, temperature: float = 6.0, ignore_index: int = 255) -> None:
        super().__init__()
        if temperature <= 0:
            raise UsageError(f"KD temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.ignore_index = ignore_index

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor | None = None) -> Tensor:
        s = _float(student)
        t = _resize_to(_float(teacher).to(s.dtype), tuple(s.shape[-2:]))
        T = self.temperature
        log_ps = F.log_softmax(s / T, dim=1)
        log_pt = F.log_softmax(t / T, dim=1)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=1)  # N x H x W
        mask = valid_mask(target, tuple(s.shape[-2:]), s.shape[0], s.device, self.ignore_index)
        kl = torch.where(mask, kl, torch.zeros_like(kl))
        count = mask.sum().clamp_min(1)
        return kl.sum() / count * (T * T)


def channel_distributions(x: Tensor, temperature: float, mask: Tensor | None = None) -> Tensor:
    """Each channel's spatial map as a distribution over its ``H*W`` positions: ``softmax(x / T)``.

    Returns ``N x C x (H*W)`` log-probabilities' exponent, i.e. probabilities summing to one per channel.
    Void positions (``mask`` False) get probability exactly zero.
    """
    return _channel_log_dist(x, temperature, mask).exp()


def _channel_log_dist(x: Tensor, temperature: float, mask: Tensor | None) -> Tensor:
    x = _float(x) / temperature
    n, c = x.shape[:2]
    if mask is not None:
        x = torch.where(mask[:, None], x, torch.full_like(x, VOID_FILL))
    return F.log_softmax(x.reshape(n, c, -1), dim=-1)


class ChannelWiseDistillation(nn.Module):
    """Channel-wise distillation (Shu et al., ICCV 2021).

    Each channel's spatial map is softened into a distribution over ``H*W`` positions with
    ``softmax(x / T)``; the loss is ``KL(teacher || student)`` per channel summed over positions, times
    ``T^2``, averaged over channels and batch. Works on logits (default) or on feature maps: give
    ``student_channels`` and ``teacher_channels`` and, when they differ, a 1x1 conv adapter maps the student
    feature to the teacher's channel count (its parameters are trained with the student).

    Void pixels: both maps are set to ``VOID_FILL`` (-1e4, after dividing by T) at void positions before the
    softmax, so those positions hold zero probability on both sides and contribute neither loss nor gradient.
    """

    def __init__(
        self,
        temperature: float = 4.0,
        student_channels: int | None = None,
        teacher_channels: int | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise UsageError(f"KD temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.ignore_index = ignore_index
        self.adapter: nn.Module | None = None
        if student_channels is not None and teacher_channels is not None and student_channels != teacher_channels:
            self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor | None = None) -> Tensor:
        if self.adapter is not None:
            student = self.adapter(student.to(self.adapter.weight.dtype))
        s = _float(student)
        t = _resize_to(_float(teacher).to(s.dtype), tuple(s.shape[-2:]))
        if s.shape[1] != t.shape[1]:
            raise UsageError(
                f"cwd: student has {s.shape[1]} channels and teacher {t.shape[1]}; give channel counts for an adapter"
            )
        mask = None
        if target is not None:
            mask = valid_mask(target, tuple(s.shape[-2:]), s.shape[0], s.device, self.ignore_index)
        T = self.temperature
        log_ps = _channel_log_dist(s, T, mask)
        log_pt = _channel_log_dist(t, T, mask)
        kl = (log_pt.exp() * (log_pt - log_ps)).sum(dim=-1)  # N x C
        return kl.mean() * (T * T)


class FeatureImitation(nn.Module):
    """FitNets-style feature imitation: ``MSE(adapter(student_feature), teacher_feature)``.

    The adapter is a 1x1 conv from ``student_channels`` to ``teacher_channels`` (identity-initialised when
    they are equal, so identical features give exactly zero loss at the start). The teacher feature is
    resized (bilinear) to the student's spatial size. ``normalize=True`` L2-normalises both features over
    channels at each position first, so only the direction of the feature vector is imitated (robust to the
    teacher's scale). Void positions (target nearest-resized to the feature size) are left out of the mean.
    """

    def __init__(
        self, student_channels: int, teacher_channels: int, normalize: bool = False, ignore_index: int = 255
    ) -> None:
        super().__init__()
        self.adapter = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
        if student_channels == teacher_channels:
            with torch.no_grad():
                self.adapter.weight.copy_(torch.eye(student_channels)[:, :, None, None])
                self.adapter.bias.zero_()
        self.normalize = bool(normalize)
        self.ignore_index = ignore_index

    def forward(self, student: Tensor, teacher: Tensor, target: Tensor | None = None) -> Tensor:
        s = _float(self.adapter(student.to(self.adapter.weight.dtype)))
        t = _resize_to(_float(teacher).to(s.dtype), tuple(s.shape[-2:]))
        if self.normalize:
            s = F.normalize(s, dim=1)
            t = F.normalize(t, dim=1)
        mask = valid_mask(target, tuple(s.shape[-2:]), s.shape[0], s.device, self.ignore_index)
        sq = ((s - t) ** 2).mean(dim=1)  # N x H x W
        sq = torch.where(mask, sq, torch.zeros_like(sq))
        return sq.sum() / mask.sum().clamp_min(1)


# ----------------------------------------------------------------------------------------------- spec
KD_TERMS: dict[str, dict[str, Any]] = {
    # name -> allowed options with defaults
    "logits": {"T": 6.0},
    "cwd": {"T": 4.0, "stage": None},
    "feature": {"stage": -1, "norm": 0},
}
KD_ALIASES = {"kl": "logits", "kd": "logits", "fitnet": "feature", "fitnets": "feature"}
# preset -> (spec, hard-loss weight)
KD_PRESETS: dict[str, tuple[str, float]] = {
    "original": ("logits@T=6:0.35", 0.65),
}

KD_SPEC_HELP = (
    "distillation terms, comma-separated, each NAME[@OPT=VALUE...][:WEIGHT] (weight defaults to 1). "
    "NAME: logits (pixel-wise KL of T-softened class distributions, option T, default 6), "
    "cwd (channel-wise distillation, option T default 4; with @stage=I on feature stage I instead of logits), "
    "feature (FitNets MSE through a 1x1 adapter, options stage default -1 = decoder's last map, norm=1 to "
    "L2-normalise). Example: 'logits@T=6:0.35,cwd@T=4:1.0,feature@stage=-1:0.5'. "
    "Preset 'original' = 'logits@T=6:0.35' with hard (task) loss weight 0.65 (override with --hard-weight); "
    "a preset may be combined with other terms, e.g. 'original,cwd:1'."
)


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--kd: {where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UsageError(f"--kd: {where} must be a finite number, got {text!r}")
    return value


def parse_kd_spec(spec: str) -> list[tuple[str, float, dict[str, Any]]]:
    """Parse ``'logits@T=6:0.35,cwd:1.0'`` into ``[(name, weight, options), ...]`` (presets expanded).

    Options missing from a term get their defaults, so every returned dict is complete.
    """
    from ..parsing import parse_weighted_terms

    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("--kd: empty distillation spec")
    spec = spec.strip()
    # a preset name may stand alone or among other terms: it expands to its own terms
    items = []
    for raw in spec.split(","):
        items += KD_PRESETS[raw.strip()][0].split(",") if raw.strip() in KD_PRESETS else [raw]
    terms: list[tuple[str, float, dict[str, Any]]] = []
    for item, weight in parse_weighted_terms(",".join(items), "--kd"):
        parts = item.split("@")
        name = KD_ALIASES.get(parts[0].strip().lower(), parts[0].strip().lower())
        if name not in KD_TERMS:
            raise UsageError(
                f"--kd: unknown term {parts[0]!r}; choose from {', '.join(KD_TERMS)} or preset "
                f"{', '.join(KD_PRESETS)}"
            )
        options = dict(KD_TERMS[name])
        for opt in parts[1:]:
            if "=" not in opt:
                raise UsageError(f"--kd: option {opt!r} of {name} must be KEY=VALUE")
            key, value = (p.strip() for p in opt.split("=", 1))
            key = "T" if key.lower() in ("t", "temperature") else key.lower()
            if key not in options:
                raise UsageError(f"--kd: {name} has no option {key!r}; options: {', '.join(options)}")
            num = _number(value, f"{name}@{key}")
            if key == "T" and num <= 0:
                raise UsageError(f"--kd: {name}@T must be positive, got {value}")
            options[key] = int(num) if key in ("stage", "norm") else num
        terms.append((name, weight, options))
    return terms


def resolve_kd_spec(spec: str, hard_weight: float | None = None) -> tuple[list[tuple[str, float, dict[str, Any]]], float]:
    """Terms and the hard (task) loss weight: an explicit ``hard_weight`` wins, else the preset's, else 1."""
    terms = parse_kd_spec(spec)
    if hard_weight is None:
        presets = [p.strip() for p in spec.split(",") if p.strip() in KD_PRESETS]
        hard_weight = KD_PRESETS[presets[0]][1] if presets else 1.0
    if isinstance(hard_weight, bool) or not isinstance(hard_weight, (int, float)) or not math.isfinite(hard_weight) \
            or hard_weight < 0:
        raise UsageError(f"--hard-weight must be a number >= 0, got {hard_weight!r}")
    return terms, float(hard_weight)

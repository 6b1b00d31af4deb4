"""Optimizers and learning-rate schedules for ``distilseg train``.

Why param groups: weight decay on normalization scales and biases only shrinks them towards zero (it
regularizes nothing useful and hurts accuracy), and a pretrained encoder usually wants a smaller learning
rate than a freshly initialized decoder. Why ``LambdaLR`` for most schedules: one closed-form multiplier per
optimizer step gives the same curve on any number of GPUs and survives resume (its step count is in the
checkpoint).
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from ..errors import UsageError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULERS = ("exponential", "poly", "cosine", "wsd", "none")
POLY_POWER = 0.9
WSD_DECAY_FRACTION = 0.2

_NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def encoder_parameter_ids(model: nn.Module) -> set[int]:
    """Ids of the encoder's parameters (empty when the model has no separable pretrained encoder)."""
    from ..models.pretrained import encoder_parameters

    try:
        ids = {id(p) for p in encoder_parameters(model)}
    except (TypeError, ValueError, AttributeError):
        ids = set()
    if ids:
        return ids
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        return {id(p) for p in encoder.parameters()}
    return set()


def freeze_encoder(model: nn.Module) -> int:
    """Set ``requires_grad=False`` on the encoder; returns how many tensors were frozen."""
    ids = encoder_parameter_ids(model)
    if not ids:
        raise UsageError(
            f"--freeze-encoder: model {getattr(model, 'distilseg_arch', type(model).__name__)} has no "
            f"separate encoder to freeze"
        )
    n = 0
    for p in model.parameters():
        if id(p) in ids:
            p.requires_grad_(False)
            n += 1
    return n


def no_decay_parameter_ids(model: nn.Module) -> set[int]:
    """Parameters that must not be weight-decayed: biases, anything 1-D, and every norm layer's params."""
    ids: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, _NORM_TYPES) or name.endswith("bias") or p.ndim <= 1:
                ids.add(id(p))
    return ids


def build_param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    encoder_lr_mult: float = 1.0,
    extra: Iterable[nn.Parameter] = (),
) -> list[dict[str, Any]]:
    """Split trainable parameters into (encoder|rest) x (decay|no decay) groups, dropping empty ones.

    ``extra`` (e.g. a distiller's feature adapters) joins the non-encoder groups.
    """
    enc = encoder_parameter_ids(model) if encoder_lr_mult != 1.0 else set()
    seen: set[int] = set()
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    extra = list(extra)
    holder = nn.Module()
    holder.model = model
    if extra:
        holder.extra = nn.ParameterList([p for p in extra if isinstance(p, nn.Parameter)])
    no_decay = no_decay_parameter_ids(holder)
    for p in list(model.parameters()) + extra:
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        key = (id(p) in enc, id(p) in no_decay)
        groups.setdefault(key, []).append(p)
    out = []
    for (is_enc, is_nd), params in sorted(groups.items()):
        out.append(
            {
                "params": params,
                "lr": lr * (encoder_lr_mult if is_enc else 1.0),
                "weight_decay": 0.0 if is_nd else weight_decay,
                "name": f"{'encoder' if is_enc else 'main'}{'_no_decay' if is_nd else ''}",
            }
        )
    if not out:
        raise UsageError("no trainable parameters (is everything frozen?)")
    return out


def build_optimizer(name: str, groups: list[dict[str, Any]], lr: float) -> torch.optim.Optimizer:
    """The four optimizers the original system offered; momentum 0.9 for SGD/RMSprop."""
    name = name.lower()
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, momentum=0.9)
    raise UsageError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def lr_multiplier(
    name: str, step: int, total_steps: int, steps_per_epoch: int, warmup_steps: int = 0, gamma: float = 0.9
) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based) for a per-iteration schedule.

    - exponential: ``gamma ** epoch`` (constant within an epoch)
    - poly: ``(1 - step/total) ** 0.9``
    - cosine: half cosine from 1 to 0 after an optional linear warmup
    - wsd: linear warmup, flat, then linear decay to 0 over the last 20% of steps
    - none: 1
    """
    total_steps = max(1, int(total_steps))
    if name == "none":
        return 1.0
    if name == "exponential":
        return float(gamma) ** (step // max(1, steps_per_epoch))
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if name == "poly":
        frac = min(step, total_steps) / total_steps
        return max(0.0, 1.0 - frac) ** POLY_POWER
    if name == "cosine":
        span = max(1, total_steps - warmup_steps)
        frac = min(1.0, (step - warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * frac))
    if name == "wsd":
        decay_steps = max(1, int(round(total_steps * WSD_DECAY_FRACTION)))
        decay_start = total_steps - decay_steps
        if step < decay_start:
            return 1.0
        return max(0.0, 1.0 - (step - decay_start) / decay_steps)
    raise UsageError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    gamma: float = 0.9,
    length: dict[str, int] | None = None,
) -> dict[str, Any] | None:
    """A Lightning ``lr_scheduler`` config stepped every optimizer step (None for ``none``).

    ``length``: a mutable ``{"total": N}`` read at every step instead of ``total_steps``; a time budget
    (``training.budget``) sets it once it has timed the first steps, so the schedule ends where the run does."""
    name = name.lower()
    if name not in SCHEDULERS:
        raise UsageError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    if name == "none":
        return None
    warmup_steps = int(round(float(warmup_epochs) * steps_per_epoch))
    if length is None:
        length = {"total": int(total_steps)}

    def fn(step: int) -> float:
        return lr_multiplier(name, step, length["total"], steps_per_epoch, warmup_steps, gamma)

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    return {"scheduler": sched, "interval": "step", "frequency": 1, "name": "lr"}

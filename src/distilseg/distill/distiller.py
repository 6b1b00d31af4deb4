"""``Distiller``: the training engine's KD hook (see docs/design.md, "Training engine").

Why a module of its own: the engine stays KD-agnostic. It calls
``distiller(images, student_logits, student_features, target)`` and gets already weighted loss terms; the
module's loss is ``distiller.hard_weight * task_loss + sum(terms)``. The teacher is frozen (no gradients,
eval mode even when ``.train()`` is called) and never enters ``state_dict``, so neither the student's
artifact nor the distiller's own state carries teacher weights; adapters (feature/CWD 1x1 convs) are the
only trainable parameters, returned by ``trainable_parameters()``.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..errors import UsageError
from .losses import ChannelWiseDistillation, FeatureImitation, PixelKLDivergence, resolve_kd_spec

__all__ = ["Distiller"]


def _pick_stage(channels: Sequence[int], stage: int, who: str) -> int:
    n = len(channels)
    if n == 0:
        raise UsageError(f"--kd: the {who} exposes no feature maps (feature_channels is empty)")
    if not -n <= stage < n:
        raise UsageError(f"--kd: stage {stage} is out of range for the {who}, which has {n} feature maps")
    return stage % n


class Distiller(nn.Module):
    """Frozen teacher + weighted KD terms.

    Args:
        teacher: the teacher network (``forward(x, return_features=True)`` per the model contract).
        spec: a ``--kd`` spec (``'logits@T=6:0.35,cwd:1'``) or preset name (``'original'``).
        student_feature_channels: the student's ``feature_channels`` (needed for feature terms' adapters).
        hard_weight: weight of the task loss; ``None`` takes the preset's (0.65 for ``original``) or 1.
        ignore_index: void label in targets.

    Feature terms pair the student's stage ``stage`` with the teacher's stage at the same index (both
    default to -1, the decoder's last map before the classifier).
    """

    def __init__(
        self,
        teacher: nn.Module,
        spec: str,
        student_feature_channels: Sequence[int] | None = None,
        hard_weight: float | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.terms_spec, self.hard_weight = resolve_kd_spec(spec, hard_weight)
        self.teacher = teacher
        self._freeze_teacher()
        student_ch = list(student_feature_channels or [])
        teacher_ch = list(getattr(teacher, "feature_channels", []) or [])
        self.losses = nn.ModuleDict()
        self.weights: dict[str, float] = {}
        self.stages: dict[str, tuple[int, int] | None] = {}
        counts: dict[str, int] = {}
        for name, weight, opts in self.terms_spec:
            counts[name] = counts.get(name, 0) + 1
            key = name if counts[name] == 1 else f"{name}{counts[name]}"
            stage = opts.get("stage")
            if name == "logits":
                loss: nn.Module = PixelKLDivergence(opts["T"], ignore_index=ignore_index)
                self.stages[key] = None
            elif name == "cwd" and stage is None:
                loss = ChannelWiseDistillation(opts["T"], ignore_index=ignore_index)
                self.stages[key] = None
            else:
                si = _pick_stage(student_ch, int(stage), "student")
                ti = _pick_stage(teacher_ch, int(stage), "teacher")
                self.stages[key] = (si, ti)
                if name == "cwd":
                    loss = ChannelWiseDistillation(opts["T"], student_ch[si], teacher_ch[ti], ignore_index)
                else:
                    loss = FeatureImitation(student_ch[si], teacher_ch[ti], bool(opts["norm"]), ignore_index)
            self.losses[key] = loss
            self.weights[key] = float(weight)
        self.needs_features = any(v is not None for v in self.stages.values())
        # The teacher's weights never enter state_dict (saved or loaded).
        self._register_state_dict_hook(_drop_teacher_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_teacher_keys)

    # -- teacher stays frozen ---------------------------------------------------------------------
    def _freeze_teacher(self) -> None:
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> "Distiller":
        super().train(mode)
        self.teacher.eval()  # BatchNorm/Dropout of the teacher stay in inference behaviour
        return self

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Adapters' parameters (the optimizer trains them with the student); never the teacher's."""
        return iter(list(self.losses.parameters()))

    # -- the hook -----------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_outputs(self, images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Teacher logits (and features when a term needs them), without gradients, in the caller's
        autocast context (so the teacher runs in the same mixed precision as the student)."""
        if self.teacher.training:
            self.teacher.eval()
        if self.needs_features:
            logits, feats = self.teacher(images, return_features=True)
            return logits, list(feats)
        return self.teacher(images), []

    def forward(
        self, images: Tensor, student_logits: Tensor, student_features: Sequence[Tensor] | None, target: Tensor | None
    ) -> dict[str, Tensor]:
        t_logits, t_feats = self.teacher_outputs(images)
        if t_logits.shape[1] != student_logits.shape[1]:
            raise UsageError(
                f"teacher predicts {t_logits.shape[1]} classes but the student {student_logits.shape[1]}"
            )
        out: dict[str, Tensor] = {}
        for key, loss in self.losses.items():
            stage = self.stages[key]
            if stage is None:
                value = loss(student_logits, t_logits, target)
            else:
                if not student_features:
                    raise UsageError(f"--kd {key}: the student returned no features")
                value = loss(student_features[stage[0]], t_feats[stage[1]], target)
            out[f"kd_{key}"] = self.weights[key] * value
        return out

    def extra_repr(self) -> str:
        terms = ", ".join(f"{k}*{w:g}" for k, w in self.weights.items())
        return f"spec={self.spec!r}, hard_weight={self.hard_weight:g}, terms=[{terms}]"


def _drop_teacher_keys(module: nn.Module, state: dict[str, Any], prefix: str, local_metadata: Any) -> dict:
    for key in [k for k in state if k.startswith(prefix + "teacher.")]:
        del state[key]
    return state


def _ignore_missing_teacher_keys(module: nn.Module, incompatible: Any) -> None:
    incompatible.missing_keys[:] = [
        k for k in incompatible.missing_keys if not (k.startswith("teacher.") or ".teacher." in k)
    ]

"""Shared plumbing for segmentation networks: any-size input, feature taps, weight loading.

Why a base class: every architecture needs the same three chores (pad the input to a multiple of its
stride and crop back, bring low-resolution logits up to the input size, return intermediate features for
distillation). Doing them once here keeps each model file about its own topology.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..errors import CheckpointError, UsageError

__all__ = [
    "SegmentationModel",
    "AuxSegmentationModel",
    "count_parameters",
    "load_pretrained_weights",
    "apply_seed_pretrained",
]


class SegmentationModel(nn.Module):
    """Base class: subclasses implement ``_forward(x) -> (logits, features)``.

    ``forward(x, return_features=False)`` pads ``x`` (bottom/right, zeros = the normalized mean) to a
    multiple of ``output_stride``, runs ``_forward``, resizes logits bilinearly to the padded size when the
    network predicts at a lower resolution, and crops logits back to the input's ``H x W``. Features are
    cropped to the part that covers the unpadded input (rounded up), so they line up with the image.

    Subclasses set ``output_stride`` (the multiple the input must have; 1 = none) and
    ``feature_channels`` (channels of each feature map ``_forward`` returns, shallow to deep, the last
    one being the decoder's final map before the classifier).
    """

    output_stride: int = 1
    feature_channels: list[int]
    # models whose stages run through ``_stage`` set this (``set_grad_checkpointing``)
    supports_grad_checkpointing: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.feature_channels = []
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch: recompute each stage's activations in the backward pass instead of keeping them.

        Why: a full-resolution stage of parallel branches keeps gigabytes of activations per batch; with
        this on, training keeps only the stage inputs, for about one more forward pass of time. Outputs,
        gradients and BatchNorm statistics are the same as without it.
        """
        if enable and not self.supports_grad_checkpointing:
            raise UsageError(f"{type(self).__name__} does not support gradient checkpointing")
        self.grad_checkpointing = bool(enable)

    def _stage(self, stage: nn.Module, *xs: Tensor) -> Tensor:
        """``stage(*xs)``, checkpointed while training with ``set_grad_checkpointing(True)``."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(stage, *xs, use_reentrant=False,
                              context_fn=partial(_recompute_keeps_bn_stats, stage))
        return stage(*xs)

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor, return_features: bool = False):
        if x.dim() != 4:
            raise ValueError(f"expected an N x C x H x W batch, got shape {tuple(x.shape)}")
        h, w = int(x.shape[-2]), int(x.shape[-1])
        stride = int(self.output_stride)
        pad_h = (-h) % stride
        pad_w = (-w) % stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        ph, pw = h + pad_h, w + pad_w
        logits, features = self._forward(x)
        if logits.shape[-2:] != (ph, pw):
            logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=False)
        if pad_h or pad_w:
            logits = logits[..., :h, :w]
        if not return_features:
            return logits
        if pad_h or pad_w:
            features = [_crop_like(f, h, w, ph, pw) for f in features]
        return logits, features


class AuxSegmentationModel(SegmentationModel):
    """A model with auxiliary (deep-supervision) heads: subclasses implement one pass,
    ``_run(x, with_aux) -> (logits, features, aux logits)``, that serves both ``forward`` and
    ``forward_aux``; ``aux logits`` is empty when ``with_aux`` is false or the model has no aux heads.

    ``forward_aux`` does not pad the input, so such models use ``output_stride = 1``.
    """

    def _run(self, x: Tensor, with_aux: bool) -> tuple[Tensor, list[Tensor], list[Tensor]]:  # pragma: no cover
        raise NotImplementedError

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        logits, feats, _ = self._run(x, with_aux=False)
        return logits, feats

    @property
    def has_aux(self) -> bool:
        """Whether the model was built with auxiliary heads (``aux_loss=True``); training then adds their
        loss (``SegModule``: main + aux_weight * each aux), so every parameter gets a gradient."""
        return False

    def forward_aux(self, x: Tensor, return_features: bool = False):
        """``(logits, [aux logits, ...])``, all resized bilinearly to the input's size;
        ``(logits, [aux logits, ...], features)`` with ``return_features=True`` (one pass)."""
        logits, feats, aux = self._run(x, with_aux=True)
        size = x.shape[-2:]
        up = [
            t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)
            for t in [logits, *aux]
        ]
        if return_features:
            return up[0], up[1:], feats
        return up[0], up[1:]


def _recompute_keeps_bn_stats(stage: nn.Module) -> tuple[object, object]:
    """Checkpoint contexts (forward, recompute): the recompute restores BatchNorm running statistics, so a
    checkpointed step updates them once, as a plain step does."""
    return nullcontext(), _bn_stats_restored(stage)


@contextmanager
def _bn_stats_restored(stage: nn.Module) -> Iterator[None]:
    saved = [(b, b.clone()) for m in stage.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             for b in m.buffers(recurse=False)]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, value in saved:
                buf.copy_(value)


def _crop_like(f: Tensor, h: int, w: int, ph: int, pw: int) -> Tensor:
    """Crop a feature map of a padded input to the region covering the original ``h x w``."""
    fh, fw = int(f.shape[-2]), int(f.shape[-1])
    ch = -(-h * fh // ph)  # ceil
    cw = -(-w * fw // pw)
    return f[..., :ch, :cw]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _read_state_dict(path: Path) -> Mapping[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    from ..io import safe_torch_load

    obj = safe_torch_load(path)
    # Accept the common wrappers: {"state_dict": ...} (Lightning) and {"model": ...}.
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return obj


def load_pretrained_weights(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a state dict (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only``) strictly.

    Why strict with our own check: a silently half-loaded model trains or scores as garbage; the message
    names the file and the first mismatching keys so the user sees which architecture/args differ.
    """
    path = Path(path)
    state = _read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} (file {tuple(state[k].shape)} vs model {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
            if items:
                more = f" ... (+{len(items) - 5} more)" if len(items) > 5 else ""
                parts.append(f"{label}: {', '.join(items[:5])}{more}")
        arch = getattr(model, "distilseg_arch", type(model).__name__)
        raise CheckpointError(f"{path}: weights do not fit {arch}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model


def apply_seed_pretrained(model: nn.Module, pretrained: str | os.PathLike | None, arch: str) -> nn.Module:
    """``pretrained`` handling for from-scratch models: None, or a weights file path."""
    if pretrained is None:
        return model
    if str(pretrained).lower() == "imagenet":
        raise UsageError(
            f"{arch} is trained from scratch and has no ImageNet weights; pass pretrained=PATH to a "
            f"state dict, or use an encoder model (e.g. unet with encoder='resnet34') for ImageNet weights"
        )
    return load_pretrained_weights(model, pretrained)

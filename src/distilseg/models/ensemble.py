"""An ensemble of trained segmentation models as one model: the mean of the members' logits.

Why: an ensemble of teachers is the original distillation setting (Hinton et al. 2015 distil an ensemble into
one small network), and on a CPU the cheapest stronger teacher is often two seeds of the same recipe. Kept as an
ordinary registered architecture, an ensemble is a model artifact like any other: ``eval``, ``predict``,
``export`` and ``distill --teacher`` take it unchanged. ``distilseg ensemble A B --out DIR`` writes one
(``combine_artifacts``).

Logits are averaged (not probabilities): for distillation the teacher's logits are softened by the
temperature, and the mean of logits is what a single network's logits would be at T=1 up to a constant.
Features (for feature / CWD-on-features distillation) are the first member's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, UsageError
from .registry import create_model, register_model

#: settings that must agree between members (they define what the logits mean and what the input is)
_MUST_AGREE = ("num_classes", "class_names", "mean", "std", "ignore_index")
#: most members an ensemble may have: each one is a full network pass per image
MAX_MEMBERS = 16


class Ensemble(nn.Module):
    """Members run on the same input; logits are averaged. ``forward(x, return_features=False)`` follows the
    model contract of ``SegmentationModel`` (each member pads and resizes for itself)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise UsageError(f"ensemble: needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)
        self.feature_channels = list(getattr(members[0], "feature_channels", []) or [])
        strides = [int(getattr(m, "output_stride", 1) or 1) for m in members]
        self.output_stride = max(strides)

    def forward(self, x: Tensor, return_features: bool = False):
        if return_features:
            first, features = self.members[0](x, return_features=True)
            rest = [m(x) for m in self.members[1:]]
            return torch.stack([first, *rest]).mean(0), features
        return torch.stack([m(x) for m in self.members]).mean(0)


@register_model(trainable=False)
def ensemble(num_classes: int, members: Sequence[dict[str, Any]] | None = None, **kw: Any) -> nn.Module:
    """Mean of the logits of trained models (write one with `distilseg ensemble A B --out DIR`)."""
    if kw:
        raise UsageError(f"ensemble: unknown argument(s) {', '.join(sorted(kw))}")
    if not members:
        raise UsageError("ensemble: no members; write an ensemble artifact with `distilseg ensemble A B --out DIR`")
    if not isinstance(members, (list, tuple)) or len(members) > MAX_MEMBERS:
        shown = f"{len(members)} members" if isinstance(members, (list, tuple)) else repr(members)
        raise UsageError(f"ensemble: members must be a list of at most {MAX_MEMBERS} models, got {shown}")
    built = []
    for i, spec in enumerate(members):
        if not isinstance(spec, dict) or not isinstance(spec.get("architecture"), str):
            raise UsageError(f"ensemble: member {i} must be {{architecture: NAME, model_args: {{...}}}}, got {spec!r}")
        if spec["architecture"] == "ensemble":
            raise UsageError("ensemble: a member cannot itself be an ensemble")
        built.append(create_model(spec["architecture"], num_classes, **dict(spec.get("model_args") or {})))
    return Ensemble(built)


def combine_artifacts(refs: Sequence[str], out: str | Path, half: bool | None = None) -> Path:
    """Write the ensemble of the model artifacts ``refs`` (folders, training outputs or ``zoo:NAME``) to ``out``.

    The members must predict the same classes from the same input normalization; the ensemble's config is the
    first member's (class names, palette, input size, dataset) with ``architecture: ensemble`` and
    ``ensemble_of`` naming the sources. ``half`` (default: when every member's weights are stored in fp16)
    stores the weights in fp16.
    """
    from ..artifact import load_artifact, save_artifact
    from ..inference.segmenter import resolve_artifact_dir

    if len(refs) < 2:
        raise UsageError(f"an ensemble needs at least 2 models, got {len(refs)}")
    models, configs, folders = [], [], []
    for ref in refs:
        folder = resolve_artifact_dir(ref)
        model, config = load_artifact(folder)
        models.append(model)
        configs.append(config)
        folders.append(folder)
    for key in _MUST_AGREE:
        first = configs[0].get(key)
        for ref, config in zip(refs[1:], configs[1:]):
            if config.get(key) != first:
                raise CheckpointError(f"{ref}: {key} {config.get(key)!r} differs from {refs[0]}'s {first!r}; "
                                      f"ensemble members must agree on {', '.join(_MUST_AGREE)}")
    if any(c.get("architecture") == "ensemble" for c in configs):
        raise UsageError("a member cannot itself be an ensemble: list its members instead")
    if half is None:
        half = all(_stored_half(f) for f in folders)
    members = [{"architecture": c["architecture"], "model_args": dict(c.get("model_args") or {})} for c in configs]
    net = Ensemble(models)
    keep = ("num_classes", "class_names", "palette", "mean", "std", "input_size", "ignore_index", "dataset",
            "dataset_args")
    config = {k: configs[0][k] for k in keep if k in configs[0]}
    config.update(architecture="ensemble", model_args={"members": members},
                  ensemble_of=[{"source": str(r), "metrics": c.get("metrics")} for r, c in zip(refs, configs)])
    return save_artifact(out, net, config, half=bool(half))


def _stored_half(folder: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        floats = [d for d in (f.get_slice(k).get_dtype() for k in f.keys()) if d.startswith(("F", "BF"))]
    return all(d in ("F16", "BF16") for d in floats)

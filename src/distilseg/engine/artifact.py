"""Model artifacts: a folder with ``model.safetensors`` (weights) and ``config.json`` (how to rebuild).

Why this format: safetensors cannot carry code, so loading an artifact never unpickles anything, and the
JSON says everything a user (or ``predict`` / ``export``) needs: classes, palette, normalization, size.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..errors import CheckpointError
from ..io import atomic_write, atomic_write_json

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
REQUIRED_KEYS = ("architecture", "num_classes")


def save_artifact(directory: str | Path, model: nn.Module, config: dict[str, Any], half: bool = False) -> Path:
    """Write weights then config, each atomically; the config is written last so that a folder with a
    ``config.json`` always has matching weights."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = dict(config)
    config.setdefault("architecture", getattr(model, "distilseg_arch", None))
    config.setdefault("model_args", getattr(model, "distilseg_args", {}))
    config.setdefault("distilseg_version", __version__)
    missing = [k for k in REQUIRED_KEYS if config.get(k) is None]
    if missing:
        raise ValueError(f"artifact config lacks {missing}")
    state = {}
    for k, v in model.state_dict().items():
        t = v.detach().cpu()
        if half and t.is_floating_point():
            t = t.half()
        state[k] = t.contiguous()
    _dedupe_shared(state)
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write_json(directory / CONFIG_NAME, _jsonable(config))
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a model artifact (no {CONFIG_NAME})")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: invalid JSON ({exc})") from exc
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    return config


def load_artifact(directory: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` into it (strictly)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..models import create_model

    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{directory}: no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{weights}: not a valid safetensors file ({exc}); artifacts are never read as pickles"
        ) from exc
    model = create_model(config["architecture"], int(config["num_classes"]), **config.get("model_args", {}))
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not match {config['architecture']}: {exc}") from exc
    model.eval()
    return model, config


def _dedupe_shared(state: dict[str, torch.Tensor]) -> None:
    """safetensors refuses tensors that share storage (tied weights): give each its own copy."""
    seen: dict[int, str] = {}
    for k, v in list(state.items()):
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        if ptr is not None and ptr in seen:
            state[k] = v.clone()
        elif ptr is not None:
            seen[ptr] = k


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj

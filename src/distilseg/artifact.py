"""Model artifacts: a folder with ``model.safetensors`` (weights) and ``config.json`` (how to rebuild).

Why this format: safetensors cannot carry code, so loading an artifact never unpickles anything, and the
JSON says everything a user (or ``predict`` / ``export``) needs: classes, palette, normalization, size.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ._version import __version__
from .checks import MAX_SIDE
from .errors import CheckpointError, UsageError
from .io import atomic_write, atomic_write_json, plain_data, read_json_object

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
    atomic_write_json(directory / CONFIG_NAME, plain_data(config))
    return directory


def read_config(directory: str | Path) -> dict[str, Any]:
    directory = Path(directory)
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a model artifact (no {CONFIG_NAME})")
    config = read_json_object(path)
    missing = [k for k in REQUIRED_KEYS if k not in config]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing}")
    check_config(config, path)
    return config


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    import math

    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_config(config: dict[str, Any], path: str | Path) -> None:
    """Types and ranges of an artifact's ``config.json``: a wrong one is a ``CheckpointError`` naming the
    file and the key (instead of a traceback deep inside model building or prediction)."""

    def bad(key: str, want: str) -> CheckpointError:
        return CheckpointError(f"{path}: {key} must be {want}, got {config[key]!r}")

    if not isinstance(config["architecture"], str) or not config["architecture"]:
        raise bad("architecture", "a model name")
    if not _is_int(config["num_classes"]) or config["num_classes"] < 1:
        raise bad("num_classes", "a positive integer")
    k = config["num_classes"]
    if config.get("model_args") is not None and not isinstance(config["model_args"], dict):
        raise bad("model_args", "a JSON object of the model's arguments")
    names = config.get("class_names")
    if names is not None and not (isinstance(names, list) and len(names) == k
                                  and all(isinstance(n, str) for n in names)):
        raise bad("class_names", f"a list of {k} names")
    pal = config.get("palette")
    if pal is not None and not (isinstance(pal, list) and len(pal) >= k and all(
            isinstance(c, list) and len(c) == 3 and all(_is_int(x) and 0 <= x <= 255 for x in c) for c in pal)):
        raise bad("palette", f"a list of {k} [R, G, B] colors (0-255)")
    for key in ("mean", "std"):
        v = config.get(key)
        if v is not None and not (isinstance(v, list) and len(v) == 3 and all(_is_num(x) for x in v)
                                  and (key == "mean" or all(x > 0 for x in v))):
            raise bad(key, "a list of 3 numbers" + (" above 0" if key == "std" else ""))
    size = config.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(_is_int(x) and 0 < x <= MAX_SIDE for x in size)):
        raise bad("input_size", f"two positive integers [H, W] of at most {MAX_SIDE}")
    if config.get("ignore_index") is not None and not _is_int(config["ignore_index"]):
        raise bad("ignore_index", "an integer")


def load_artifact(directory: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from ``config.json`` and load ``model.safetensors`` into it (strictly)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import create_model

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
    from .errors import UsageError

    try:
        _check_model_size(config, directory / CONFIG_NAME)
        model = create_model(config["architecture"], int(config["num_classes"]), **(config.get("model_args") or {}))
    except (UsageError, TypeError, ValueError, KeyError) as exc:  # unknown architecture, misspelled argument
        raise CheckpointError(
            f"{directory / CONFIG_NAME}: architecture {config['architecture']!r} with model_args "
            f"{config.get('model_args') or {}} cannot be built "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
        ) from exc
    own = model.state_dict()
    state = {k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights}: weights do not match {config['architecture']}: {exc}") from exc
    model.eval()
    return model, config


# Parameters a config.json may ask for (4 GB of float32 weights; the largest bundled model has 1/200 of it):
# the model is first built on the "meta" device, which allocates nothing, and counted.
MAX_PARAMETERS = 1_000_000_000


def _check_model_size(config: dict[str, Any], path: Path) -> None:
    """Refuse a config.json whose model would not fit in memory (``base_width: 1000000``, hundreds of ensemble
    members) before any weight is allocated."""
    from .models import create_model

    with torch.device("meta"):
        model = create_model(config["architecture"], int(config["num_classes"]), **(config.get("model_args") or {}))
    count = sum(p.numel() for p in model.parameters())
    if count > MAX_PARAMETERS:
        raise CheckpointError(
            f"{path}: architecture {config['architecture']!r} with these model_args has {count:,} parameters, "
            f"more than the {MAX_PARAMETERS:,} a model may have; the file is not a model this package wrote"
        )


def _dedupe_shared(state: dict[str, torch.Tensor]) -> None:
    """safetensors refuses tensors that share storage (tied weights): give each its own copy."""
    seen: dict[int, str] = {}
    for k, v in list(state.items()):
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        if ptr is not None and ptr in seen:
            state[k] = v.clone()
        elif ptr is not None:
            seen[ptr] = k


def is_artifact_dir(path: str | Path) -> bool:
    """A distilseg artifact's config.json names an ``architecture``; a transformers ``save_pretrained``
    folder also has a config.json but must go to the model's own loader."""
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        return False
    try:
        return "architecture" in json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def resolve_artifact_dir(ref: str | os.PathLike) -> Path:
    """``DIR`` (an artifact, or a training output folder holding ``best/``, then ``last/``) or ``zoo:NAME``
    -> the artifact folder. The one resolver: load, eval, predict, export, bench and distill's teacher."""
    from .zoo import is_zoo_ref, resolve_zoo

    path = resolve_zoo(str(ref)) if is_zoo_ref(str(ref)) else Path(ref)
    if (path / "config.json").is_file():
        return path
    for sub in ("best", "last"):
        if (path / sub / "config.json").is_file():
            return path / sub
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    raise CheckpointError(
        f"{path}: not a model artifact (no config.json, and no best/ or last/ artifact inside)"
    )


# what the members of an ensemble must share (``combine_artifacts``)
_MUST_AGREE = ("num_classes", "class_names", "mean", "std", "ignore_index")


def combine_artifacts(refs: Sequence[str], out: str | Path, half: bool | None = None) -> Path:
    """Write the ensemble of the model artifacts ``refs`` (folders, training outputs or ``zoo:NAME``) to ``out``.

    The members must predict the same classes from the same input normalization; the ensemble's config is the
    first member's (class names, palette, input size, dataset) with ``architecture: ensemble`` and
    ``ensemble_of`` naming the sources. ``half`` (default: when every member's weights are stored in fp16)
    stores the weights in fp16.
    """
    from .models.ensemble import Ensemble

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

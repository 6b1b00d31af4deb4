"""Datasets, label tables, transforms and statistics (see docs/design.md, section Data).

Names are resolved lazily: the CLI imports ``distilseg.data.commands`` for every command, and that must
not pull in torch or albumentations before a data command actually runs.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "IMAGENET_MEAN": ".base",
    "IMAGENET_STD": ".base",
    "Sample": ".base",
    "SegDataset": ".base",
    "collate_segmentation": ".base",
    "create_dataset": ".registry",
    "get_dataset_info": ".registry",
    "list_datasets": ".registry",
    "register_dataset": ".registry",
    "build_train_transform": ".transforms",
    "build_eval_transform": ".transforms",
    "compute_class_stats": ".stats",
    "class_weights": ".stats",
    "validate_dataset": ".validate",
    "ValidationReport": ".validate",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

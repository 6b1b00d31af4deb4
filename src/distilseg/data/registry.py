"""One registry of dataset adapters: ``create_dataset`` / ``list_datasets`` / ``get_dataset_info``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from ..checks import MAX_SIDE
from ..errors import DataError, UsageError
from .base import _REGISTRY, SegDataset, register_dataset  # noqa: F401 - register_dataset re-exported


def _load_builtin() -> None:
    from . import camvid, cityscapes, folder, idd, oxford_pet, synthetic  # noqa: F401


def list_datasets() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def _get(name: str) -> type[SegDataset]:
    _load_builtin()
    if name not in _REGISTRY:
        raise UsageError(f"unknown dataset {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_dataset_info(name: str) -> dict[str, Any]:
    """Description, splits, options, and classes/palette where they are fixed (None for ``folder``)."""
    cls = _get(name)
    info: dict[str, Any] = {
        "name": name,
        "description": cls.description,
        "splits": list(cls.splits),
        "requires_root": cls.requires_root,
        "options": list(cls.options),
        "num_classes": None,
        "classes": None,
        "palette": None,
    }
    table = getattr(cls, "default_classes", None)
    if table is not None:
        classes, palette = table()
        info.update(num_classes=len(classes), classes=list(classes), palette=palette.tolist())
    return info


# What each option kind accepts (an adapter declares its options' kinds in ``option_types``). Values come from
# flags (``--dataset-args``), YAML or a saved config: one check here gives one line instead of a traceback
# deep inside the adapter.
OPTION_KINDS: dict[str, str] = {
    "count": "a non-negative integer",
    "positive": "a positive integer",
    "bool": "true or false",
    "size": f"two integers H W between 16 and {MAX_SIDE}",
    "text": "a text value",
    "path": "a file path",
}


def check_option(dataset: str, key: str, value: Any, kind: str | None) -> None:
    """A ``UsageError`` naming the dataset, the option and the value when ``value`` is not of ``kind``."""
    if kind is None or value is None:
        return
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = {
        "count": is_int and value >= 0,
        "positive": is_int and value >= 1,
        "bool": isinstance(value, bool),
        "size": isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= MAX_SIDE for v in value),
        "text": isinstance(value, str),
        "path": isinstance(value, (str, Path)),
    }[kind]
    if not ok:
        raise UsageError(f"dataset {dataset!r}: option {key} must be {OPTION_KINDS[kind]}, got {value!r}")


def create_dataset(
    name: str,
    root: str | Path | None = None,
    split: str = "train",
    transform: Callable[..., dict[str, Any]] | None = None,
    **options: Any,
) -> SegDataset:
    """Build a registered dataset; bad names/splits/options are UsageErrors, bad folders DataErrors.

    ``split`` may join splits with ``+`` (``"train+val"``): one dataset of their samples in order.
    """
    cls = _get(name)
    if isinstance(split, str) and "+" in split:
        parts = split.split("+")
        if len(set(parts)) != len(parts) or not all(parts):
            raise UsageError(f"split {split!r}: join distinct split names with '+', e.g. train+val")
        from .concat import JoinedSplits

        return JoinedSplits([create_dataset(name, root, p, None, **options) for p in parts], transform)
    if split not in cls.splits:
        raise UsageError(f"dataset {name!r} has no split {split!r}; choose one of: {', '.join(cls.splits)}")
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        allowed = ", ".join(cls.options) or "none"
        raise UsageError(f"dataset {name!r} does not take option(s) {', '.join(unknown)}; options: {allowed}")
    for key, value in options.items():
        check_option(name, key, value, cls.option_types.get(key))
    if cls.requires_root:
        if root is None:
            raise UsageError(f"dataset {name!r} needs a root folder (--root PATH)")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"{root}: dataset root is not a folder (dataset {name!r})")
    return cls(root=root, split=split, transform=transform, **options)


__all__ = ["register_dataset", "create_dataset", "list_datasets", "get_dataset_info"]

"""The checks of one ``TrainConfig`` setting against its field's type and ``setting(...)`` metadata (range,
choices, required, path, an extra ``check``); a bad value is a ``SettingError`` naming the setting."""
from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any

from ..checks import size_pair
from ..errors import SettingError
from ..parsing import key_value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _kind(hint: Any) -> tuple[Any, bool]:
    """``int | None`` -> ``(int, True)``; ``list[int]`` -> ``(list, False)``."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        optional = type(None) in args
        hint = next(a for a in args if a is not type(None))
    return typing.get_origin(hint) or hint, optional


def _checked(v: Any, hint: Any, meta: Any, name: str, key: str) -> Any:
    origin, optional = _kind(hint)
    if meta.get("required") and not v:
        raise SettingError(f"{name} is required" + ("" if name == key else " (on the command line or in --config)"))
    if v is None and optional:
        return None
    if meta.get("check") is not None:
        v = meta["check"](v, name)
    if origin is bool:
        if not isinstance(v, bool):
            raise SettingError(f"{name} must be true or false, got {v!r}")
        return v
    if origin is list:
        return list(size_pair(v, name))
    if origin is dict:
        return _as_dict(v, name)
    if origin is int:
        return _checked_int(v, meta, name)
    if origin is float:
        return _checked_real(v, meta, name)
    if meta.get("path"):
        if not isinstance(v, (str, Path)):
            raise SettingError(f"{name} must be a path, got {v!r}")
        return str(v)
    if not isinstance(v, (str, int, float)):
        raise SettingError(f"{name} must be a name (text), got {v!r}")
    choices = meta.get("choices")
    if choices is not None:
        choices = choices() if callable(choices) else choices
        text = str(v) if _is_int(v) else v  # YAML reads `precision: 32` as a number
        if text not in choices:
            raise SettingError(f"{name} must be one of {', '.join(choices)}, got {v!r}")
        return text
    if not isinstance(v, str):
        raise SettingError(f"{name} must be a name (text), got {v!r}")
    return v


def _checked_int(v: Any, meta: Any, name: str) -> int:
    low, high = meta.get("low"), meta.get("high")
    if not _is_int(v) or (low is not None and v < low):
        what = "a positive integer" if (low or 0) >= 1 else "a non-negative integer"
        raise SettingError(f"{name} must be {what}, got {v!r}")
    if high is not None and v > high:
        raise SettingError(f"{name} must be at most {high}, got {v!r}")
    return v


def _checked_real(v: Any, meta: Any, name: str) -> float:
    low, high, open_low = meta.get("low"), meta.get("high"), meta.get("open_low")
    if isinstance(v, str):  # PyYAML reads 1e-4 (no dot) as text: take what Python reads as a number
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise SettingError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise SettingError(f"{name} must be a finite number, got {v!r}")
    ok = (low is None or (v > low if open_low else v >= low)) and (high is None or v <= high)
    if not ok:
        if high is None:
            want = "must be positive" if open_low else "must not be negative"
        else:
            want = f"must be in {'(' if open_low else '['}{low:g}, {high:g}]"
        raise SettingError(f"{name} {want}, got {v!r}")
    return float(v)


def _as_dict(value: Any, what: str) -> dict[str, Any]:
    """A mapping (or a list of ``K=V`` texts / pairs, as older files hold) with ``-`` in keys read as ``_``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k).replace("-", "_"): v for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        pairs = []
        for item in value:
            if isinstance(item, str) and "=" in item:
                item = key_value(item, what)
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)):
                raise SettingError(f"{what} must be a mapping of KEY: VALUE settings, got {value!r}")
            pairs.append((item[0].replace("-", "_"), item[1]))
        return dict(pairs)
    raise SettingError(f"{what} must be a mapping of KEY: VALUE settings, got {value!r}")

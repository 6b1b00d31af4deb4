"""The two small grammars every command shares, parsed in one place so that they mean the same everywhere.

``K=V`` options (``--dataset-args``, ``--model-args``, ``--teacher-args``, ``--student-args``,
``--calibration-dataset-args``, ...):

- the key is stripped and ``-`` becomes ``_`` (``base-width=8`` is ``base_width=8``), as in the YAML files;
- the value is read as a YAML scalar or flow collection (``3`` -> 3, ``true`` -> True, ``[2,4]`` -> [2, 4]);
  text YAML cannot read stays text;
- an empty value (``key=``) is ``None``, as ``key:`` is in a YAML file.

``name:weight`` terms (``--loss ce:1,dice:0.5``, ``--kd logits@T=4:0.5,cwd:0.2``): terms are separated by
commas, the weight follows the last ``:`` and defaults to 1; a weight must be a finite number >= 0. What a
name means (and its ``@`` options) is the caller's business.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from . import safe_yaml
from .errors import UsageError

__all__ = ["key_value", "parse_key_values", "parse_weighted_terms"]


def key_value(item: str, flag: str) -> tuple[str, Any]:
    """One ``K=V`` item -> ``(key, value)``; a malformed one is a ``UsageError`` naming ``flag``."""
    import yaml

    key, sep, value = str(item).partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise UsageError(f"{flag}: expected key=value, got {item!r}")
    if not value.strip():
        return key, None
    try:
        return key, safe_yaml.load(value)
    except yaml.YAMLError:
        return key, value


def parse_key_values(items: Iterable[str] | None, flag: str = "--dataset-args") -> dict[str, Any]:
    """``["k=v", ...]`` -> dict (see the module docstring for the rules); None -> {}."""
    return dict(key_value(item, flag) for item in items or [])


def parse_weighted_terms(spec: Any, flag: str) -> list[tuple[str, float]]:
    """``"a:1,b@x=2:0.5,c"`` -> ``[("a", 1.0), ("b@x=2", 0.5), ("c", 1.0)]`` (names stripped, as written)."""
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"{flag}: empty spec")
    terms: list[tuple[str, float]] = []
    for raw in spec.split(","):
        name, weight = raw.strip(), 1.0
        if ":" in name:
            name, text = (s.strip() for s in name.rsplit(":", 1))
            try:
                weight = float(text)
            except ValueError:
                raise UsageError(f"{flag} {spec!r}: the weight {text!r} of {name!r} is not a number") from None
            if not math.isfinite(weight) or weight < 0:
                raise UsageError(f"{flag} {spec!r}: the weight of {name!r} must be a finite number >= 0, "
                                 f"got {text!r}")
        if not name:
            raise UsageError(f"{flag} {spec!r}: empty term")
        terms.append((name, weight))
    return terms

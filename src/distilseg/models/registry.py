"""One registry and one ``create_model``, the way timm does it.

A model module decorates a factory ``fn(num_classes, **kwargs) -> nn.Module`` with ``@register_model``;
the factory's docstring's first line is the description shown by ``distilseg models``. The package
(``distilseg/models/__init__.py``) imports every model module, with plain imports, so importing anything from
``distilseg.models`` registers them all; this module imports none of them.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..errors import UsageError

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: ModelFactory
    description: str
    defaults: dict[str, Any]
    trainable: bool = True


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(fn: ModelFactory | None = None, *, name: str | None = None, trainable: bool = True):
    """Decorator: ``@register_model`` or ``@register_model(name="...")``. ``trainable=False``: built only from a
    saved artifact (e.g. ``ensemble``): ``create_model`` builds it, ``list_models`` leaves it out."""

    def _register(f: ModelFactory) -> ModelFactory:
        key = name or f.__name__
        if key in _REGISTRY:
            raise ValueError(f"model {key!r} is registered twice")
        doc = inspect.getdoc(f) or ""
        defaults = {
            p.name: p.default
            for p in inspect.signature(f).parameters.values()
            if p.default is not inspect.Parameter.empty
        }
        _REGISTRY[key] = ModelEntry(key, f, doc.splitlines()[0] if doc else "", defaults, trainable)
        return f

    return _register(fn) if fn is not None else _register


def list_models(include_untrainable: bool = False) -> list[str]:
    """Architectures to train (``--model``); ``include_untrainable`` adds those built only from artifacts."""
    return sorted(k for k, e in _REGISTRY.items() if e.trainable or include_untrainable)


def get_model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build model ``name`` with ``num_classes`` outputs; extra keyword arguments go to its factory."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UsageError(f"num_classes must be a positive integer, got {num_classes!r}")
    entry = get_model_entry(name)
    model = entry.factory(num_classes=num_classes, **kwargs)
    # Remember how to rebuild it: the artifact's config.json stores these.
    model.distilseg_arch = name
    model.distilseg_args = {k: v for k, v in kwargs.items() if k not in ("pretrained",)}
    return model

"""Knowledge distillation: KD loss terms, the ``Distiller`` training hook, ``distill``, ``compress`` and ``demo``."""
import sys
import types
from typing import Any

from .distiller import Distiller
from .losses import ChannelWiseDistillation, FeatureImitation, PixelKLDivergence, parse_kd_spec, resolve_kd_spec

__all__ = [
    "Distiller",
    "PixelKLDivergence",
    "ChannelWiseDistillation",
    "FeatureImitation",
    "parse_kd_spec",
    "resolve_kd_spec",
]


class _CallablePackage(types.ModuleType):
    """``from distilseg import distill`` is the Python API's ``distill(DistillConfig(...))``; once this package
    is imported, Python makes ``distilseg.distill`` this package, so the package itself runs that function."""

    def __call__(self, cfg: Any) -> Any:
        from .api import distill

        return distill(cfg)


sys.modules[__name__].__class__ = _CallablePackage

"""Knowledge distillation: KD loss terms, the ``Distiller`` training hook, ``distill``, ``compress`` and ``demo``."""
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

"""Model zoo: ``create_model(name, num_classes, **kwargs)`` builds any registered architecture.

Every model module is imported here (plain imports, as timm does) so that each registers itself with
``registry.register_model``; a new model module adds its name to this import.
"""
from . import (  # noqa: F401 - imported to register their models
    attention_unet, danet, dilated_dws_unet, ensemble, fcn, fpn, lite_student, msa_unet, segformer, unet,
)
from .registry import create_model, get_model_entry, list_models, register_model

__all__ = ["create_model", "get_model_entry", "list_models", "register_model"]

"""Model zoo: ``create_model(name, num_classes, **kwargs)`` builds any registered architecture."""
from .registry import create_model, get_model_entry, list_models, register_model

__all__ = ["create_model", "get_model_entry", "list_models", "register_model"]

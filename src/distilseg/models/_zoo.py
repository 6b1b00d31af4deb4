"""Imports every model module so that each registers itself. Add a line per new model module."""
# Each import is guarded only against the module not existing yet (during development).
import importlib

for _name in (
    "unet",
    "attention_unet",
    "msa_unet",
    "dilated_dws_unet",
    "lite_student",
    "danet",
    "fcn",
    "segformer",
    "fpn",
):
    try:
        importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"{__package__}.{_name}":
            raise

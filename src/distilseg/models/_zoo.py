"""Imports every model module so that each registers itself. Add a line per new model module."""
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
    "ensemble",
):
    importlib.import_module(f"{__package__}.{_name}")

"""Bundled pretrained artifacts, addressed as ``zoo:NAME`` by ``distilseg.load`` and the CLI.

Why a resolver of its own: the CLI, ``distilseg.load`` and export all accept ``zoo:NAME``; one function
maps the name to the artifact folder shipped inside the package (``src/distilseg/zoo/<name>/``) and
gives one clear error, listing what is available, when the name is unknown.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError

ZOO_DIR = Path(__file__).resolve().parent
PREFIX = "zoo:"


def _is_artifact(folder: Path) -> bool:
    """A zoo entry is a model artifact folder (``config.json``) or a folder holding one ``.onnx`` file."""
    return (folder / "config.json").is_file() or (folder / "best" / "config.json").is_file() or any(
        folder.glob("*.onnx")
    )


def list_zoo() -> list[str]:
    """Names of the artifacts bundled with this installation (sorted)."""
    return sorted(
        p.name for p in ZOO_DIR.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")) and _is_artifact(p)
    )


def is_zoo_ref(ref: object) -> bool:
    """True for strings written ``zoo:NAME``."""
    return isinstance(ref, str) and ref.startswith(PREFIX)


def resolve_zoo(name: str) -> Path:
    """Path of the bundled artifact folder for ``name`` (with or without the ``zoo:`` prefix)."""
    if name.startswith(PREFIX):
        name = name[len(PREFIX):]
    available = list_zoo()
    if not name or name not in available:
        listing = ", ".join(available) if available else "none are bundled in this installation"
        raise UsageError(f"unknown zoo model {name!r} (looked in {ZOO_DIR}); available: {listing}")
    return ZOO_DIR / name

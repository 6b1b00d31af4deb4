"""Shared helpers for the training-engine tests (no tests here): a tiny, fast training configuration."""
from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

# the compress preset of the test suite (seconds, not meaningful numbers): a YAML file of the preset keys
TEST_PRESET = str(Path(__file__).resolve().parent / "configs" / "compress_test.yaml")

TINY = {
    "dataset": "synthetic",
    "dataset_args": {"num_images": 8, "size": [32, 48]},
    "model": "unet",
    "model_args": {"depth": 2, "base_width": 8},
    "img_size": [32, 48],
    "epochs": 2,
    "batch_size": 4,
    "num_workers": 0,
    "accelerator": "cpu",
    "progress": False,
    "augment": False,
}


def tiny_cfg(out: Path, **over: Any) -> dict[str, Any]:
    from distilseg.engine.train import DEFAULTS

    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(TINY))
    cfg["out"] = str(out)
    cfg.update(over)
    return cfg


def script_header() -> str:
    """Preamble for ``python -c`` training subprocesses: one thread, the tests folder importable."""
    here = Path(__file__).resolve().parent
    return (
        "import os, sys\n"
        "os.environ.setdefault('OMP_NUM_THREADS', '1')\n"
        "import torch\n"
        "torch.set_num_threads(1)\n"
        f"sys.path.insert(0, {str(here)!r})\n"
    )


PYTHON = sys.executable

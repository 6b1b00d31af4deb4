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


DATA_ARGS = ["--dataset-args", "num_images=4", "size=[32,48]"]
# a tiny CLI training run (add --out and --epochs)
TRAIN = ["train", "--dataset", "synthetic", "--model", "unet", "--model-args", "depth=2", "base_width=4",
         "--img-size", "32", "48", "--batch-size", "2", "--num-workers", "0", "--accelerator", "cpu",
         "--no-progress", "--no-augment", *DATA_ARGS]


def err_lines(capsys) -> list[str]:
    """The one-line ``distilseg ...`` messages on stderr (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("distilseg ")]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its bytes and mtime: compare two to show nothing changed."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def tiny_cfg(out: Path, **over: Any) -> dict[str, Any]:
    from distilseg.training.config import DEFAULTS

    cfg = copy.deepcopy(DEFAULTS)
    cfg.update(copy.deepcopy(TINY))
    cfg["out"] = str(out)
    cfg.update(over)
    return cfg


def tiny_artifact(folder: Path, num_classes: int = 7) -> Path:
    """A saved untrained unet (depth 2) artifact for the synthetic dataset's classes."""
    from distilseg.data import create_dataset
    from distilseg.artifact import save_artifact
    from distilseg.models import create_model

    ds = create_dataset("synthetic", split="val", num_images=2, size=[32, 48])
    model = create_model("unet", num_classes, depth=2, base_width=4)
    return save_artifact(folder, model, {
        "num_classes": num_classes, "class_names": list(ds.classes)[:num_classes],
        "palette": ds.palette.tolist()[:num_classes], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "input_size": [32, 48], "ignore_index": 255, "dataset": "synthetic"})


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

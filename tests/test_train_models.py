"""Every registered model trains one full epoch from the command line (`distilseg train`), with default
architecture arguments, and an out-of-memory error becomes a one-line hint about which settings to lower."""
from __future__ import annotations

import json

import pytest
import torch

from distilseg.cli import main
from distilseg.models import list_models


pytestmark = pytest.mark.usefixtures("run_config_check")


@pytest.mark.parametrize("name", list_models())
def test_one_epoch_from_cli(name, tmp_path, capsys):
    out = tmp_path / name
    code = main([
        "train", "--dataset", "synthetic", "--dataset-args", "num_images=4", "size=[64,64]",
        "--model", name, "--img-size", "64", "64", "--epochs", "1", "--batch-size", "2",
        "--no-augment", "--no-progress", "--accelerator", "cpu", "--out", str(out),
    ])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["architecture"] == name
    assert config["num_classes"] == 7
    assert 0.0 <= config["metrics"]["mIoU"] <= 1.0


def test_out_of_memory_names_settings_to_lower(tmp_path, capsys, monkeypatch):
    import lightning

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(lightning.Trainer, "fit", oom)
    code = main([
        "train", "--dataset", "synthetic", "--dataset-args", "num_images=4", "size=[32,32]",
        "--model", "unet", "--model-args", "depth=2", "base_width=4", "--img-size", "32", "32",
        "--epochs", "1", "--no-progress", "--out", str(tmp_path / "oom"),
    ])
    err = capsys.readouterr().err.strip()
    assert code == 1
    # Lightning's own log handlers may print around it; our part is one line, last, with no traceback of ours.
    errors = [line for line in err.splitlines() if line.startswith("distilseg train: error:")]
    assert len(errors) == 1 and "out of GPU memory" in errors[0]
    assert err.splitlines()[-1] == errors[0]
    assert "raise torch.OutOfMemoryError" not in err
    for hint in ("--batch-size", "--img-size", "16-mixed"):
        assert hint in errors[0]

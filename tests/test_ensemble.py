"""``ensemble``: trained models as one artifact (mean of logits) that eval / export / distill take unchanged."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distilseg.artifact import load_artifact, save_artifact
from distilseg.cli import main
from distilseg.models import create_model

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


pytestmark = pytest.mark.usefixtures("run_config_check")


def _member(folder: Path, seed: int, arch: str = "unet", names=None, **args) -> Path:
    torch.manual_seed(seed)
    model = create_model(arch, 7, **(args or {"depth": 2, "base_width": 4}))
    names = names or [f"c{i}" for i in range(7)]
    return save_artifact(folder, model, {"num_classes": 7, "class_names": names, "mean": MEAN, "std": STD,
                                         "input_size": [32, 48], "ignore_index": 255, "dataset": "synthetic",
                                         "metrics": {"mIoU": 0.1 * (seed + 1)}})


def test_ensemble_artifact_is_the_mean_of_its_members(tmp_path, capsys):
    a = _member(tmp_path / "a", 0)
    b = _member(tmp_path / "b", 1, arch="lite_student", stem_channels=4, stage_channels=[8, 8],
                stage2_dilations=[2], stage3_dilations=[2], decoder_channels=8)
    out = tmp_path / "ens"
    assert main(["ensemble", str(a), str(b), "--out", str(out)]) == 0
    assert f"2 models -> {out}" in capsys.readouterr().out
    ens, config = load_artifact(out)
    assert config["architecture"] == "ensemble" and config["class_names"] == [f"c{i}" for i in range(7)]
    assert [m["architecture"] for m in config["model_args"]["members"]] == ["unet", "lite_student"]
    assert [e["metrics"]["mIoU"] for e in config["ensemble_of"]] == [0.1, 0.2]
    ma, _ = load_artifact(a)
    mb, _ = load_artifact(b)
    x = torch.randn(2, 3, 30, 44)  # not a multiple of either stride: each member pads for itself
    with torch.no_grad():
        torch.testing.assert_close(ens(x), (ma(x) + mb(x)) / 2)
        logits, feats = ens(x, return_features=True)
        _, feats_a = ma(x, return_features=True)
    assert logits.shape == (2, 7, 30, 44)
    assert len(feats) == len(feats_a) and all(torch.equal(f, g) for f, g in zip(feats, feats_a))
    assert ens.feature_channels == ma.feature_channels


def test_ensemble_teaches_through_distill_and_evaluates(tmp_path):
    ens = tmp_path / "ens"
    assert main(["ensemble", str(_member(tmp_path / "a", 0)), str(_member(tmp_path / "b", 1)),
                 "--out", str(ens)]) == 0
    data = ["--dataset", "synthetic", "--dataset-args", "num_images=4", "size=[32, 48]"]
    assert main(["eval", "--checkpoint", str(ens), *data, "--split", "val", "--img-size", "32", "48",
                 "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    assert 0 <= json.loads((tmp_path / "ev" / "metrics.json").read_text())["mIoU"] <= 1
    out = tmp_path / "kd"
    assert main(["distill", "--teacher", str(ens), "--student", "unet", "--student-args", "depth=2", "base_width=4",
                 *data, "--img-size", "32", "48", "--epochs", "1", "--batch-size", "2", "--num-workers", "0",
                 "--no-progress", "--no-augment", "--accelerator", "cpu", "--kd", "logits@T=4:0.5,cwd:0.2",
                 "--out", str(out)]) == 0
    record = json.loads((out / "distill.json").read_text())
    assert record["teacher"] == str(ens) and record["teacher_architecture"] == "ensemble"


def test_ensemble_members_must_agree(tmp_path, capsys):
    a = _member(tmp_path / "a", 0)
    b = _member(tmp_path / "b", 1, names=[f"x{i}" for i in range(7)])
    assert main(["ensemble", str(a), str(b), "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{b}: class_names" in err[0] and "must agree" in err[0]
    assert main(["ensemble", str(a), "--out", str(tmp_path / "e1")]) == 2
    assert "at least 2 models" in capsys.readouterr().err
    with pytest.raises(Exception, match="no members"):
        create_model("ensemble", 7)

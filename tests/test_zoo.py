"""Bundled ``zoo:`` models load offline from the installed package and predict full-size CamVid label maps;
``eval``, ``bench`` and ``export`` accept ``zoo:NAME``."""
from __future__ import annotations

import json

import numpy as np
import pytest

import distilseg
from distilseg.cli import main
from distilseg.zoo import list_zoo, resolve_zoo

BUNDLED = ["camvid-teacher", "camvid-student", "camvid-student-kd"]


pytestmark = pytest.mark.usefixtures("run_config_check")


def test_bundled_models_are_listed():
    assert set(BUNDLED) <= set(list_zoo())


@pytest.mark.parametrize("name", BUNDLED)
def test_zoo_model_predicts_360x480_label_maps(name):
    seg = distilseg.load(f"zoo:{name}")
    assert seg.num_classes == 11 and len(seg.class_names) == 11
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(360, 480, 3), dtype=np.uint8)
    (labels,) = seg.predict([image])
    assert labels.shape == (360, 480) and labels.dtype == np.uint8
    assert int(labels.max()) < 11
    config = json.loads((resolve_zoo(name) / "config.json").read_text())
    assert config["zoo"]["weights"] == "float16" and config["dataset"] == "camvid"
    assert 0.0 < config["metrics"]["mIoU"] <= 1.0


def test_bundle_fits_the_repository_budget():
    total = sum(f.stat().st_size for name in BUNDLED for f in resolve_zoo(name).iterdir())
    assert total < 30e6  # all three under 30 MB


@pytest.mark.parametrize("name", BUNDLED)
def test_zoo_model_on_real_camvid(name, camvid_root, tmp_path):
    image = sorted((camvid_root / "val").glob("*.png"))[0]
    code = main(["predict", "--checkpoint", f"zoo:{name}", str(image), "--save-labels",
                 "--out", str(tmp_path / "pred"), "--no-progress"])
    assert code == 0
    from PIL import Image

    labels = np.asarray(Image.open(tmp_path / "pred" / f"{image.stem}_labels.png"))
    truth = np.asarray(Image.open(camvid_root / "valannot" / image.name))
    assert labels.shape == truth.shape == (360, 480)
    valid = truth != 11
    assert (labels[valid] == truth[valid]).mean() > 0.5  # a trained road-scene model, not noise


def test_zoo_student_through_bench_and_export(tmp_path, capsys):
    code = main(["bench", "--checkpoint", "zoo:camvid-student", "--img-size", "360", "480",
                 "--runs", "1", "--warmup", "0", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["params"] < 1_000_000

    code = main(["export", "--checkpoint", "zoo:camvid-student", "--format", "onnx",
                 "--out", str(tmp_path / "s.onnx"), "--check-images", "1"])
    assert code == 0 and (tmp_path / "s.onnx").is_file()

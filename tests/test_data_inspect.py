"""Class statistics, class weights and the `distilseg datasets` / `distilseg data inspect` commands."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilseg.cli import main
from distilseg.data import class_weights, compute_class_stats, create_dataset


pytestmark = pytest.mark.usefixtures("run_config_check")


def test_class_weights_exact() -> None:
    w = class_weights([10, 30, 60], "median_freq", presence_pixels=[100, 100, 100])
    np.testing.assert_allclose(w, [3.0, 1.0, 0.5])
    w = class_weights([10, 0, 30], "median_freq", presence_pixels=[50, 0, 100])
    np.testing.assert_allclose(w, [1.25, 0.0, 0.25 / 0.3])
    w = class_weights([10, 30, 60], "inv_log")
    np.testing.assert_allclose(w, [1 / math.log(1.12), 1 / math.log(1.32), 1 / math.log(1.62)])


def test_compute_class_stats_counts(tmp_path: Path) -> None:
    masks = [np.array([[0, 0, 1], [255, 1, 1]], dtype=np.uint8), np.array([[2, 2, 0, 0]], dtype=np.uint8)]
    for i, m in enumerate(masks):
        for sub, arr in (("images", np.zeros(m.shape + (3,), np.uint8)), ("masks", m)):
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(arr).save(tmp_path / sub / f"m{i}.png")
    ds = create_dataset("folder", root=tmp_path, num_classes=3)
    s = compute_class_stats(ds, workers=2)
    assert s["num_images"] == 2 and s["image_sizes"] == {"2x3": 1, "1x4": 1}
    assert s["pixel_counts"] == {"class_0": 4, "class_1": 3, "class_2": 2}
    assert s["presence_pixels"] == {"class_0": 10, "class_1": 6, "class_2": 4}
    assert s["ignored_pixels"] == 1 and s["total_pixels"] == 10 and s["labeled_pixels"] == 9
    assert s["frequencies"]["class_1"] == pytest.approx(3 / 9)
    # freq = [0.4, 0.5, 0.5], median 0.5
    assert s["class_weights"]["median_freq"] == {"class_0": 1.25, "class_1": 1.0, "class_2": 1.0}
    assert s["class_weights"]["inv_log"]["class_2"] == pytest.approx(1 / math.log(1.02 + 2 / 9), abs=1e-6)


def test_datasets_command(capsys) -> None:
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "camvid" in out and "synthetic" in out and "oxford-pet" in out
    assert main(["datasets", "--json"]) == 0
    infos = json.loads(capsys.readouterr().out)
    assert {i["name"]: i["num_classes"] for i in infos}["cityscapes"] == 19


def test_inspect_synthetic(tmp_path: Path, capsys) -> None:
    out = tmp_path / "inspect"
    code = main(["data", "inspect", "--dataset", "synthetic", "--split", "val", "--out", str(out),
                 "--dump-masks", "--validate", "--num-samples", "2"])
    assert code == 0
    stats = json.loads((out / "stats.json").read_text())
    ds = create_dataset("synthetic", split="val")
    assert stats["num_images"] == 40 and stats["image_sizes"] == {"96x128": 40}
    assert list(stats["pixel_counts"]) == ds.classes and stats["validation"]["ok"] is True
    assert set(stats["class_weights"]) == {"median_freq", "inv_log"}
    assert Image.open(out / "samples.png").size[0] > 100
    for i in (0, 39):
        dumped = np.asarray(Image.open(out / "masks" / f"{ds.samples[i].name}.png"))
        assert np.array_equal(dumped, ds.load_mask(i))
    assert "synthetic/val: 40 images" in capsys.readouterr().out


def test_inspect_user_errors(tmp_path: Path, capsys) -> None:
    assert main(["data", "inspect", "--dataset", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["data", "inspect", "--dataset", "camvid", "--root", str(tmp_path), "--out", str(tmp_path / "o")]) == 1
    assert "not a CamVid" in capsys.readouterr().err
    assert main(["data", "inspect", "--dataset", "synthetic", "--level", "2", "--out", str(tmp_path)]) == 2


def test_inspect_camvid_train_dumps_exact_masks(camvid_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x"
    assert main(["data", "inspect", "--dataset", "camvid", "--root", str(camvid_root), "--split", "train",
                 "--out", str(out), "--dump-masks", "--num-samples", "0"]) == 0  # grid: see synthetic test
    stats = json.loads((out / "stats.json").read_text())
    assert stats["num_images"] == 367
    assert list(stats["pixel_counts"]) == ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
                                           "Fence", "Car", "Pedestrian", "Bicyclist"]
    sources = sorted((camvid_root / "trainannot").glob("*.png"))
    dumped = sorted((out / "masks").glob("*.png"))
    assert [p.name for p in dumped] == [p.name for p in sources] and len(dumped) == 367
    total = np.zeros(256, dtype=np.int64)
    for src, dst in zip(sources, dumped):
        raw = np.asarray(Image.open(src))
        expected = np.where(raw == 11, 255, raw)
        assert np.array_equal(np.asarray(Image.open(dst)), expected), dst.name
        total += np.bincount(expected.ravel(), minlength=256)
    assert list(stats["pixel_counts"].values()) == total[:11].tolist()
    assert stats["ignored_pixels"] == int(total[255])

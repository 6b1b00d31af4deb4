"""Per-class accuracy is recall and mean class accuracy their mean; the mIoU recorded during training is
what `distilseg eval` reports, from the same preprocessing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from test_train_support import tiny_cfg

from distilseg.metrics import metrics_from_confusion


pytestmark = pytest.mark.usefixtures("run_config_check")


# ---- per-class accuracy = recall (MMSegmentation's Acc), mean class accuracy = their mean -------------
def test_class_accuracy_is_recall_on_rare_class() -> None:
    # class 2 is rare (10 of 1000 pixels) and always missed: (TP+TN)/N would call it 99 % accurate
    cm = np.array([
        [600, 20, 0],
        [30, 340, 0],
        [5, 5, 0],
    ])
    m = metrics_from_confusion(cm, ["a", "b", "rare"])
    acc = [r["accuracy"] for r in m["per_class"]]
    assert acc == pytest.approx([600 / 620, 340 / 370, 0.0], abs=1e-12)
    assert [r["recall"] for r in m["per_class"]] == pytest.approx(acc, abs=1e-12)
    assert m["mean_class_accuracy"] == pytest.approx(sum(acc) / 3, abs=1e-12)
    assert m["pixel_accuracy"] == pytest.approx(940 / 1000)


def test_class_accuracy_null_rule_and_mean() -> None:
    # class 1 predicted but absent from the ground truth: accuracy undefined, left out of the mean
    cm = np.array([[3, 1, 0], [0, 0, 0], [0, 0, 0]])
    m = metrics_from_confusion(cm)
    assert [r["accuracy"] for r in m["per_class"]] == [pytest.approx(0.75), None, None]
    assert m["mean_class_accuracy"] == pytest.approx(0.75)


# ---- validation during training == distilseg eval -----------------------------------------------------
def test_recorded_val_miou_equals_eval(tmp_path: Path) -> None:
    from distilseg.cli import main
    from distilseg.training.train import run_training

    # images 64x96 judged at 24x32: the image is downsized (antialiased in eval; albumentations' resize,
    # used before, scored 0.1508 here against eval's 0.1514) and the logits resized back to the native mask
    cfg = tiny_cfg(tmp_path / "run", epochs=2, lr=0.01, eval_size=[24, 32],
                   dataset_args={"num_images": 8, "size": [64, 96], "seed": 5})
    out = run_training(cfg)
    recorded = json.loads((out / "best" / "config.json").read_text())["metrics"]
    assert main(["eval", "--checkpoint", str(out / "best"), "--dataset", "synthetic", "--dataset-args",
                 "num_images=8", "size=[64, 96]", "seed=5", "--split", "val", "--out", str(tmp_path / "ev"),
                 "--no-progress", "--samples", "0"]) == 0
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert abs(recorded["mIoU"] - evaluated["mIoU"]) < 1e-6
    assert abs(recorded["pixel_accuracy"] - evaluated["pixel_accuracy"]) < 1e-6


def test_eval_transform_is_the_eval_preprocessing() -> None:
    from distilseg.data import IMAGENET_MEAN, IMAGENET_STD, build_eval_transform
    from distilseg.inference.preprocess import image_to_input, normalization_tensors

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(50, 70, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, size=(50, 70), dtype=np.uint8)
    out = build_eval_transform(img_size=(24, 32), mean=IMAGENET_MEAN, std=IMAGENET_STD)(image=image, mask=mask)
    mean, std = normalization_tensors(IMAGENET_MEAN, IMAGENET_STD)
    assert torch.equal(out["image"], image_to_input(image, (24, 32), mean, std)[0])
    assert torch.equal(out["mask"], torch.from_numpy(mask).long())

"""Two CPU processes (DDP, gloo): the synchronized validation metrics equal a single-process evaluation.

7 validation images on 2 processes: a padding sampler would score one image twice; ours must not.
Images are 40x56 and the model sees them resized to 32x48, so scoring happens at the masks' native size.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
import torch.nn.functional as F

from test_train_support import PYTHON


pytestmark = pytest.mark.usefixtures("run_config_check")


@pytest.mark.slow
def test_ddp_two_processes_metrics_match_single_process(tmp_path):
    out = tmp_path / "ddp"
    cmd = [PYTHON, "-m", "distilseg.cli", "train", "--dataset", "synthetic", "--dataset-args", "num_images=7",
           "size=[40,56]", "--model", "unet", "--model-args", "depth=2", "base_width=8", "--img-size", "32", "48",
           "--epochs", "1", "--batch-size", "2", "--num-workers", "0", "--accelerator", "cpu", "--devices", "2",
           "--strategy", "ddp", "--no-augment", "--no-progress", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    best = json.loads((out / "best/config.json").read_text())
    synced = best["metrics"]

    from distilseg.data import build_eval_transform, create_dataset
    from distilseg.artifact import load_artifact
    from distilseg.metrics import SegMetrics

    model, cfg = load_artifact(out / "best")
    tf = build_eval_transform(img_size=(32, 48), mean=cfg["mean"], std=cfg["std"])
    val = create_dataset("synthetic", split="val", transform=tf, num_images=7, size=[40, 56])
    metric = SegMetrics(7, ignore_index=255)
    valid_pixels = 0
    with torch.no_grad():
        for i in range(len(val)):
            s = val[i]
            logits = model(s["image"][None])
            logits = F.interpolate(logits, size=s["mask"].shape[-2:], mode="bilinear", align_corners=False)
            metric.update(logits.argmax(1), s["mask"][None])
            valid_pixels += int((s["mask"] != 255).sum())
    single = metric.compute()
    # every validation pixel counted exactly once across the two processes
    assert sum(r["support"] for r in synced["per_class"]) == valid_pixels
    assert synced["mIoU"] == pytest.approx(single["mIoU"], abs=1e-6)
    assert synced["pixel_accuracy"] == pytest.approx(single["pixel_accuracy"], abs=1e-6)
    for a, b in zip(synced["per_class"], single["per_class"]):
        assert a["support"] == b["support"]
        assert (a["iou"] is None) == (b["iou"] is None)
        if a["iou"] is not None:
            assert a["iou"] == pytest.approx(b["iou"], abs=1e-6)

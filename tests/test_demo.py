"""``distilseg demo``: the full pipeline on a shrunken setting (the real one is timed by hand, see below)."""
from __future__ import annotations

import json
import os
import re
import time

import pytest

import distilseg.apps.demo as demo


pytestmark = pytest.mark.usefixtures("run_config_check")


def test_demo_pipeline_writes_report_and_pictures(tmp_path, monkeypatch):
    small = dict(demo.DEMO_SETTINGS, dataset_args={"num_images": 8, "size": [32, 48]},
                 model_args={"depth": 2, "base_width": 8}, img_size=[32, 48], batch_size=4)
    monkeypatch.setattr(demo, "DEMO_SETTINGS", small)
    out = tmp_path / "demo"
    metrics = demo.run_demo(out, epochs=1, progress=False, num_predictions=2)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["mIoU"] == pytest.approx(metrics["mIoU"]) and saved["num_images"] == 8
    report = (out / "report.md").read_text()
    assert f"| mIoU | {100 * metrics['mIoU']:.1f} |" in report
    assert len(re.findall(r"^\| (sky|road|sidewalk|building|vegetation|car|person) \|", report, re.M)) == 7
    links = re.findall(r"\]\(([^)]+)\)", report)
    assert {"train/curves.png", "confusion.png", "samples.png", "metrics.json"} <= set(links)
    for link in links:
        assert (out / link).exists(), link
    preds = sorted(p.name for p in (out / "predictions").iterdir())
    assert preds == ["synthetic_val_00000_color.png", "synthetic_val_00000_overlay.png",
                     "synthetic_val_00001_color.png", "synthetic_val_00001_overlay.png"]
    # running it again on the same folder reuses the finished training instead of refusing
    again = demo.run_demo(out, epochs=1, progress=False, num_predictions=2)
    assert again["mIoU"] == pytest.approx(metrics["mIoU"])


@pytest.mark.skipif(not os.environ.get("DISTILSEG_FULL_DEMO"), reason="full demo (minutes): set DISTILSEG_FULL_DEMO=1")
def test_full_demo_quality_and_time(tmp_path):
    t0 = time.perf_counter()
    metrics = demo.run_demo(tmp_path / "demo", progress=False)
    assert time.perf_counter() - t0 < 300
    assert metrics["mIoU"] >= 0.6

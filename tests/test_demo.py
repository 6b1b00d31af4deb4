"""``distilseg demo``: the compress pipeline (teacher, student, KD student, INT8) on shrunken settings, its report
and pictures, the bundled model's prediction, and output made for a log file (the full demo is timed by hand)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import distilseg.distill.demo as demo

pytestmark = pytest.mark.usefixtures("run_config_check")

# Seconds, not meaningful numbers: the suite's compress preset (tests/configs/compress_test.yaml) as demo settings.
SMALL = {
    "dataset_args": {"num_images": 6, "size": [32, 48]},
    "img_size": [32, 48],
    "teacher_args": {"depth": 2, "base_width": 4},
    "student_args": {"stem_channels": 4, "stage_channels": [8, 8], "stage2_dilations": [2],
                     "stage3_dilations": [2], "decoder_channels": 8},
    "teacher_epochs": 1,
    "epochs": 1,
    "batch_size": 3,
    "calibration_images": 2,
    "bench_runs": 2,
    "bench_warmup": 0,
    "eval_batch_size": 3,
}
ROW_LABELS = ["teacher", "student", "KD student", "INT8 KD student"]
TOP_FILES = {"bench", "compress.json", "demo.json", "eval", "export", "kd_student", "pareto.png", "report.html",
             "report.md", "samples.png", "stages.json", "student", "teacher", "zoo_predict"}
ZOO_FILES = {"legend.png", "synthetic_frame.png", "synthetic_frame_color.png", "synthetic_frame_overlay.png"}
SRC = Path(demo.__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo with progress on, run in a fresh process whose stdout and stderr go to a file (not a terminal)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    log = out.parent / "demo.log"
    code = ("import sys, json; import distilseg.distill.demo as d; "
            f"d.run_demo(sys.argv[1], settings=json.loads(sys.argv[2]), progress=True)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p))
    with open(log, "wb") as fh:
        proc = subprocess.run([sys.executable, "-c", code, str(out), json.dumps(SMALL)], stdout=fh,
                              stderr=subprocess.STDOUT, env=env, timeout=300)
    text = log.read_bytes().decode("utf-8", "replace")
    assert proc.returncode == 0, text[-3000:]
    return out, text


def test_demo_report_has_the_four_rows_and_the_pictures(demo_run):
    out, _ = demo_run
    assert {p.name for p in out.iterdir()} == TOP_FILES
    assert {p.name for p in (out / "zoo_predict").iterdir()} == ZOO_FILES
    summary = json.loads((out / "compress.json").read_text())
    assert [r["label"] for r in summary["rows"]] == ROW_LABELS and summary["extra_rows"] == []
    result = json.loads((out / "demo.json").read_text())
    assert [r["label"] for r in result["rows"]] == ROW_LABELS
    for row in result["rows"]:
        for key in ("params", "size_mb", "latency_ms", "mIoU"):
            assert isinstance(row[key], (int, float)) and row[key] >= 0, (row["label"], key)
    by = {r["name"]: r for r in result["rows"]}
    assert by["int8_kd_student"]["params"] == by["kd_student"]["params"] == by["student"]["params"]
    assert by["teacher"]["architecture"] == "unet" and by["student"]["architecture"] == "lite_student"
    assert result["zoo_predict"]["command"].startswith("distilseg predict --checkpoint zoo:camvid-student-kd ")

    report = (out / "report.md").read_text()
    assert "1 epochs for the teacher, 1 epochs for each student" in report
    table = [line for line in report.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:] in ROW_LABELS]
    assert [line.split(" | ")[0][2:] for line in table] == ROW_LABELS
    for label, row in zip(ROW_LABELS, table):  # accuracy, size and latency of each row, as measured
        r = next(x for x in result["rows"] if x["label"] == label)
        assert f"| {r['size_mb']:.2f} |" in row and f"| {r['latency_ms']:.2f} |" in row
        assert row.endswith(f"| {r['mIoU']:.4f} |")
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report)
    assert links == ["pareto.png", "samples.png", "zoo_predict/synthetic_frame_overlay.png"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "src='pareto.png'" not in html
    for label in ROW_LABELS:
        assert f"<td>{label}</td>" in html
    from PIL import Image

    frame = Image.open(out / "zoo_predict" / "synthetic_frame.png")
    assert frame.size == (480, 360)
    overlay = Image.open(out / "zoo_predict" / "synthetic_frame_overlay.png")
    assert overlay.size[0] == 480 and overlay.size[1] > 360  # the class legend strip under the picture


def test_demo_output_in_a_file_is_lines_not_redraws(demo_run):
    _, text = demo_run
    assert text.count("\r") < 200
    assert "\r" not in text
    assert len(re.findall(r"^epoch 1/1, train_loss [0-9.]+, val_loss [0-9.]+, val_mIoU [0-9.]+", text, re.M)) == 3
    assert "[compress] export: finished" in text


def test_demo_again_reuses_finished_stages(demo_run, capsys):
    out, _ = demo_run
    before = json.loads((out / "stages.json").read_text())
    t0 = time.perf_counter()
    result = demo.run_demo(out, settings=SMALL, progress=False)
    assert time.perf_counter() - t0 < 60
    printed = capsys.readouterr().out
    assert ": running" not in printed and "[compress] teacher: done already" in printed
    assert json.loads((out / "stages.json").read_text()) == before
    assert [r["label"] for r in result["rows"]] == ROW_LABELS
    # other settings on the same folder are refused rather than mixed with the old results
    from distilseg.errors import UsageError

    with pytest.raises(UsageError, match="epochs"):
        demo.run_demo(out, settings=SMALL, epochs=2, progress=False)


def test_demo_rejects_a_bad_epoch_count(tmp_path):
    from distilseg.errors import UsageError

    with pytest.raises(UsageError, match="--epochs"):
        demo.run_demo(tmp_path / "d", epochs=0)
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(not os.environ.get("DISTILSEG_FULL_DEMO"), reason="full demo (minutes): set DISTILSEG_FULL_DEMO=1")
def test_full_demo_time_and_rows(tmp_path):
    t0 = time.perf_counter()
    result = demo.run_demo(tmp_path / "demo", progress=False)
    assert time.perf_counter() - t0 < 300
    assert [r["label"] for r in result["rows"]] == ROW_LABELS

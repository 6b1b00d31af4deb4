"""``distilseg compress`` with the internal ``test`` preset: every stage, outputs, then a re-run that skips all."""
from __future__ import annotations

import base64
import json

import pytest

from test_train_support import TEST_PRESET

from distilseg.cli import main  # noqa: E402
from distilseg.distill.report import format_rows_markdown, per_class_table  # noqa: E402

STAGES = ["teacher", "student", "kd_student", "export"]
ROWS = ["teacher", "student", "kd_student", "int8_kd_student"]


pytestmark = pytest.mark.usefixtures("run_config_check")


def test_compress_runs_all_stages_then_skips_them(tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["compress", "--dataset", "synthetic", "--preset", TEST_PRESET, "--accelerator", "cpu", "--out", str(out),
            "--dataset-args", "seed=0", "--teacher-view", "clean"]
    assert main(argv) == 0
    first = capsys.readouterr().out
    summary = json.loads((out / "compress.json").read_text())
    assert [r["name"] for r in summary["rows"]] == ROWS
    assert [r["name"] for r in summary["extra_rows"]] == ["kd_student_ort_fp32"]
    for row in summary["rows"]:
        for key in ("params", "size_mb", "gflops", "latency_ms", "fps", "mIoU"):
            assert isinstance(row[key], (int, float)) and row[key] >= 0, (row["name"], key)
        assert len(row["per_class"]) == 7
    by = {r["name"]: r for r in summary["rows"]}
    assert by["int8_kd_student"]["params"] == by["kd_student"]["params"] < by["teacher"]["params"]
    assert by["int8_kd_student"]["runtime"] == "onnxruntime" and by["teacher"]["runtime"] == "torch"
    for name in ROWS:
        ev = json.loads((out / "eval" / f"{name}.json").read_text())
        assert ev["mIoU"] == by[name]["mIoU"] and ev["split"] == "val"
    # the INT8 stage calibrates on the dataset the run was given, options included
    side = json.loads((out / "export" / "kd_student_int8.json").read_text())
    assert side["calibration"]["dataset"] == "synthetic" and side["calibration"]["dataset_args"] == {"seed": 0}
    distill = json.loads((out / "kd_student" / "distill.json").read_text())
    assert distill["kd"] == "logits@T=4:0.5"
    # the KD stage's config.yaml records its distillation, as `distill` runs do; the teacher saw the clean view
    import yaml

    kd_cfg = yaml.safe_load((out / "kd_student" / "config.yaml").read_text())
    assert (kd_cfg["kd"], kd_cfg["teacher_view"]) == ("logits@T=4:0.5", "clean")
    assert kd_cfg["teacher"] == str(out / "teacher" / "best")
    assert summary["settings"]["teacher_view"] == "clean"
    md = (out / "report.md").read_text()
    assert "INT8 KD student" in md and "Per-class IoU" in md and "pareto.png" in md
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html and "src='pareto.png'" not in html
    b64 = html.split("data:image/png;base64,", 1)[1].split("'", 1)[0]
    assert base64.b64decode(b64)[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "pareto.png").stat().st_size > 1000
    for stage in STAGES:
        assert f"[compress] {stage}: running" in first

    state_before = json.loads((out / "stages.json").read_text())
    assert main(argv) == 0
    second = capsys.readouterr().out
    for stage in STAGES + [f"eval_{r}" for r in ROWS] + [f"bench_{r}" for r in ROWS]:
        assert f"[compress] {stage}: done already" in second, stage
    assert "running" not in second
    assert json.loads((out / "stages.json").read_text()) == state_before

    # a removed output makes only its own stage run again
    (out / "eval" / "student.json").unlink()
    assert main(argv) == 0
    third = capsys.readouterr().out
    assert "[compress] eval_student: running" in third
    assert third.count(": running") == 1

    # other settings on the same folder: refused (exit 2) rather than mixing old and new results
    assert main(argv + ["--epochs", "2"]) == 2
    assert "epochs" in capsys.readouterr().err


def test_report_tables():
    rows = [
        {"name": "teacher", "label": "teacher", "params": 1000, "mIoU": 0.5,
         "per_class": [{"name": "a", "iou": 0.6}, {"name": "b", "iou": None}]},
        {"name": "student", "label": "student", "params": 10, "mIoU": 0.4, "latency_ms": 1.5,
         "per_class": [{"name": "a", "iou": 0.5}, {"name": "b", "iou": 0.1}]},
    ]
    md = format_rows_markdown(rows)
    assert "| teacher | n/a | 1,000 | n/a | n/a | n/a | n/a | 0.5000 |" in md
    headers, body = per_class_table(rows)
    assert headers == ["class", "teacher", "student", "student - teacher"]
    assert body == [["a", "0.6000", "0.5000", "-0.1000"], ["b", "n/a", "0.1000", "n/a"]]

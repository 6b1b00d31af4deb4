"""``OUT/config.yaml`` reproduces its run (train and distill), saved configs read back, and a distillation run
records its teacher: ``--resume`` rebuilds it without ``--teacher`` and refuses a different one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from distilseg.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("run_config_check")
DATA = ["--dataset", "synthetic", "--dataset-args", "num_images=8", "size=[32,48]", "--img-size", "32", "48",
        "--batch-size", "4", "--num-workers", "0", "--accelerator", "cpu", "--no-progress", "--seed", "3"]
TRAIN = ["train", *DATA, "--model", "unet", "--model-args", "depth=2", "base_width=8", "--epochs", "2"]
STUDENT = ["--student", "lite_student", "--student-args", "stem_channels=4", "stage_channels=[8,8]",
           "stage2_dilations=[2]", "stage3_dilations=[2]", "decoder_channels=8"]


def _history(out: Path) -> list[dict[str, str]]:
    lines = (out / "history.csv").read_text().splitlines()
    keys = lines[0].split(",")
    return [dict(zip(keys, line.split(","))) for line in lines[1:]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reproduce")
    teacher, kd = root / "teacher", root / "kd"
    assert main([*TRAIN, "--out", str(teacher)]) == 0
    assert main(["distill", *DATA, *STUDENT, "--teacher", str(teacher), "--kd", "logits@T=4:0.5,cwd:0.2",
                 "--epochs", "2", "--out", str(kd)]) == 0
    return {"root": root, "teacher": teacher, "kd": kd}


@pytest.mark.parametrize("command,run", [("train", "teacher"), ("distill", "kd")])
def test_saved_config_reproduces_the_run(runs, command, run):
    out = runs[run]
    again = runs["root"] / f"{run}_again"
    assert main([command, "--config", str(out / "config.yaml"), "--out", str(again)]) == 0
    assert _history(again) == _history(out) and len(_history(out)) == 2
    first, second = (yaml.safe_load((o / "config.yaml").read_text()) for o in (out, again))
    assert {**first, "out": None} == {**second, "out": None}


def test_the_suite_wide_config_check_names_the_key_that_does_not_read_back(runs, tmp_path, config_reproduce_check,
                                                                          config_reproduce_pending):
    """conftest checks every OUT/config.yaml the suite's runs write; here it is shown to fail when it should."""
    for run in ("teacher", "kd"):  # the real ones agree (and were checked when the runs wrote them)
        assert config_reproduce_check(runs[run] / "config.yaml") == []
    saved = yaml.safe_load((runs["kd"] / "config.yaml").read_text())
    # values the resolver changes: a square size given as one number, precision as a number, a missing key
    bad = tmp_path / "bad"
    bad.mkdir()
    corrupt = {k: v for k, v in saved.items() if k != "gamma"}
    (bad / "config.yaml").write_text(yaml.safe_dump({**corrupt, "img_size": 32, "precision": 32, "out": str(bad)},
                                                    sort_keys=False))
    problems = config_reproduce_check(bad / "config.yaml")
    assert [p.split(": key ")[1].split()[0] for p in problems] == ["'img_size'", "'precision'", "'gamma'"], problems
    assert "saved as 32 but `distilseg distill --config` resolves it to [32, 32]" in problems[0]
    # a key the command does not know: the file does not read back
    (bad / "config.yaml").write_text(yaml.safe_dump({**saved, "out": str(bad), "colour": "red"}))
    assert "does not read it back" in config_reproduce_check(bad / "config.yaml")[0]
    # the wiring: a run config written under the session's temporary folder is found and checked once
    pending = config_reproduce_pending()  # the file just written
    assert len(pending) == 1 and "does not read it back" in pending[0]
    (bad / "config.yaml").write_text(yaml.safe_dump({**saved, "out": str(bad), "img_size": 32}))
    pending = config_reproduce_pending()
    assert len(pending) == 1 and "key 'img_size'" in pending[0]
    assert config_reproduce_pending() == []  # checked: neither this test's fixture nor the session reports it again


def test_distill_records_its_teacher_and_resume_reads_the_record(runs, capsys):
    kd = runs["kd"]
    record = json.loads((kd / "distill.json").read_text())
    assert record["teacher"] == str(runs["teacher"]) and len(record["teacher_sha256"]) == 64
    # resume with no --teacher: the record names it; the record is kept as it is
    assert main(["distill", *DATA, *STUDENT, "--kd", "logits@T=4:0.5,cwd:0.2", "--epochs", "3", "--resume",
                 "--out", str(kd)]) == 0
    assert len(_history(kd)) == 3
    assert json.loads((kd / "distill.json").read_text()) == record
    # the same teacher elsewhere (same weights) is the same teacher
    copy = runs["root"] / "teacher_copy"
    shutil.copytree(runs["teacher"] / "best", copy)
    assert main(["distill", *DATA, *STUDENT, "--teacher", str(copy), "--kd", "logits@T=4:0.5,cwd:0.2",
                 "--epochs", "3", "--resume", "--out", str(kd)]) == 0
    capsys.readouterr()


def test_resume_with_another_teacher_is_refused_in_one_line(runs, tmp_path, capsys):
    from distilseg.artifact import load_artifact, save_artifact

    model, config = load_artifact(runs["teacher"] / "best")
    for p in model.parameters():
        p.data.add_(0.5)
    other = save_artifact(tmp_path / "other", model, config)
    before = (runs["kd"] / "distill.json").read_text()
    assert main(["distill", *DATA, *STUDENT, "--teacher", str(other), "--epochs", "9", "--resume",
                 "--out", str(runs["kd"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a distillation run of teacher" in err[0] and str(runs["teacher"]) in err[0]
    assert (runs["kd"] / "distill.json").read_text() == before


def test_saved_configs_in_the_repository_read_back(tmp_path):
    """Every saved OUT/config.yaml under benchmarks/results resolves (num_classes, recorded there, included)."""
    from distilseg.distill.api import DistillConfig
    from distilseg.training.config import TrainConfig, resolve_config

    files = sorted((REPO / "benchmarks" / "results").glob("*/config.yaml"))
    assert files
    for f in files:
        saved = yaml.safe_load(f.read_text())
        command = "distill" if "teacher" in saved else "train"
        args = build_parser().parse_args([command, "--config", str(f), "--out", str(tmp_path / f.parent.name)])
        cfg = resolve_config(args, DistillConfig if command == "distill" else TrainConfig).to_dict()
        assert {k: cfg[k] for k in saved if k not in ("out", "num_classes")} == \
            {k: v for k, v in saved.items() if k not in ("out", "num_classes")}, f


def test_compress_presets_are_yaml_files_that_ship_in_the_wheel():
    import fnmatch
    import tomllib

    from distilseg.distill.compress import PRESET_DIR, PRESETS, load_preset

    assert sorted(PRESETS) == ["camvid-cpu", "quick", "seed"] and PRESET_DIR.is_dir()
    assert load_preset("full") == PRESETS["seed"]  # the former name still works
    pkg = REPO / "src" / "distilseg"
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["distilseg"]
    for name in PRESETS:
        rel = (PRESET_DIR / f"{name}.yaml").relative_to(pkg).as_posix()
        assert any(fnmatch.fnmatch(rel, pat.replace("**/", "*/")) for pat in patterns), rel
    assert load_preset(str(Path(__file__).resolve().parent / "configs" / "compress_test.yaml"))["epochs"] == 1


def test_train_config_is_the_typed_schema_of_the_settings():
    from distilseg.training.config import DEFAULTS, TrainConfig
    from distilseg.errors import UsageError

    cfg = TrainConfig.from_dict({"dataset": "synthetic", "model": "unet", "out": "o", "img_size": 32, "num_classes": 3})
    assert cfg.img_size == [32, 32] and cfg.to_dict().keys() == DEFAULTS.keys()
    with pytest.raises(UsageError, match="^lr must be positive"):
        TrainConfig.from_dict({"dataset": "synthetic", "model": "unet", "out": "o", "lr": -1})
    with pytest.raises(UsageError, match="unknown setting 'teacher'"):
        TrainConfig.from_dict({"dataset": "synthetic", "model": "unet", "out": "o", "teacher": "t"})

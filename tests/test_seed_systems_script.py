"""benchmarks/seed_systems.py: its commands and the JSON it assembles from run folders (fake ones: the real table
takes hours of CPU)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_systems.py"


@pytest.fixture(scope="module")
def seed():
    spec = importlib.util.spec_from_file_location("seed_systems", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(run: Path, miou: float, steps: int, minutes: float) -> None:
    """A finished run folder; the seed students' best/ is a real (tiny) model artifact."""
    if run.name.startswith("msa_unet_student"):
        from distilseg.artifact import save_artifact
        from distilseg.models import create_model

        torch.manual_seed(len(run.name))
        model = create_model("msa_unet_student", 2, base_width=8)
        save_artifact(run / "best", model, {"num_classes": 2, "class_names": ["Sky", "Road"], "input_size": [32, 32],
                                            "mean": [0.5] * 3, "std": [0.5] * 3, "ignore_index": 255})
    else:
        (run / "best").mkdir(parents=True)
        (run / "best" / "config.json").write_text("{}")
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text(json.dumps(
        {"mIoU": miou, "per_class": [{"name": "Sky", "iou": 0.9}, {"name": "Road", "iou": miou}]}))
    (run / "history.csv").write_text(
        "epoch,train_loss,val_loss,val_mIoU,lr,skipped_nonfinite,step,lr_end,time_budget,budget_steps\n"
        f"1,1.0,1.0,0.1,0.001,0,{steps // 2},0.0005,30.0,\n"
        f"2,0.5,0.5,{miou},0.0005,0,{steps},0.0,30.0,{steps}\n")
    (run / "latency.json").write_text(json.dumps({"params": 1000, "gflops": 1.5, "ort_fp32_ms": 10.0,
                                                  "ort_int8_ms": 5.0}))


def test_rows_and_table_from_run_folders(seed, tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    for name, miou, steps in (("msa_unet", 0.5, 40), ("msa_unet_student", 0.3, 90), ("msa_unet_student_kd", 0.35, 80)):
        _fake_run(runs / name, miou, steps, 30.0)
        seed.add_minutes(runs / name, 20.0, done=False)
        seed.add_minutes(runs / name, 10.5, done=True)  # a resumed run: the minutes add up
    out, kept = tmp_path / "seed_systems.json", tmp_path / "kept"
    assert seed.main(["--runs", str(runs), "--models", "msa_unet_student_kd,msa_unet,msa_unet_student",
                      "--json", str(out), "--budget", "30", "--fp16-dir", str(kept)]) == 0
    table = json.loads(out.read_text())
    assert table["budget_minutes"] == 30.0 and table["img_size"] == [256, 320]
    assert "0001TP" in table["val_split"]
    assert [r["model"] for r in table["rows"]] == ["msa_unet", "msa_unet_student", "msa_unet_student_kd"]
    kd = table["rows"][2]
    assert kd == {"model": "msa_unet_student_kd", "kd": True, "init": seed.MODELS["msa_unet_student_kd"][2],
                  "val_mIoU": 0.35, "params": 1000, "gflops": 1.5, "minutes": 30.5, "steps": 80,
                  "budget_steps": 80, "ort_fp32_ms": 10.0, "ort_int8_ms": 5.0,
                  "per_class": {"Sky": 0.9, "Road": 0.35}}
    assert table["rows"][0]["kd"] is False and table["rows"][0]["init"] == "scratch"
    # the two seed students' best models are kept with fp16 weights, the same network and outputs up to fp16
    from distilseg.artifact import load_artifact

    assert sorted(p.name for p in kept.iterdir()) == ["msa_unet_student", "msa_unet_student_kd"]
    for name in ("msa_unet_student", "msa_unet_student_kd"):
        full, _ = load_artifact(runs / name / "best")
        half, config = load_artifact(kept / name / "best_fp16")
        assert config["num_classes"] == 2
        weights = {k: v for k, v in half.state_dict().items() if v.is_floating_point()}
        assert weights and all(torch.equal(v, full.state_dict()[k].half().float()) for k, v in weights.items())

    # the page: one row per model, mIoU per CPU-hour = mIoU / (minutes / 60), per-class IoU
    page = tmp_path / "seed.md"
    assert seed.main(["--json", str(out), "--markdown", str(page)]) == 0
    text = page.read_text()
    assert "| `msa_unet_student_kd` | yes | " in text and "| 35.0 | 68.9 | 1,000 | 1.50 | 30.5 | 80 | 10.0 | 5.0 |" in text
    assert "| model | Sky | Road |" in text and "| `msa_unet` | 90.0 | 50.0 |" in text
    # the rows not trained yet are named, with the flag that trains them
    pending = [m for m in seed.MODELS if m not in ("msa_unet", "msa_unet_student", "msa_unet_student_kd")]
    assert f"Not trained yet (`--models {','.join(pending)}`)" in text and "`unet`" in text
    # a page that is not the script's own is never overwritten
    other = tmp_path / "notes.md"
    other.write_text("my notes\n")
    with pytest.raises(SystemExit):
        seed.main(["--json", str(out), "--markdown", str(other)])
    assert other.read_text() == "my notes\n"


def test_dry_run_prints_the_commands(seed, tmp_path: Path, capsys) -> None:
    assert seed.main(["--dry-run", "--runs", str(tmp_path), "--budget", "5", "--models",
                      "msa_unet_student_kd,msa_unet,danet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    train = [line for line in lines if " eval " not in line]
    assert " train " in train[0] and "--model msa_unet " in train[0] + " "
    assert "--pretrained imagenet" in train[1] and "encoder=efficientnet_lite2" in train[1]
    kd = train[2]  # the KD row comes after its teacher's
    assert " distill " in kd and f"--teacher {tmp_path / 'msa_unet' / 'best'}" in kd and "--kd original" in kd
    for line in train:
        assert "--time-budget 5 " in line and "--train-split train+val --holdout 0001TP" in line
        assert "--img-size 256 320" in line and "--resume" in line
    assert all("--split train+val --holdout 0001TP" in line for line in lines if " eval " in line)


def test_train_args_go_to_every_row_and_into_the_json(seed, tmp_path: Path, capsys) -> None:
    assert seed.main(["--dry-run", "--runs", str(tmp_path), "--models", "msa_unet,msa_unet_student_kd",
                      "--train-args=--keep-freed-memory --num-workers 2"]) == 0
    train = [line for line in capsys.readouterr().out.splitlines() if " eval " not in line]
    assert len(train) == 2 and all("--num-workers 1 --seed 0 --no-progress --keep-freed-memory --num-workers 2 "
                                   "--time-budget 30 " in line for line in train)  # after the recipe: they win
    runs = tmp_path / "runs"
    _fake_run(runs / "msa_unet", 0.5, 40, 30.0)
    seed.add_minutes(runs / "msa_unet", 30.0, done=True)
    out = tmp_path / "kfm.json"
    common = ["--runs", str(runs), "--models", "msa_unet", "--json", str(out), "--fp16-dir", str(tmp_path / "k")]
    assert seed.main([*common, "--train-args=--keep-freed-memory"]) == 0
    assert json.loads(out.read_text())["train_args"] == ["--keep-freed-memory"]
    page = tmp_path / "kfm.md"
    assert seed.main(["--json", str(out), "--markdown", str(page)]) == 0
    assert "Every row trained with `--keep-freed-memory`." in page.read_text()
    # rows of other settings never share a table
    before = out.read_bytes()
    with pytest.raises(SystemExit):
        seed.main(common)
    assert "its rows were trained with --train-args '--keep-freed-memory'" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_unknown_model_is_refused(seed, capsys) -> None:
    with pytest.raises(SystemExit):
        seed.main(["--dry-run", "--models", "nope"])
    assert "unknown model(s) nope" in capsys.readouterr().err


def test_committed_seed_students_match_the_table(seed) -> None:
    """The two fp16 seed students in benchmarks/results are the table's rows: same network, held-out street and
    score, and they run."""
    table = json.loads((SCRIPT.parent / "results" / "seed_systems.json").read_text())
    rows = {r["model"]: r for r in table["rows"]}
    from distilseg.artifact import load_artifact

    for name in seed.KEEP_FP16:
        model, config = load_artifact(seed.RESULTS / name / "best_fp16")
        assert config["architecture"] == "msa_unet_student" and config["holdout"] == seed.HOLDOUT
        assert config["metrics"]["mIoU"] == pytest.approx(rows[name]["val_mIoU"], abs=1e-9)
        assert sum(p.numel() for p in model.parameters()) == rows[name]["params"]
        with torch.no_grad():
            out = model.float().eval()(torch.zeros(1, 3, 64, 96))
        assert out.shape == (1, config["num_classes"], 64, 96) and torch.isfinite(out).all()

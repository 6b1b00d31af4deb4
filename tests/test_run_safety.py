"""Run safety (issue 15, items 4, 5, 12-15): one run per output folder, validated numeric settings,
output problems and wrong types as one-line errors, interrupted runs that say how to continue, and no
silent restart over a finished run."""
from __future__ import annotations

import csv
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distilseg.cli import main
from distilseg.errors import OutputError, UsageError
from test_train_support import PYTHON, script_header, tiny_cfg

DATA_ARGS = ["--dataset-args", "num_images=4", "size=[32,48]"]
TRAIN = ["train", "--dataset", "synthetic", "--model", "unet", "--model-args", "depth=2", "base_width=4",
         "--img-size", "32", "48", "--batch-size", "2", "--num-workers", "0", "--accelerator", "cpu",
         "--no-progress", "--no-augment", *DATA_ARGS]


pytestmark = pytest.mark.usefixtures("run_config_check")


def _err_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("distilseg ")]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- item 4: one run per output folder ------------------------------------------------------------------


def test_second_run_on_a_locked_folder_is_refused_and_a_stale_lock_does_not_block(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [PYTHON, "-c", "import fcntl, sys, time\n"
                       "f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                       "print('locked', flush=True); time.sleep(120)\n", str(out / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        code = main([*TRAIN, "--epochs", "1", "--out", str(out)])
        lines = _err_lines(capsys)
        assert code == 2
        assert len(lines) == 1 and lines[0].startswith("distilseg train: error: --out ")
        assert str(out) in lines[0] and "another run is using this folder" in lines[0]
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # the refused run wrote nothing
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    # the holder is dead, its .lock file stays: the next run goes ahead
    assert (out / ".lock").exists()
    assert main([*TRAIN, "--epochs", "1", "--limit-train-batches", "1", "--out", str(out)]) == 0
    assert (out / "best" / "config.json").is_file()


# ---- item 5: numeric settings finite and in range ---------------------------------------------------------


@pytest.mark.parametrize("key, value, words", [
    ("gamma", ".nan", "finite"), ("gamma", "1.5", "(0, 1]"), ("gamma", "0", "(0, 1]"),
    ("lr", ".inf", "finite"), ("lr", "-0.1", "positive"), ("weight_decay", "-1e-4", "negative"),
    ("warmup_epochs", "-.inf", "finite"), ("encoder_lr_mult", ".nan", "finite"), ("grad_clip", "0", "positive"),
    ("epochs", "0", "positive integer"), ("epochs", "2.5", "positive integer"), ("batch_size", "true", "integer"),
    ("seed", "-1", "non-negative"), ("seed", "4294967296", "at most"), ("num_workers", "-2", "non-negative"),
])
def test_yaml_numbers_must_be_finite_and_in_range(tmp_path, capsys, key, value, words):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"dataset: synthetic\nmodel: unet\n{key}: {value}\n")
    before = _snapshot(tmp_path)
    code = main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "o")])
    lines = _err_lines(capsys)
    assert code == 2 and len(lines) == 1
    assert f"{cfg_file}: {key} (--{key.replace('_', '-')})" in lines[0] and words in lines[0]
    assert _snapshot(tmp_path) == before and not (tmp_path / "o").exists()


def test_nan_flag_is_refused_naming_the_flag(tmp_path, capsys):
    assert main(["train", "--dataset", "synthetic", "--model", "unet", "--gamma", "nan", "--out",
                 str(tmp_path / "o")]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "--gamma must be a finite number, got nan" in lines[0]


# ---- item 12: output locations and full disks ------------------------------------------------------------


def test_out_naming_an_existing_file_is_refused_before_any_work(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert main([*TRAIN, "--epochs", "1", "--out", str(f)]) == 2
    lines = _err_lines(capsys)
    assert lines == [f"distilseg train: error: --out {f}: is a file, not a folder; choose a folder for the outputs"]
    assert f.read_text() == "keep me"


def _tiny_artifact(folder: Path, num_classes: int = 7) -> Path:
    from distilseg.data import create_dataset
    from distilseg.artifact import save_artifact
    from distilseg.models import create_model

    ds = create_dataset("synthetic", split="val", num_images=2, size=[32, 48])
    model = create_model("unet", num_classes, depth=2, base_width=4)
    return save_artifact(folder, model, {
        "num_classes": num_classes, "class_names": list(ds.classes)[:num_classes],
        "palette": ds.palette.tolist()[:num_classes], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "input_size": [32, 48], "ignore_index": 255, "dataset": "synthetic"})


def test_eval_checks_its_output_location_before_scoring(tmp_path, capsys, monkeypatch):
    import distilseg.engine.evaluate as ev
    import distilseg.inference.segmenter as seg

    art = _tiny_artifact(tmp_path / "art")
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    called = []
    monkeypatch.setattr(ev, "evaluate_model", lambda *a, **k: called.append("scored"))
    monkeypatch.setattr(seg, "load", lambda *a, **k: called.append("loaded"))
    for out, why in ((blocker, "is a file, not a folder"), (blocker / "sub", f"{blocker} is a file, not a folder")):
        code = main(["eval", "--checkpoint", str(art), "--dataset", "synthetic", "--dataset-args", "num_images=2",
                     "size=[32,48]", "--out", str(out), "--no-progress"])
        lines = _err_lines(capsys)
        assert code == 2 and len(lines) == 1
        assert lines[0].startswith(f"distilseg eval: error: --out {out}: ") and why in lines[0]
    assert called == []  # refused before loading the model or scoring anything


def test_read_only_output_folder_is_one_line(tmp_path, capsys, monkeypatch):
    import tempfile

    import distilseg.io as dio

    ro = tmp_path / "ro"
    ro.mkdir()
    real = tempfile.mkstemp

    def mkstemp(*a, dir=None, **k):  # a read-only folder (chmod does not stop root, so simulate it)
        if dir is not None and Path(dir) == ro:
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(*a, dir=dir, **k)

    monkeypatch.setattr(dio.tempfile, "mkstemp", mkstemp)
    code = main(["predict", "--checkpoint", str(tmp_path / "missing"), "x.png", "--out", str(ro)])
    lines = _err_lines(capsys)
    assert code == 2 and lines == [f"distilseg predict: error: --out {ro}: cannot write in {ro} (Permission denied)"]
    with pytest.raises(OutputError, match=r"ro/a\.json: cannot write \(Permission denied\); choose another --out"):
        dio.atomic_write_json(ro / "a.json", {})


def test_disk_full_during_an_atomic_write_is_one_line_and_keeps_the_old_file(tmp_path, capsys, monkeypatch):
    import distilseg.io as dio

    target = tmp_path / "history.csv"
    target.write_text("old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dio.os, "fsync", full)
    with pytest.raises(OutputError) as info:
        dio.atomic_write_text(target, "new\n")
    assert str(info.value) == f"{target}: cannot write (No space left on device); free some space or choose another --out"
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["history.csv"]
    # through the CLI: the first file a run writes (config.yaml) hits the full disk
    out = tmp_path / "run"
    code = main([*TRAIN, "--epochs", "1", "--out", str(out)])
    lines = _err_lines(capsys)
    assert code == 1 and lines == [
        f"distilseg train: error: {out / 'config.yaml'}: cannot write (No space left on device); "
        f"free some space or choose another --out"]


def test_export_out_must_be_a_file_name(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    code = main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")])
    lines = _err_lines(capsys)
    assert code == 2 and len(lines) == 1 and f"--out {tmp_path / 'd'}: is a folder" in lines[0]


# ---- item 13: wrong types ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, needle", [
    ("weight_decay: lots", "weight_decay (--weight-decay) must be a number, got 'lots'"),
    ("seed: abc", "seed (--seed) must be a non-negative integer, got 'abc'"),
    ("dataset_args: [1, 2]", "dataset_args (--dataset-args) must be a mapping of KEY: VALUE settings"),
    ("model_args: 3", "model_args (--model-args) must be a mapping of KEY: VALUE settings"),
    ("augment: 'no'", "augment (--augment) must be true or false"),
    ("img_size: [32, '48']", "img_size (--img-size) must be two positive integers"),
    ("optimizer: [adam]", "optimizer (--optimizer) must be a name"),
])
def test_yaml_wrong_types_name_file_and_key(tmp_path, capsys, text, needle):
    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(f"dataset: synthetic\nmodel: unet\n{text}\n")
    assert main(["train", "--config", str(cfg_file), "--out", str(tmp_path / "o")]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and f"{cfg_file}: {needle}" in lines[0]


@pytest.mark.parametrize("change, needle", [
    ({"num_classes": "eleven"}, "num_classes must be a positive integer, got 'eleven'"),
    ({"model_args": {"depth": 2, "base_widht": 4}},
     "architecture 'unet' with model_args {'depth': 2, 'base_widht': 4} cannot be built (unet: unknown argument"),
    ({"architecture": "no_such_net"}, "architecture 'no_such_net' with model_args {'depth': 2, 'base_width': 4} cannot be built ("),
    ({"input_size": [32]}, "input_size must be two positive integers [H, W]"),
    ({"class_names": "a,b"}, "class_names must be a list of 7 names"),
    ({"std": [0.2, 0, 0.2]}, "std must be a list of 3 numbers above 0"),
])
def test_artifact_config_wrong_types_name_file_and_key(tmp_path, capsys, change, needle):
    art = _tiny_artifact(tmp_path / "art")
    conf = json.loads((art / "config.json").read_text())
    conf.update(change)
    (art / "config.json").write_text(json.dumps(conf))
    before = _snapshot(art)
    code = main(["eval", "--checkpoint", str(art), "--dataset", "synthetic", *DATA_ARGS, "--out", str(tmp_path / "e"),
                 "--no-progress"])
    lines = _err_lines(capsys)
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"distilseg eval: error: {art / 'config.json'}: ") and needle in lines[0]
    assert _snapshot(art) == before


# ---- item 14: interrupted runs ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_run_non_zero_with_the_command_that_resumes_it(tmp_path, sig):
    out = tmp_path / "run"
    argv = [*TRAIN, "--epochs", "2", "--checkpoint-every-steps", "1", "--out", str(out)]
    code = script_header() + (
        "import time\n"
        "from distilseg.engine import module\n"
        "step = module.SegModule.training_step\n"
        "def slow(self, *a, **k):\n"
        "    time.sleep(0.4)\n"
        "    return step(self, *a, **k)\n"
        "module.SegModule.training_step = slow\n"
        "from distilseg.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    proc = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoints" / "last.ckpt"
    t0 = time.monotonic()
    while not ckpt.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 120, "no resume state appeared"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + int(sig), err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("distilseg ")]
    assert len(lines) == 1, err
    name = signal.Signals(sig).name
    assert lines[0].startswith(f"distilseg train: error: run interrupted by {name}; its state at step ")
    assert f"is saved in {ckpt}; to continue it, run: distilseg " in lines[0]
    again = shlex.split(lines[0].split("; to continue it, run: ", 1)[1])
    assert again == ["distilseg", *argv, "--resume"]
    assert main(again[1:]) == 0  # the printed command finishes the run
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert all(r["lr"] != "" for r in rows)


def test_sigterm_while_the_datasets_are_built_is_one_line_and_exit_143(tmp_path):
    out, marker = tmp_path / "run", tmp_path / "building"
    argv = [*TRAIN, "--epochs", "1", "--out", str(out)]
    code = script_header() + (
        "import time\n"
        "from distilseg.engine import train\n"
        "def slow(cfg):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    time.sleep(60)\n"
        "train.build_datasets = slow\n"
        "from distilseg.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    proc = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() - t0 < 120, "the run never reached dataset building"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("distilseg ")]
    assert lines == [f"distilseg train: error: run interrupted by SIGTERM before training started; nothing was "
                     f"saved; to start it again, run: {shlex.join(['distilseg', *argv])}"], err
    assert not (out / "checkpoints").exists()


def test_sigterm_handler_is_lightnings_during_fit_and_restored_after(tmp_path):
    """The setup-time handler must not be called by Lightning's composed handler during fit (it would raise
    mid-step instead of saving), and the process' handler is back as it was after the run."""
    from lightning.pytorch.callbacks import Callback

    from distilseg.engine.train import run_training

    seen = []

    class Look(Callback):
        def on_train_start(self, trainer, *a, **k):
            handler = signal.getsignal(signal.SIGTERM)
            seen.append(hasattr(handler, "distilseg_previous"))
            seen.append(any(hasattr(h, "distilseg_previous") for h in getattr(handler, "signal_handlers", [])))

    before = signal.getsignal(signal.SIGTERM)
    run_training(tiny_cfg(tmp_path / "run", epochs=1), extra_callbacks=[Look()])
    assert seen == [False, False]
    assert signal.getsignal(signal.SIGTERM) == before


def test_history_row_of_a_resumed_epoch_has_its_lr(tmp_path):
    from lightning.pytorch.callbacks import Callback

    from distilseg.engine.train import run_training

    class Stop(Callback):
        def on_train_batch_end(self, trainer, *a, **k):
            if trainer.global_step == 3:  # within epoch 1 (8 images, batch 2: 4 steps an epoch)
                raise RuntimeError("stop")

    out = tmp_path / "run"
    cfg = tiny_cfg(out, epochs=2, batch_size=2, checkpoint_every_steps=1, resume=True, lr=0.01, gamma=0.5)
    with pytest.raises(RuntimeError, match="stop"):
        run_training(cfg, extra_callbacks=[Stop()])
    assert not (out / "history.csv").exists()  # stopped within the first epoch (4 steps)
    run_training(cfg)
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["epoch"], float(r["lr"])) for r in rows] == [("1", 0.01), ("2", pytest.approx(0.005))]


# ---- item 15: no silent restart over a finished run --------------------------------------------------------


@pytest.mark.parametrize("resume", [True, False])
def test_finished_run_without_resume_state_is_not_replaced(tmp_path, capsys, resume):
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "1", "--limit-train-batches", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "checkpoints" / "last.ckpt").unlink()
    before = _snapshot(out)
    code = main([*TRAIN, "--epochs", "1", "--out", str(out), *(["--resume"] if resume else [])])
    lines = _err_lines(capsys)
    assert code == 2 and lines == [
        f"distilseg train: error: {out} holds the results of an earlier run (best, last, history.csv) but no "
        f"resume state ({out / 'checkpoints' / 'last.ckpt'}): there is nothing to continue, and a new run would "
        f"replace them; choose a new --out (or delete {out} to start over)"]
    after = _snapshot(out)
    after.pop(".lock", None), before.pop(".lock", None)
    assert after == before


def test_resume_with_no_earlier_run_still_starts_from_the_beginning(tmp_path):
    out = tmp_path / "fresh"
    assert main([*TRAIN, "--epochs", "1", "--limit-train-batches", "1", "--resume", "--out", str(out)]) == 0
    assert (out / "best" / "config.json").is_file()


def test_records_are_plain_data_whatever_the_settings_hold(tmp_path):
    """A run's config.yaml (engine.config.save_config) and an artifact's config.json take numpy / torch numbers,
    paths and tuples through one converter."""
    import json as _json

    import numpy as np
    import torch
    import yaml as _yaml

    from distilseg.artifact import save_artifact
    from distilseg.io import plain_data

    odd = {"lr": np.float32(0.5), "epochs": np.int64(3), "size": (2, 4), "root": tmp_path, "w": torch.tensor([1.5]),
           "flag": np.bool_(True), 7: None}
    assert plain_data(odd) == {"lr": 0.5, "epochs": 3, "size": [2, 4], "root": str(tmp_path), "w": [1.5],
                               "flag": True, "7": None}
    assert plain_data({"x": object}) == {"x": "<class 'object'>"}
    import enum

    class Level(enum.IntEnum):
        HIGH = 2

    subclasses = plain_data({"f": np.float64(0.25), "s": np.str_("a"), "e": Level.HIGH, "b": np.bool_(False)})
    assert subclasses == {"f": 0.25, "s": "a", "e": 2, "b": False}
    assert [type(v) for v in subclasses.values()] == [float, str, int, bool]
    _yaml.safe_dump(subclasses)  # the safe dumper takes exact built-in types only
    assert _yaml.safe_load(_yaml.safe_dump(plain_data(odd)))["epochs"] == 3  # what save_config writes
    art = save_artifact(tmp_path / "art", torch.nn.Conv2d(3, 2, 1), {"architecture": "x", "num_classes": 2, **odd})
    assert _json.loads((art / "config.json").read_text())["lr"] == 0.5

"""Output folders: one run per folder (a lock), bad output locations and full disks as one-line errors that
keep what was there, no silent restart over a finished run, records that are plain data."""
from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distilseg.cli import main
from distilseg.errors import OutputError
from test_train_support import PYTHON, TRAIN, err_lines, snapshot, tiny_artifact

pytestmark = pytest.mark.usefixtures("run_config_check")


# ---- one run per output folder ------------------------------------------------------------------


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
        lines = err_lines(capsys)
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


# ---- output locations and full disks ------------------------------------------------------------


def test_out_naming_an_existing_file_is_refused_before_any_work(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    assert main([*TRAIN, "--epochs", "1", "--out", str(f)]) == 2
    lines = err_lines(capsys)
    assert lines == [f"distilseg train: error: --out {f}: is a file, not a folder; choose a folder for the outputs"]
    assert f.read_text() == "keep me"


def test_eval_checks_its_output_location_before_scoring(tmp_path, capsys, monkeypatch):
    import distilseg.apps.evaluate as ev
    import distilseg.inference.segmenter as seg

    art = tiny_artifact(tmp_path / "art")
    blocker = tmp_path / "taken"
    blocker.write_text("x")
    called = []
    monkeypatch.setattr(ev, "evaluate_model", lambda *a, **k: called.append("scored"))
    monkeypatch.setattr(seg, "load", lambda *a, **k: called.append("loaded"))
    for out, why in ((blocker, "is a file, not a folder"), (blocker / "sub", f"{blocker} is a file, not a folder")):
        code = main(["eval", "--checkpoint", str(art), "--dataset", "synthetic", "--dataset-args", "num_images=2",
                     "size=[32,48]", "--out", str(out), "--no-progress"])
        lines = err_lines(capsys)
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
    lines = err_lines(capsys)
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
    lines = err_lines(capsys)
    assert code == 1 and lines == [
        f"distilseg train: error: {out / 'config.yaml'}: cannot write (No space left on device); "
        f"free some space or choose another --out"]


def test_export_out_must_be_a_file_name(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    code = main(["export", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "d")])
    lines = err_lines(capsys)
    assert code == 2 and len(lines) == 1 and f"--out {tmp_path / 'd'}: is a folder" in lines[0]


# ---- no silent restart over a finished run --------------------------------------------------------


@pytest.mark.parametrize("resume", [True, False])
def test_finished_run_without_resume_state_is_not_replaced(tmp_path, capsys, resume):
    out = tmp_path / "run"
    assert main([*TRAIN, "--epochs", "1", "--limit-train-batches", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    (out / "checkpoints" / "last.ckpt").unlink()
    before = snapshot(out)
    code = main([*TRAIN, "--epochs", "1", "--out", str(out), *(["--resume"] if resume else [])])
    lines = err_lines(capsys)
    assert code == 2 and lines == [
        f"distilseg train: error: {out} holds the results of an earlier run (best, last, history.csv) but no "
        f"resume state ({out / 'checkpoints' / 'last.ckpt'}): there is nothing to continue, and a new run would "
        f"replace them; choose a new --out (or delete {out} to start over)"]
    after = snapshot(out)
    after.pop(".lock", None), before.pop(".lock", None)
    assert after == before


def test_resume_with_no_earlier_run_still_starts_from_the_beginning(tmp_path):
    out = tmp_path / "fresh"
    assert main([*TRAIN, "--epochs", "1", "--limit-train-batches", "1", "--resume", "--out", str(out)]) == 0
    assert (out / "best" / "config.json").is_file()


def test_records_are_plain_data_whatever_the_settings_hold(tmp_path):
    """A run's config.yaml (TrainConfig.save) and an artifact's config.json take numpy / torch numbers,
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
    assert _yaml.safe_load(_yaml.safe_dump(plain_data(odd)))["epochs"] == 3  # what TrainConfig.save writes
    art = save_artifact(tmp_path / "art", torch.nn.Conv2d(3, 2, 1), {"architecture": "x", "num_classes": 2, **odd})
    assert _json.loads((art / "config.json").read_text())["lr"] == 0.5

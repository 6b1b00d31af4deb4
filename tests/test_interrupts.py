"""Interrupted runs (SIGINT, SIGTERM) stop non-zero with the command that resumes them; Lightning's own
handler saves the state during fit."""
from __future__ import annotations

import csv
import shlex
import signal
import subprocess
import sys
import time

import pytest

from distilseg.cli import main
from test_train_support import PYTHON, TRAIN, script_header, tiny_cfg

pytestmark = pytest.mark.usefixtures("run_config_check")


# ---- interrupted runs ----------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_run_non_zero_with_the_command_that_resumes_it(tmp_path, sig):
    out = tmp_path / "run"
    argv = [*TRAIN, "--epochs", "2", "--checkpoint-every-steps", "1", "--out", str(out)]
    code = script_header() + (
        "import time\n"
        "from distilseg.training import module\n"
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
        "from distilseg.training import train\n"
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

    from distilseg.training.train import run_training

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

    from distilseg.training.train import run_training

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

"""Kill a training process with SIGKILL (mid-epoch, at random moments) and resume it to a complete model."""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from distilseg.training.train import run_training
from distilseg.io import safe_torch_load
from test_train_support import PYTHON, script_header, tiny_cfg

EPOCHS, STEPS_PER_EPOCH = 3, 4  # 16 images / batch 4
DATA = {"num_images": 16, "size": [32, 48]}


pytestmark = pytest.mark.usefixtures("run_config_check")


def _start(out: Path, delay: float) -> subprocess.Popen:
    """A training subprocess whose steps are slowed down by ``delay`` s so it can be killed mid-epoch."""
    cfg = tiny_cfg(out, epochs=EPOCHS, dataset_args=DATA, checkpoint_every_steps=1, resume=True)
    code = script_header() + (
        "import json, time\n"
        "from lightning.pytorch.callbacks import Callback\n"
        "from distilseg.training.train import run_training\n"
        "class Slow(Callback):\n"
        f"    def on_train_batch_end(self, *a, **k): time.sleep({delay})\n"
        f"run_training(json.loads({json.dumps(json.dumps(cfg))}), extra_callbacks=[Slow()])\n"
    )
    return subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _saved_step(ckpt: Path) -> int:
    try:
        return int(safe_torch_load(ckpt)["global_step"])
    except Exception:  # not there yet
        return -1


def _kill_after(proc: subprocess.Popen, ckpt: Path, min_step: int, extra: float, timeout: float = 120) -> int:
    """Wait until the saved state reaches ``min_step``, wait ``extra`` s more, SIGKILL; returns saved step."""
    t0 = time.monotonic()
    while _saved_step(ckpt) < min_step:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:]
            pytest.fail(f"training exited early ({proc.returncode}): {err}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail("no checkpoint appeared in time")
        time.sleep(0.05)
    time.sleep(extra)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    return _saved_step(ckpt)


def _check_complete(out: Path) -> None:
    from distilseg.data import create_dataset
    from distilseg.apps.evaluate import evaluate_model
    from distilseg.inference.segmenter import load

    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, EPOCHS + 1))
    state = safe_torch_load(out / "checkpoints/last.ckpt")
    assert state["global_step"] == EPOCHS * STEPS_PER_EPOCH
    seg = load(out / "best")
    val = create_dataset("synthetic", split="val", **DATA)
    metrics, cm, _ = evaluate_model(seg, val, batch_size=8, progress=False, num_samples_png=0)
    assert metrics["num_images"] == 16 and 0.0 <= metrics["mIoU"] <= 1.0
    assert int(cm.sum()) == int(sum(int((val.load_mask(i) != 255).sum()) for i in range(len(val))))
    best = json.loads((out / "best/config.json").read_text())
    assert best["metrics"]["mIoU"] == pytest.approx(max(float(r["val_mIoU"]) for r in rows), abs=1e-12)


@pytest.mark.slow
def test_sigkill_mid_epoch_and_three_random_kills_then_resume(tmp_path):
    seed = int(os.environ.get("DISTILSEG_FAULT_SEED", time.time_ns() % 10_000))
    rng = random.Random(seed)
    out = tmp_path / "run"
    ckpt = out / "checkpoints/last.ckpt"
    step = 0
    for attempt in range(3):
        proc = _start(out, delay=0.2)
        # first kill: right after step 2 of 4 was saved (mid-epoch); then at random moments after this
        # process made progress of its own
        extra = 0.0 if attempt == 0 else rng.uniform(0.0, 0.8)
        new = _kill_after(proc, ckpt, min_step=2 if attempt == 0 else step + 1, extra=extra)
        if attempt == 0:
            assert 2 <= new < STEPS_PER_EPOCH, "the first kill must land mid-epoch"
        assert new >= step, f"seed {seed}: the saved state went back from step {step} to {new}"
        step = new
        if step >= EPOCHS * STEPS_PER_EPOCH:
            break
    run_training(tiny_cfg(out, epochs=EPOCHS, dataset_args=DATA, checkpoint_every_steps=1, resume=True))
    _check_complete(out)

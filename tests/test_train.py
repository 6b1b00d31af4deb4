"""End-to-end ``run_training`` on tiny synthetic data: outputs, refusal to overwrite, resume, NaN handling."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from distilseg.artifact import load_artifact
from distilseg.training.config import TrainConfig
from distilseg.training.train import run_training
from distilseg.errors import TrainingError, UsageError
from distilseg.io import safe_torch_load
from test_train_support import tiny_cfg


pytestmark = pytest.mark.usefixtures("run_config_check")


def _history(out):
    with open(out / "history.csv") as fh:
        return list(csv.DictReader(fh))


def test_train_writes_artifacts_history_and_resume_state(tmp_path):
    out = tmp_path / "run"
    assert run_training(tiny_cfg(out, checkpoint_every_steps=1)) == out
    for rel in ("best/model.safetensors", "best/config.json", "last/model.safetensors", "last/config.json",
                "config.yaml", "history.csv", "metrics.csv", "curves.png", "checkpoints/last.ckpt"):
        assert (out / rel).is_file(), rel
    rows = _history(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(r["train_loss"] and r["val_loss"] and r["val_mIoU"] for r in rows)
    model, cfg = load_artifact(out / "best")
    assert cfg["architecture"] == "unet" and cfg["model_args"] == {"depth": 2, "base_width": 8}
    assert cfg["num_classes"] == 7 and len(cfg["class_names"]) == 7 and len(cfg["palette"]) == 7
    assert cfg["input_size"] == [32, 48] and cfg["ignore_index"] == 255 and cfg["dataset"] == "synthetic"
    best_row = max(rows, key=lambda r: float(r["val_mIoU"]))
    assert cfg["epoch"] == int(best_row["epoch"])
    assert cfg["metrics"]["mIoU"] == pytest.approx(float(best_row["val_mIoU"]), abs=1e-12)
    assert len(cfg["metrics"]["per_class"]) == 7
    last_cfg = json.loads((out / "last/config.json").read_text())
    assert last_cfg["epoch"] == 2
    # the resume state is plain tensors/primitives: readable with weights_only=True
    state = safe_torch_load(out / "checkpoints/last.ckpt")
    assert state["epoch"] == 1 and state["global_step"] == 4  # 8 images / batch 4 = 2 steps x 2 epochs
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 48)).shape == (1, 7, 32, 48)

    # an OUT that holds a run is never overwritten without --resume
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match="--resume"):
        run_training(tiny_cfg(out))
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # --resume with a larger epoch count continues to the full count, keeping the history
    run_training(tiny_cfg(out, epochs=3, resume=True))
    rows = _history(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert safe_torch_load(out / "checkpoints/last.ckpt")["global_step"] == 6


def test_resume_without_state_starts_fresh(tmp_path, capsys):
    out = tmp_path / "fresh"
    run_training(tiny_cfg(out, epochs=1, resume=True))
    assert "starting from the beginning" in capsys.readouterr().out
    assert [int(r["epoch"]) for r in _history(out)] == [1]


class _NaNAfter:
    """Wraps the real loss: training calls number ``bad`` (1-based) come out NaN."""

    def __init__(self, inner, bad):
        self.inner, self.bad, self.calls = inner, set(bad), 0

    def __call__(self, logits, target):
        loss = self.inner(logits, target)
        if torch.is_grad_enabled():
            self.calls += 1
            if self.calls in self.bad:
                return loss * float("nan")
        return loss


def _patch_loss(monkeypatch, bad):
    import distilseg.losses as losses

    real = losses.build_loss
    monkeypatch.setattr(losses, "build_loss", lambda *a, **k: _NaNAfter(real(*a, **k), bad))


def test_nan_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tmp_path, monkeypatch):
    _patch_loss(monkeypatch, bad={4})  # 2 steps per epoch: the 4th training step is epoch 2, global step 3
    out = tmp_path / "nan"
    with pytest.raises(TrainingError, match=r"epoch 2, step 3"):
        run_training(tiny_cfg(out, epochs=3, checkpoint_every_steps=1))
    state = safe_torch_load(out / "checkpoints/last.ckpt")
    assert state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())


def test_skip_nonfinite_counts_skipped_steps(tmp_path, monkeypatch):
    _patch_loss(monkeypatch, bad={2, 3})
    out = tmp_path / "skip"
    run_training(tiny_cfg(out, epochs=2, skip_nonfinite=2))
    rows = _history(out)
    assert [int(r["skipped_nonfinite"]) for r in rows] == [1, 2]
    # skipped steps still advance Lightning's step counter (no gradient, so no parameter update)
    assert safe_torch_load(out / "checkpoints/last.ckpt")["global_step"] == 4
    _patch_loss(monkeypatch, bad={2, 3})
    with pytest.raises(TrainingError, match="epoch 2"):
        run_training(tiny_cfg(tmp_path / "skip1", epochs=2, skip_nonfinite=1))


def test_class_count_mismatch_and_weights_file(tmp_path):
    out = tmp_path / "a"
    run_training(tiny_cfg(out, epochs=1))
    from distilseg.training.train import _check_resume_classes, build_model

    # a pretrained artifact or resume state with 7 classes for a 3-class dataset is refused (exit 2)
    with pytest.raises(UsageError, match="7 classes but dataset synthetic has 3"):
        build_model(TrainConfig.from_dict(tiny_cfg(tmp_path / "c", pretrained=str(out / "best"))), 3)
    with pytest.raises(UsageError, match="7 classes but the dataset has 3"):
        _check_resume_classes(out / "checkpoints/last.ckpt", 3)
    # with the right count the artifact's weights are loaded
    m = build_model(TrainConfig.from_dict(tiny_cfg(tmp_path / "c", pretrained=str(out / "best"))), 7)
    ref, _ = load_artifact(out / "best")
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values()))
    bad = tmp_path / "w.json"
    bad.write_text("[1, 2]")
    with pytest.raises(UsageError, match="2 class weights .* 7 classes"):
        run_training(tiny_cfg(tmp_path / "b", epochs=1, class_weights=str(bad)))


class _FakeDistiller(torch.nn.Module):
    """Teacher = a 1x1 conv; one trainable 'adapter' scale; records the teacher's mode at each call."""

    hard_weight = 0.5

    def __init__(self):
        super().__init__()
        self.teacher = torch.nn.Conv2d(3, 7, 1)
        self.adapter = torch.nn.Parameter(torch.ones(()))
        self.modes = []
        self.nfeatures = []

    def forward(self, images, student_logits, student_features, target):
        self.modes.append(self.teacher.training)
        self.nfeatures.append(len(student_features))
        with torch.no_grad():
            t = self.teacher(images)
        return {"kd": (student_logits - t).pow(2).mean() * self.adapter}

    def trainable_parameters(self):
        return [self.adapter]


def test_distiller_hook(tmp_path):
    d = _FakeDistiller()
    d.teacher.train()  # the engine must put it in eval mode itself
    teacher_before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    out = run_training(tiny_cfg(tmp_path / "kd", epochs=1), distiller=d)
    assert d.modes == [False, False] and all(n >= 1 for n in d.nfeatures)
    assert float(d.adapter) != 1.0  # the optimizer updated the distiller's trainable parameters
    assert all(torch.equal(v, d.teacher.state_dict()[k]) for k, v in teacher_before.items())
    from safetensors.torch import load_file

    keys = load_file(str(out / "best/model.safetensors")).keys()
    assert keys and not any("teacher" in k or "adapter" in k for k in keys)

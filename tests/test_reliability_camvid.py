"""Issue acceptance: `distilseg train` on a copy of CamVid with one truncated PNG fails before the first
step with an error naming that file (and `--skip-bad` trains on the rest)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distilseg.cli import main


pytestmark = pytest.mark.usefixtures("run_config_check")


def _small_camvid_copy(src: Path, dst: Path, n_train: int = 6, n_val: int = 2) -> list[str]:
    names = []
    for split, n in (("train", n_train), ("val", n_val)):
        (dst / split).mkdir(parents=True)
        (dst / f"{split}annot").mkdir(parents=True)
        files = sorted((src / split).glob("*.png"))[:n]
        for f in files:
            shutil.copy(f, dst / split / f.name)
            shutil.copy(src / f"{split}annot" / f.name, dst / f"{split}annot" / f.name)
            names.append(f"{split}/{f.name}")
        # The original list file (foreign absolute paths) restricted to the copied files.
        lines = [
            f"/SegNet/CamVid/{split}/{f.name} /SegNet/CamVid/{split}annot/{f.name}" for f in files
        ]
        (dst / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return names


def test_truncated_png_fails_before_first_step(camvid_root: Path, tmp_path: Path, capsys) -> None:
    root = tmp_path / "camvid"
    names = _small_camvid_copy(camvid_root, root)
    victim = root / names[4]  # not among the first few samples: the quick check must still see it
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])

    out = tmp_path / "run"
    args = ["train", "--dataset", "camvid", "--root", str(root), "--model", "unet",
            "--model-args", "depth=2", "base_width=4", "--img-size", "32", "48", "--epochs", "1",
            "--batch-size", "2", "--no-progress", "--out", str(out)]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 1
    # Lightning's log handlers may print too; ours is exactly one line, the last, naming the file.
    errors = [line for line in err.splitlines() if line.startswith("distilseg train: error:")]
    assert len(errors) == 1 and victim.name in errors[0]
    assert err.strip().splitlines()[-1] == errors[0]
    assert "validate.py" not in err  # no traceback through the data check
    assert not (out / "checkpoints" / "last.ckpt").exists()  # no step was taken

    code = main(args[:-2] + ["--skip-bad", "--out", str(tmp_path / "run_skip")])
    assert code == 0
    assert (tmp_path / "run_skip" / "best" / "model.safetensors").is_file()

"""Groups of samples: `data overlap`, the shared-group warning, and group-held-out validation (`--holdout`) in
train, distill, compress and eval, on small folder datasets made here (two "streets" per split)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distilseg.cli import main
from distilseg.data import create_dataset
from distilseg.data.groups import group_of, group_pattern, select_groups, shared_groups
from distilseg.data.overlap import near_duplicates, perceptual_hashes

pytestmark = pytest.mark.usefixtures("run_config_check")

GROUP_BY = r"images/([a-z]+)_"  # folder layout: <split>/images/<street>_<n>.png


def _scene(seed: int, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A picture with large structures (so that a perceptual hash tells scenes apart) and its 3-class mask."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.zeros((h, w, 3), dtype=np.float64)
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.3)
        image[..., c] = 127 + 120 * np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + ph)
    mask = np.zeros((h, w), dtype=np.uint8)
    horizon = int(rng.integers(h // 3, 2 * h // 3))
    mask[horizon:] = 1
    x0 = int(rng.integers(0, w // 2))
    mask[horizon - 8:horizon + 4, x0:x0 + w // 4] = 2
    image[mask == 1] *= 0.4
    return image.clip(0, 255).astype(np.uint8), mask


def make_streets(root: Path, layout: dict[str, dict[str, int]]) -> Path:
    """``layout = {split: {street: frames}}`` -> ``root/<split>/images/<street>_<k>.png`` + masks."""
    seed = 0
    for split, streets in layout.items():
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for street, n in streets.items():
            for k in range(n):
                image, mask = _scene(seed)
                seed += 1
                Image.fromarray(image).save(root / split / "images" / f"{street}_{k:03d}.png")
                Image.fromarray(mask).save(root / split / "masks" / f"{street}_{k:03d}.png")
    return root


def test_camvid_default_grouping_is_the_sequence_prefix() -> None:
    from distilseg.data.camvid import CamVid
    import re

    pattern = re.compile(CamVid.group_pattern)
    assert group_of(pattern, "train/0001TP_006690.png") == "0001TP"
    assert group_of(pattern, "val/0016E5_07959.png") == "0016E5"
    assert group_of(pattern, "test/Seq05VD_f00000.png") == "Seq05VD"


def test_data_overlap_names_shared_streets_and_finds_a_reencoded_copy(tmp_path: Path, capsys) -> None:
    root = make_streets(tmp_path / "ds", {"train": {"alpha": 3, "beta": 3}, "val": {"beta": 2, "gamma": 2}})
    # a resized, JPEG re-encoded copy of a training image, under another name in val
    original = root / "train" / "images" / "alpha_001.png"
    copy_img = Image.open(original).convert("RGB").resize((56, 42), Image.BILINEAR)
    copy_img.save(root / "val" / "images" / "gamma_009.jpg", quality=60)
    Image.open(root / "train" / "masks" / "alpha_001.png").resize((56, 42), Image.NEAREST).save(
        root / "val" / "masks" / "gamma_009.png")
    code = main(["data", "overlap", "--dataset", "folder", "--root", str(root), "--splits", "train", "val",
                 "--group-by", GROUP_BY, "--out", str(tmp_path / "ov")])
    assert code == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "1 shared group: beta (3 train / 2 val frames)" in line and "1 near-duplicate image pair" in line
    doc = json.loads((tmp_path / "ov" / "overlap.json").read_text())
    assert doc["shared_groups"] == {"beta": [3, 2]}
    assert len(doc["near_duplicates"]) == 1
    a, b, dist = doc["near_duplicates"][0]
    assert Path(a) == original and Path(b).name == "gamma_009.jpg" and 0 <= dist <= 6
    # unrelated frames are far apart: at twice the default threshold the copy is still the only pair
    train = create_dataset("folder", root=root, split="train")
    val = create_dataset("folder", root=root, split="val")
    pairs = near_duplicates(perceptual_hashes(train), perceptual_hashes(val), 12)
    assert [(train.samples[i].name, val.samples[j].name) for i, j, _ in pairs] == [("alpha_001", "gamma_009")]


def test_data_overlap_refuses_a_foreign_overlap_json(tmp_path: Path, capsys) -> None:
    root = make_streets(tmp_path / "ds", {"train": {"alpha": 1}, "val": {"beta": 1}})
    (tmp_path / "ov").mkdir()
    (tmp_path / "ov" / "overlap.json").write_text("my notes")
    code = main(["data", "overlap", "--dataset", "folder", "--root", str(root), "--splits", "train", "val",
                 "--group-by", GROUP_BY, "--out", str(tmp_path / "ov")])
    assert code == 2
    assert (tmp_path / "ov" / "overlap.json").read_text() == "my notes"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overlap.json: exists and is not an overlap report" in err[0]


def test_data_overlap_names_0016E5_for_camvid_train_val(camvid_root: Path, tmp_path: Path, capsys) -> None:
    code = main(["data", "overlap", "--dataset", "camvid", "--root", str(camvid_root), "--splits", "train", "val",
                 "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "overlap.json").read_text())
    assert doc["shared_groups"] == {"0016E5": [204, 101]}
    assert "0016E5 (204 train / 101 val frames)" in capsys.readouterr().out


def test_select_groups_keeps_or_drops_and_names_unknown_groups(tmp_path: Path) -> None:
    from distilseg.errors import UsageError

    root = make_streets(tmp_path / "ds", {"train": {"alpha": 2, "beta": 3}})
    ds = create_dataset("folder", root=root, split="train")
    pattern = group_pattern(ds, GROUP_BY)
    kept = select_groups(create_dataset("folder", root=root, split="train"), ["beta"], pattern, keep=True)
    assert [s.name for s in kept.samples] == ["beta_000", "beta_001", "beta_002"]
    dropped = select_groups(ds, ["beta"], pattern, keep=False)
    assert [s.name for s in dropped.samples] == ["alpha_000", "alpha_001"]
    with pytest.raises(UsageError, match=r"--holdout gamma: no such group .* alpha \(2\), beta \(3\)"):
        select_groups(create_dataset("folder", root=root, split="train"), ["gamma"], pattern, keep=True)
    assert shared_groups(create_dataset("folder", root=root, split="train"),
                         create_dataset("folder", root=root, split="train"), pattern) == {"alpha": [2, 2],
                                                                                          "beta": [3, 3]}


TINY = ["--model", "unet", "--model-args", "depth=2", "base_width=4", "--img-size", "32", "32", "--epochs", "1",
        "--batch-size", "2", "--num-workers", "0", "--no-progress", "--no-augment", "--seed", "0"]


def test_train_warns_when_validation_shares_streets(tmp_path: Path, capsys) -> None:
    root = make_streets(tmp_path / "ds", {"train": {"alpha": 2, "beta": 2}, "val": {"beta": 2}})
    code = main(["train", "--dataset", "folder", "--root", str(root), "--group-by", GROUP_BY, *TINY,
                 "--out", str(tmp_path / "run")])
    assert code == 0
    out = capsys.readouterr().out
    assert ("validation split 'val' shares 1 group with training split 'train': beta (2 train / 2 val frames)"
            in out)


def test_holdout_each_trains_one_fold_per_street_and_pools_them(tmp_path: Path, capsys) -> None:
    root = make_streets(tmp_path / "ds", {"train": {"alpha": 3, "beta": 2, "gamma": 2}})
    out = tmp_path / "cv"
    code = main(["train", "--dataset", "folder", "--root", str(root), "--group-by", GROUP_BY, "--holdout", "each",
                 *TINY, "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "cv.json").read_text())
    assert list(doc["folds"]) == ["alpha", "beta", "gamma"]
    assert [doc["folds"][g]["num_images"] for g in ("alpha", "beta", "gamma")] == [3, 2, 2]
    assert doc["pooled"]["num_images"] == 7
    total = sum(np.asarray(f["confusion"]) for f in doc["folds"].values())
    assert np.array_equal(np.asarray(doc["pooled"]["confusion"]), total)
    # every labelled pixel of every frame is scored once: 7 frames of 48x64, no ignore pixels
    assert int(total.sum()) == 7 * 48 * 64
    for g, n in (("alpha", 3), ("beta", 2), ("gamma", 2)):
        cfg = (out / f"fold-{g}" / "config.yaml").read_text()
        assert f"holdout: {g}" in cfg
        assert json.loads((out / f"fold-{g}" / "last" / "config.json").read_text())["holdout"] == g
        assert json.loads((out / f"fold-{g}" / "heldout" / "metrics.json").read_text())["num_images"] == n
    assert "| pooled | 7 |" in (out / "cv.md").read_text()
    # a re-run skips the scored folds and pools again
    capsys.readouterr()
    assert main(["train", "--dataset", "folder", "--root", str(root), "--group-by", GROUP_BY, "--holdout", "each",
                 *TINY, "--resume", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("is done already") == 3

    # eval on one held-out street scores exactly its frames
    code = main(["eval", "--checkpoint", str(out / "fold-beta" / "last"), "--dataset", "folder", "--root", str(root),
                 "--split", "train", "--group-by", GROUP_BY, "--holdout", "beta", "--no-progress", "--samples", "0",
                 "--out", str(tmp_path / "ev")])
    assert code == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["num_images"] == 2 and metrics["split"] == "train [beta]"
    assert metrics["mIoU"] == pytest.approx(doc["folds"]["beta"]["mIoU"])

    # distill: each fold takes its own teacher ({fold}); without one the command refuses
    capsys.readouterr()
    base = ["distill", "--dataset", "folder", "--root", str(root), "--group-by", GROUP_BY, "--holdout", "each",
            "--kd", "logits@T=4:1", *TINY]
    assert main([*base, "--teacher", str(out / "fold-alpha" / "last"), "--out", str(tmp_path / "kd0")]) == 2
    assert "{fold}" in capsys.readouterr().err
    assert main([*base, "--teacher", str(out / "fold-{fold}" / "last"), "--out", str(tmp_path / "kd")]) == 0
    kd = json.loads((tmp_path / "kd" / "cv.json").read_text())
    assert kd["pooled"]["num_images"] == 7
    rec = json.loads((tmp_path / "kd" / "fold-gamma" / "distill.json").read_text())
    assert Path(rec["teacher"]) == out / "fold-gamma" / "last"


def test_distill_warns_when_the_teacher_saw_the_held_out_street(tmp_path: Path, capsys) -> None:
    root = make_streets(tmp_path / "ds", {"train": {"alpha": 2, "beta": 2}})
    assert main(["train", "--dataset", "folder", "--root", str(root), "--val-split", "train", *TINY,
                 "--out", str(tmp_path / "t")]) == 0
    capsys.readouterr()
    assert main(["distill", "--dataset", "folder", "--root", str(root), "--group-by", GROUP_BY, "--holdout", "beta",
                 "--teacher", str(tmp_path / "t" / "last"), "--kd", "logits@T=4:1", *TINY,
                 "--out", str(tmp_path / "kd")]) == 0
    assert "was not trained with --holdout beta" in capsys.readouterr().err


def test_holdout_errors_are_one_line(tmp_path: Path, capsys) -> None:
    root = make_streets(tmp_path / "ds", {"train": {"alpha": 2, "beta": 2}})
    args = ["train", "--dataset", "folder", "--root", str(root), *TINY]
    assert main([*args, "--holdout", "beta", "--out", str(tmp_path / "a")]) == 2
    assert "dataset 'folder' has no default grouping; give --group-by REGEX" in capsys.readouterr().err
    assert main([*args, "--group-by", GROUP_BY, "--holdout", "delta", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--holdout delta: no such group" in err[0] and "alpha (2), beta (2)" in err[0]
    assert main([*args, "--group-by", "([a-z", "--holdout", "beta", "--out", str(tmp_path / "c")]) == 2
    assert "not a regular expression" in capsys.readouterr().err
    assert main([*args, "--group-by", GROUP_BY, "--holdout", "alpha,beta", "--out", str(tmp_path / "d")]) == 2
    assert "nothing is left to train on" in capsys.readouterr().err
    # a cv.md of the user's in OUT is never replaced: refused before any fold runs
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "cv.md").write_text("my notes")
    assert main([*args, "--group-by", GROUP_BY, "--holdout", "each", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cv.md: exists and is not a leave-one-group-out result" in err[0]
    assert (tmp_path / "e" / "cv.md").read_text() == "my notes" and not (tmp_path / "e" / "fold-alpha").exists()


def test_compress_scores_every_row_on_the_held_out_street(tmp_path: Path) -> None:
    root = make_streets(tmp_path / "ds", {"train": {"alpha": 3, "beta": 2}})
    code = main(["compress", "--dataset", "folder", "--root", str(root), "--group-by", GROUP_BY,
                 "--holdout", "beta", "--img-size", "32", "32", "--epochs", "1", "--teacher-epochs", "1",
                 "--batch-size", "2", "--calibration-images", "2", "--bench-runs", "1", "--no-ort-fp32",
                 "--out", str(tmp_path / "c")])
    assert code == 0
    summary = json.loads((tmp_path / "c" / "compress.json").read_text())
    assert summary["num_val_images"] == 2
    for row in ("teacher", "student", "kd_student", "int8_kd_student"):
        ev = json.loads((tmp_path / "c" / "eval" / f"{row}.json").read_text())
        assert ev["num_images"] == 2 and int(np.asarray(ev["confusion"]).sum()) == 2 * 48 * 64
    cfg = (tmp_path / "c" / "teacher" / "config.yaml").read_text()
    assert "holdout: beta" in cfg

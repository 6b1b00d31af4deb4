"""``evaluate_model`` and ``distilseg eval``: native-resolution scoring, report files, exact consistency."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import distilseg
from distilseg.cli import main
from distilseg.artifact import save_artifact
from distilseg.models import create_model

K = 3
SIZES = [(40, 50), (33, 47), (40, 50), (24, 30), (48, 36)]


pytestmark = pytest.mark.usefixtures("run_config_check")


def _make_artifact(directory: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", K, depth=2, base_width=8)
    config = {
        "num_classes": K,
        "class_names": ["class_0", "class_1", "class_2"],
        "palette": [[0, 0, 0], [255, 0, 0], [0, 0, 255]],
        "input_size": [32, 32],
        "ignore_index": 255,
    }
    return save_artifact(directory, model, config)


def _make_folder_dataset(root: Path) -> Path:
    """images/ + masks/ with mixed sizes; masks use classes 0..2 and some 255 (ignore) pixels."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (h, w) in enumerate(SIZES):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image[:, : w // 2] //= 3  # darker left half: gives the net something spatial to react to
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[:, w // 2:] = 1
        mask[h // 3: 2 * h // 3, w // 4: 3 * w // 4] = 2
        mask[:2, :] = 255
        Image.fromarray(image).save(root / "images" / f"img{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("eval")
    return _make_artifact(base / "art"), _make_folder_dataset(base / "data")


def _numpy_confusion(preds: list[np.ndarray], masks: list[np.ndarray]) -> np.ndarray:
    cm = np.zeros((K, K), dtype=np.int64)
    for p, m in zip(preds, masks):
        keep = m != 255
        np.add.at(cm, (m[keep].astype(np.int64), p[keep].astype(np.int64)), 1)
    return cm


def _numpy_miou(cm: np.ndarray) -> float:
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    return float((tp[union > 0] / union[union > 0]).mean())


def _read_masks(root: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.asarray(Image.open(p)) for p in sorted((root / "masks").glob("*.png"))}


def test_evaluate_model_confusion_is_exact(setup) -> None:
    from distilseg.data import create_dataset
    from distilseg.apps.evaluate import evaluate_model

    art, root = setup
    seg = distilseg.load(art)
    ds = create_dataset("folder", root=root, split="val", num_classes=K)
    metrics, cm, samples = evaluate_model(seg, ds, batch_size=2, progress=False, num_samples_png=2)
    images = [np.asarray(Image.open(root / "images" / f"img{i}.png")) for i in range(len(SIZES))]
    masks = [np.asarray(Image.open(root / "masks" / f"img{i}.png")) for i in range(len(SIZES))]
    expected = _numpy_confusion(seg.predict(images), masks)
    np.testing.assert_array_equal(cm, expected)
    assert cm.sum() == sum((m != 255).sum() for m in masks)
    assert metrics["num_images"] == len(SIZES)
    assert metrics["mIoU"] == pytest.approx(_numpy_miou(expected), abs=1e-9)
    # two samples, spread over the set (first and last), each at its native size
    assert len(samples) == 2
    for (img, gt, pred), i in zip(samples, (0, len(SIZES) - 1)):
        assert img.shape == (*SIZES[i], 3) and gt.shape == SIZES[i] and pred.shape == SIZES[i]
        np.testing.assert_array_equal(gt, masks[i])


def test_eval_cli_writes_report_and_matches_predict_labels(setup, tmp_path: Path, capsys) -> None:
    art, root = setup
    out = tmp_path / "eval"
    code = main(["eval", "--checkpoint", str(art), "--dataset", "folder", "--root", str(root),
                 "--dataset-args", f"num_classes={K}", "--split", "val", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "class_2" in printed and "mean" in printed
    for name in ("metrics.json", "per_class.md", "confusion.png", "samples.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    doc = json.loads((out / "metrics.json").read_text())
    for key in ("dataset", "split", "num_images", "mIoU", "mDice", "mPrecision", "mRecall", "pixel_accuracy",
                "mean_class_accuracy", "fwIoU", "per_class"):
        assert key in doc, key
    assert doc["dataset"] == "folder" and doc["split"] == "val" and doc["num_images"] == len(SIZES)
    assert [r["name"] for r in doc["per_class"]] == ["class_0", "class_1", "class_2"]
    assert set(doc["per_class"][0]) == {"name", "iou", "dice", "precision", "recall", "accuracy", "support"}
    assert "class_1" in (out / "per_class.md").read_text()
    assert Image.open(out / "samples.png").format == "PNG"

    # Independent mIoU: the label maps `predict --save-labels` wrote vs the dataset's masks, in numpy.
    pred_dir = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(art), str(root / "images"), "--save-labels", "--out",
                 str(pred_dir), "--no-progress"]) == 0
    masks = _read_masks(root)
    preds = [np.asarray(Image.open(pred_dir / f"{stem}_labels.png")) for stem in masks]
    cm = _numpy_confusion(preds, list(masks.values()))
    assert abs(_numpy_miou(cm) - doc["mIoU"]) < 1e-4
    supports = cm.sum(1)
    assert [r["support"] for r in doc["per_class"]] == supports.tolist()


def test_eval_tta_and_img_size(setup, tmp_path: Path) -> None:
    art, root = setup
    out = tmp_path / "eval_tta"
    code = main(["eval", "--checkpoint", str(art), "--dataset", "folder", "--root", str(root),
                 "--dataset-args", f"num_classes={K}", "--split", "val", "--out", str(out), "--tta", "flip",
                 "--img-size", "24", "40", "--batch-size", "3", "--no-progress"])
    assert code == 0
    doc = json.loads((out / "metrics.json").read_text())
    seg = distilseg.load(art)
    seg.input_size = (24, 40)
    masks = _read_masks(root)
    preds = seg.predict([root / "images" / f"{s}.png" for s in masks], tta="flip")
    assert doc["mIoU"] == pytest.approx(_numpy_miou(_numpy_confusion(preds, list(masks.values()))), abs=1e-9)


def test_eval_class_count_mismatch_exits_2(setup, tmp_path: Path, capsys) -> None:
    art, root = setup
    code = main(["eval", "--checkpoint", str(art), "--dataset", "folder", "--root", str(root),
                 "--dataset-args", "num_classes=5", "--split", "val", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "3 classes" in err and "5" in err
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_eval_missing_checkpoint_exits_1(setup, tmp_path: Path, capsys) -> None:
    _, root = setup
    code = main(["eval", "--checkpoint", str(tmp_path / "none"), "--dataset", "folder", "--root", str(root),
                 "--split", "val", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 1
    assert str(tmp_path / "none") in capsys.readouterr().err


def test_parse_key_values_one_rule_for_every_command() -> None:
    from distilseg.errors import UsageError
    from distilseg.parsing import parse_key_values

    assert parse_key_values(["num_classes=3", "palette=p.csv", "flag=true", "base-width=8", "size=[2, 4]",
                             "empty=", "text=a: b: c"]) == {
        "num_classes": 3, "palette": "p.csv", "flag": True, "base_width": 8, "size": [2, 4], "empty": None,
        "text": "a: b: c"}
    with pytest.raises(UsageError, match="--model-args: expected key=value, got 'oops'"):
        parse_key_values(["oops"], "--model-args")
    with pytest.raises(UsageError, match="expected key=value"):
        parse_key_values(["=3"])


def test_weighted_terms_one_grammar_for_loss_and_kd() -> None:
    from distilseg.distill.losses import parse_kd_spec
    from distilseg.errors import UsageError
    from distilseg.losses import parse_loss_spec
    from distilseg.parsing import parse_weighted_terms

    assert parse_weighted_terms(" ce:1, dice : 0.5,lovasz", "--loss") == [("ce", 1.0), ("dice", 0.5), ("lovasz", 1.0)]
    assert parse_weighted_terms("logits@T=4:0.5", "--kd") == [("logits@T=4", 0.5)]
    assert parse_loss_spec("CE:2,dice") == [("ce", 2.0), ("dice", 1.0)]
    assert [(n, w) for n, w, _ in parse_kd_spec("logits@T=4:0.5,cwd")] == [("logits", 0.5), ("cwd", 1.0)]
    for bad, words in [("ce:x", "is not a number"), ("ce:-1", "finite number >= 0"), ("ce:nan", "finite number >= 0"),
                       ("ce,,dice", "empty term")]:
        with pytest.raises(UsageError, match=words):
            parse_loss_spec(bad)
        with pytest.raises(UsageError, match=words):
            parse_kd_spec(bad.replace("ce", "cwd"))


def test_eval_mask_size_mismatch_names_file(setup, tmp_path: Path, capsys) -> None:
    art, _ = setup
    root = tmp_path / "bad"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), dtype=np.uint8)).save(root / "images" / "x.png")
    Image.fromarray(np.zeros((20, 21), dtype=np.uint8)).save(root / "masks" / "x.png")
    code = main(["eval", "--checkpoint", str(art), "--dataset", "folder", "--root", str(root),
                 "--dataset-args", f"num_classes={K}", "--split", "val", "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert str(root / "masks" / "x.png") in err and "20x21" in err

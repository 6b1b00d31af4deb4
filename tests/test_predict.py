"""``distilseg predict``: input expansion, output files at original sizes, exact label values, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import distilseg
from distilseg.cli import main
from distilseg.artifact import save_artifact
from distilseg.errors import DataError
from distilseg.models import create_model

K = 4
PALETTE = np.array([[0, 0, 0], [250, 0, 0], [0, 250, 0], [0, 0, 250]], dtype=np.uint8)


pytestmark = pytest.mark.usefixtures("run_config_check")


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    torch.manual_seed(3)
    model = create_model("unet", K, depth=2, base_width=8)
    config = {"num_classes": K, "palette": PALETTE.tolist(), "input_size": [32, 32]}
    return save_artifact(tmp_path_factory.mktemp("pred") / "art", model, config)


@pytest.fixture()
def inputs(tmp_path: Path) -> dict[str, np.ndarray]:
    """A folder with two images of different sizes, plus a loose BMP in another folder."""
    rng = np.random.default_rng(5)
    arrays = {
        "folder/a.png": rng.integers(0, 256, (30, 44, 3), dtype=np.uint8),
        "folder/b.png": rng.integers(0, 256, (52, 20, 3), dtype=np.uint8),
        "loose/c.bmp": rng.integers(0, 256, (17, 61, 3), dtype=np.uint8),
    }
    for rel, arr in arrays.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(tmp_path / rel)
    (tmp_path / "folder" / "notes.txt").write_text("not an image, ignored inside folders")
    return arrays


def test_predict_save_labels_sizes_and_values(art: Path, inputs, tmp_path: Path) -> None:
    from distilseg.viz import colorize

    out = tmp_path / "out"
    code = main(["predict", "--checkpoint", str(art), str(tmp_path / "folder"), str(tmp_path / "loose" / "*.bmp"),
                 "--save-labels", "--out", str(out), "--no-progress"])
    assert code == 0
    seg = distilseg.load(art)
    for rel, image in inputs.items():
        stem = Path(rel).stem
        labels = np.asarray(Image.open(out / f"{stem}_labels.png"))
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
        expected = seg.predict(image)[0]
        np.testing.assert_array_equal(labels, expected)
        assert labels.max() < K
        color = np.asarray(Image.open(out / f"{stem}_color.png").convert("RGB"))
        np.testing.assert_array_equal(color, colorize(expected, PALETTE))
        overlay = np.asarray(Image.open(out / f"{stem}_overlay.png").convert("RGB"))
        assert overlay.shape == image.shape
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{Path(r).stem}_{kind}.png" for r in inputs for kind in ("color", "overlay", "labels"))


def test_predict_without_labels_and_with_tta(art: Path, inputs, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["predict", "--checkpoint", str(art), str(tmp_path / "folder" / "a.png"), "--tta", "flip",
                 "--img-size", "16", "24", "--out", str(out), "--no-progress"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_color.png", "a_overlay.png"]
    seg = distilseg.load(art)
    seg.input_size = (16, 24)
    from distilseg.viz import colorize

    expected = colorize(seg.predict(inputs["folder/a.png"], tta="flip")[0], PALETTE)
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a_color.png").convert("RGB")), expected)


def test_expand_inputs(inputs, tmp_path: Path) -> None:
    from distilseg.apps.predict import expand_inputs

    files = expand_inputs([str(tmp_path / "folder"), str(tmp_path / "**" / "*.bmp"), str(tmp_path / "folder" / "a.png")])
    assert [f.name for f in files] == ["a.png", "b.png", "c.bmp"]  # folder sorted, duplicates dropped
    with pytest.raises(DataError, match="nothing_here"):
        expand_inputs([str(tmp_path / "nothing_here.png")])
    with pytest.raises(DataError, match=r"\*\.gif"):
        expand_inputs([str(tmp_path / "*.gif")])
    with pytest.raises(DataError, match="notes.txt"):
        expand_inputs([str(tmp_path / "folder" / "notes.txt")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        expand_inputs([str(tmp_path / "empty")])


def test_predict_bad_inputs_exit_nonzero(art: Path, inputs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    missing = tmp_path / "missing.png"
    assert main(["predict", "--checkpoint", str(art), str(missing), "--out", str(out)]) == 1
    assert str(missing) in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(art), str(tmp_path / "folder" / "notes.txt"), "--out", str(out)]) == 1
    assert "notes.txt" in capsys.readouterr().err
    # two inputs with the same stem would overwrite each other's outputs: a usage error
    Image.fromarray(inputs["folder/a.png"]).save(tmp_path / "loose" / "a.png")
    assert main(["predict", "--checkpoint", str(art), str(tmp_path / "folder"), str(tmp_path / "loose"),
                 "--out", str(out)]) == 2
    assert "a_*.png" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())

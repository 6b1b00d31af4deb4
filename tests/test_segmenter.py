"""``distilseg.load`` and ``Segmenter``: input kinds, sizes, preprocessing, TTA, artifact resolution."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import distilseg
from distilseg.artifact import save_artifact
from distilseg.inference.segmenter import Segmenter
from distilseg.errors import CheckpointError, UsageError
from distilseg.models import create_model

K = 3
MEAN = [0.4, 0.5, 0.6]
STD = [0.2, 0.25, 0.3]
PALETTE = [[0, 0, 0], [200, 10, 10], [10, 200, 10]]


def _make_artifact(directory: Path, input_size=(32, 48), seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = create_model("unet", K, depth=2, base_width=8).eval()
    config = {
        "num_classes": K,
        "class_names": ["road", "car", "tree"],
        "palette": PALETTE,
        "mean": MEAN,
        "std": STD,
        "input_size": list(input_size) if input_size else None,
        "ignore_index": 255,
        "dataset": "synthetic",
    }
    return save_artifact(directory, model, config)


def _reference(model: torch.nn.Module, image: np.ndarray, size, flip: bool = False) -> np.ndarray:
    """The documented recipe, written out independently of the Segmenter code."""
    h, w = image.shape[:2]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    if size is not None:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = F.interpolate(model(x), size=(h, w), mode="bilinear", align_corners=False)
        if flip:  # softmax probabilities averaged at the image's native size
            mirrored = F.interpolate(model(x.flip(-1)).flip(-1), size=(h, w), mode="bilinear", align_corners=False)
            logits = ((logits.softmax(1) + mirrored.softmax(1)) / 2).log()
    return logits.argmax(1)[0].numpy().astype(np.uint8)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return _make_artifact(tmp_path_factory.mktemp("seg") / "art")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(40, 50, 3), (17, 23, 3), (64, 96, 3)]]


def test_predict_mixed_sizes_matches_reference(artifact: Path, images) -> None:
    seg = distilseg.load(artifact)
    assert isinstance(seg, Segmenter)
    preds = seg.predict(images, batch_size=2)
    assert [p.shape for p in preds] == [(40, 50), (17, 23), (64, 96)]
    assert all(p.dtype == np.uint8 for p in preds)
    for image, pred in zip(images, preds):
        np.testing.assert_array_equal(pred, _reference(seg.model, image, (32, 48)))
    # batch size does not change the result
    for a, b in zip(preds, seg.predict(images, batch_size=1)):
        np.testing.assert_array_equal(a, b)


def test_input_kinds_and_single_image(artifact: Path, images, tmp_path: Path) -> None:
    seg = distilseg.load(artifact)
    path = tmp_path / "a.png"
    Image.fromarray(images[0]).save(path)
    expected = seg.predict([images[0]])[0]
    for single in (images[0], path, str(path), Image.fromarray(images[0])):
        out = seg.predict(single)
        assert isinstance(out, list) and len(out) == 1
        np.testing.assert_array_equal(out[0], expected)
    gray = images[0][:, :, 0]
    np.testing.assert_array_equal(seg.predict(gray)[0], seg.predict(np.stack([gray] * 3, axis=2))[0])
    with pytest.raises(UsageError, match="uint8"):
        seg.predict(images[0].astype(np.float32))


def test_native_size_when_input_size_is_null(tmp_path: Path, images) -> None:
    seg = distilseg.load(_make_artifact(tmp_path / "native", input_size=None))
    assert seg.input_size is None
    for image, pred in zip(images, seg.predict(images)):
        np.testing.assert_array_equal(pred, _reference(seg.model, image, None))
    seg.input_size = (16, 16)  # the --img-size override
    np.testing.assert_array_equal(seg.predict(images[2])[0], _reference(seg.model, images[2], (16, 16)))
    with pytest.raises(UsageError):
        seg.input_size = (0, 16)


def test_tta_flip(artifact: Path, images) -> None:
    seg = distilseg.load(artifact)
    preds = seg.predict(images, tta="flip")
    for image, pred in zip(images, preds):
        np.testing.assert_array_equal(pred, _reference(seg.model, image, (32, 48), flip=True))
    scores = seg.predict_logits(images[:1], tta="flip")[0]
    assert scores.shape == (K, 40, 50) and scores.dtype == np.float32
    np.testing.assert_array_equal(scores.argmax(0).astype(np.uint8), preds[0])
    with pytest.raises(UsageError, match="test-time"):
        seg.predict(images[0], tta="rotate")


def test_predict_logits_at_original_size(artifact: Path, images) -> None:
    seg = distilseg.load(artifact)
    logits = seg.predict_logits(images)
    assert [tuple(lg.shape) for lg in logits] == [(K, 40, 50), (K, 17, 23), (K, 64, 96)]
    for lg, pred in zip(logits, seg.predict(images)):
        np.testing.assert_array_equal(lg.argmax(0).astype(np.uint8), pred)


def test_properties(artifact: Path) -> None:
    seg = distilseg.load(artifact)
    assert seg.num_classes == K
    assert seg.class_names == ["road", "car", "tree"]
    np.testing.assert_array_equal(seg.palette, np.array(PALETTE, dtype=np.uint8))
    assert seg.config["architecture"] == "unet"
    assert seg.config["model_args"] == {"depth": 2, "base_width": 8}
    seg.config["num_classes"] = 99  # a copy: the segmenter is unaffected
    assert seg.num_classes == K


def test_load_training_folder_with_best(tmp_path: Path, images) -> None:
    run = tmp_path / "run"
    _make_artifact(run / "best", seed=1)
    _make_artifact(run / "last", seed=2)
    seg = distilseg.load(run)
    direct = distilseg.load(run / "best")
    assert Path(seg.source) == run / "best"
    for name, tensor in direct.model.state_dict().items():
        assert torch.equal(seg.model.state_dict()[name], tensor), name
    np.testing.assert_array_equal(seg.predict(images[0])[0], direct.predict(images[0])[0])


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nope"):
        distilseg.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty"):
        distilseg.load(tmp_path / "empty")
    (tmp_path / "w.pt").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="w.pt"):
        distilseg.load(tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="missing.onnx"):
        distilseg.load(tmp_path / "missing.onnx")


def test_zoo_resolution(tmp_path: Path, monkeypatch, images) -> None:
    import distilseg.zoo as zoo

    with pytest.raises(UsageError, match="available"):
        distilseg.load("zoo:no_such_model")
    monkeypatch.setattr(zoo, "ZOO_DIR", tmp_path)
    _make_artifact(tmp_path / "tiny")
    assert zoo.list_zoo() == ["tiny"]
    assert zoo.resolve_zoo("zoo:tiny") == tmp_path / "tiny"
    seg = distilseg.load("zoo:tiny")
    assert seg.num_classes == K and seg.predict(images[1])[0].shape == (17, 23)
    with pytest.raises(UsageError, match="tiny"):
        zoo.resolve_zoo("other")


def test_load_onnx_file_has_same_interface(artifact: Path, images, tmp_path: Path) -> None:
    from distilseg.export import onnx_export as export

    torch_seg = distilseg.load(artifact)
    onnx_path = export.export_onnx(torch_seg.model, torch_seg.config, tmp_path / "m.onnx")
    seg = distilseg.load(onnx_path)
    assert type(seg).__name__ == "OnnxSegmenter"
    assert seg.num_classes == K and list(seg.class_names) == torch_seg.class_names
    preds = seg.predict(images)
    expected = torch_seg.predict(images)
    assert [p.shape for p in preds] == [(40, 50), (17, 23), (64, 96)]
    for a, b in zip(preds, expected):
        assert (a == b).mean() > 0.99  # same preprocessing; fp32 ONNX vs torch differ only by rounding

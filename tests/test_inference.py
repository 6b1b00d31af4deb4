"""Inference on real footage: resize policies, sliding windows, multi-scale + flip TTA, tensor inputs,
``predict --skip-bad`` and the 1080p keep-ratio + slide acceptance run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import distilseg
from distilseg.cli import main
from distilseg.inference import base as segmod
from distilseg.artifact import save_artifact
from distilseg.inference.options import TTA, parse_tta, resolve_options
from distilseg.inference.segmenter import Segmenter
from distilseg.inference.tiling import sliding_window_logits, window_starts
from distilseg.errors import UsageError
from distilseg.models import create_model

K = 3
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


pytestmark = pytest.mark.usefixtures("run_config_check")


def _tiny(seed: int = 0) -> nn.Module:
    """Two 3x3 convs, no downsampling: receptive field 5x5 (2 pixels each side)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, K, 3, padding=1)).eval()


class Recorder(nn.Module):
    """Wraps a model and records the spatial size of every network input; asks for padding to 16."""

    output_stride = 16

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.shapes = inner, []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


def _segmenter(input_size=(32, 48), model: nn.Module | None = None) -> Segmenter:
    config = {"num_classes": K, "mean": MEAN, "std": STD, "input_size": list(input_size) if input_size else None,
              "class_names": ["a", "b", "c"], "palette": [[0, 0, 0], [255, 0, 0], [0, 255, 0]]}
    return Segmenter(Recorder(model or _tiny()), config)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img[:, : w // 3] //= 2
    return img


def _normalize(image: np.ndarray, size=None) -> torch.Tensor:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
    if size is not None and tuple(size) != image.shape[:2]:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


# ---- sliding window ------------------------------------------------------------------------------------
def test_window_starts_cover_the_image() -> None:
    assert window_starts(100, 32, 20) == [0, 20, 40, 60, 68]
    assert window_starts(32, 32, 5) == [0]
    with pytest.raises(UsageError):
        window_starts(20, 32, 8)


def test_sliding_window_equals_whole_image_where_receptive_field_fits() -> None:
    model = _tiny()
    x = torch.randn(2, 3, 150, 230)
    window, stride = (40, 56), (26, 37)
    calls: list[int] = []

    def logits_fn(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        assert tuple(batch.shape[-2:]) == window
        return model(batch)

    with torch.no_grad():
        whole = model(x)
    slid = sliding_window_logits(logits_fn, x, window, stride, window_batch=3)
    assert slid.shape == whole.shape
    assert max(calls) <= 3  # memory bounded by the window batch
    ys, xs = window_starts(150, 40, 26), window_starts(230, 56, 37)
    assert sum(calls) == 2 * len(ys) * len(xs)
    # pixels within 2 px of a window edge that is not an image edge see zero padding instead of the image
    bad = torch.zeros(150, 230, dtype=torch.bool)
    for y in ys:
        for x0 in xs:
            if y > 0:
                bad[y:y + 2, x0:x0 + 56] = True
            if y + 40 < 150:
                bad[y + 38:y + 40, x0:x0 + 56] = True
            if x0 > 0:
                bad[y:y + 40, x0:x0 + 2] = True
            if x0 + 56 < 230:
                bad[y:y + 40, x0 + 54:x0 + 56] = True
    good = ~bad
    assert good.float().mean() > 0.6
    torch.testing.assert_close(slid[..., good], whole[..., good], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(slid[..., bad], whole[..., bad])  # the comparison is not vacuous
    # the window batch changes nothing but memory
    torch.testing.assert_close(sliding_window_logits(model, x, window, stride, window_batch=1), slid)


def test_segmenter_slide_matches_whole_image_interior() -> None:
    seg = _segmenter(input_size=None)
    image = _image(120, 170)
    whole = seg.predict_logits(image, resize="none")[0]
    slid = seg.predict_logits(image, resize="none", slide=True, window=(48, 64), stride=(16, 16))[0]
    assert slid.shape == whole.shape == (K, 120, 170)
    # with a stride of 16 and a window of 48, the pixels 16..32 of every window are ≥ 2 px from its edges;
    # their averages mix in only windows where they are interior for the middle band
    np.testing.assert_allclose(slid[:, 20:28, 20:28], whole[:, 20:28, 20:28], atol=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_slide_runs_onnx_like_torch(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from distilseg.inference.onnx_backend import OnnxSegmenter

    model = _tiny(1)
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, torch.randn(1, 3, 32, 32), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}, "logits": {0: "n", 2: "h", 3: "w"}},
                      dynamo=False)
    (tmp_path / "tiny.json").write_text(json.dumps({"num_classes": K, "mean": MEAN, "std": STD, "input_size": None}))
    onnx = OnnxSegmenter(path)
    seg = _segmenter(input_size=None, model=model)
    image = _image(70, 90, seed=2)
    opts = dict(resize="none", slide=True, window=(32, 40), stride=(20, 24), window_batch=2)
    np.testing.assert_allclose(onnx.predict_logits(image, **opts)[0], seg.predict_logits(image, **opts)[0],
                               atol=1e-4)


# ---- resize policies -----------------------------------------------------------------------------------
def test_resize_policies_network_sizes_and_output_size() -> None:
    seg = _segmenter(input_size=(32, 48))
    image = _image(40, 100)
    rec = seg.model
    assert seg.predict(image)[0].shape == (40, 100)  # fixed: the artifact's size
    assert rec.shapes[-1][-2:] == (32, 48)
    assert seg.predict(image, resize="keep-ratio", short_side=24)[0].shape == (40, 100)
    assert rec.shapes[-1][-2:] == (32, 64)  # 24x60 keeps 2:5, padded to the stride 16
    assert seg.predict(image, resize="none")[0].shape == (40, 100)
    assert rec.shapes[-1][-2:] == (48, 112)  # native, padded to 16
    seg.set_inference(resize="keep-ratio")  # default short side: the model's shorter input side
    seg.predict(_image(50, 40))
    assert seg.last_input_size == (48, 32)  # 40x32 -> padded height 48


def test_keep_ratio_equals_manual_recipe() -> None:
    seg = _segmenter()
    image = _image(45, 75, seed=3)
    got = seg.predict_logits(image, resize="keep-ratio", short_side=30)[0]
    x = F.pad(_normalize(image, (30, 50)), (0, 14, 0, 2))  # 30x50 padded to 32x64
    with torch.no_grad():
        logits = seg.model.inner(x)[..., :30, :50]
    want = F.interpolate(logits, size=(45, 75), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


# ---- TTA -------------------------------------------------------------------------------------------------
def test_parse_tta_one_validator() -> None:
    assert parse_tta(None) == TTA() and not parse_tta("none")
    assert parse_tta("flip") == TTA(flip=True)
    assert parse_tta(["scales=0.75,1,1.25", "flip"]) == TTA(scales=(0.75, 1.0, 1.25), flip=True)
    assert parse_tta("scales=0.5,1 flip").passes == 4
    for bad in ("rotate", "scales=0,1", "scales=a", ["flip", "zoom"]):
        with pytest.raises(UsageError):
            parse_tta(bad)


def test_multiscale_flip_tta_averages_softmax_at_native_size() -> None:
    seg = _segmenter(input_size=(32, 48))
    image = _image(40, 60, seed=4)
    got = seg.predict_logits(image, tta="scales=0.5,1 flip")[0]
    probs = []
    with torch.no_grad():
        for s in (0.5, 1.0):
            x = _normalize(image, (round(32 * s), round(48 * s)))
            for flip in (False, True):
                lg = seg.model.inner(x.flip(-1)).flip(-1) if flip else seg.model.inner(x)
                probs.append(F.interpolate(lg, size=(40, 60), mode="bilinear", align_corners=False).softmax(1))
    want = torch.stack(probs).mean(0).log()[0].numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(seg.predict(image, tta=["scales=0.5,1", "flip"])[0], want.argmax(0))


# ---- Python API inputs and bad options ---------------------------------------------------------------------
def test_predict_accepts_tensors() -> None:
    seg = _segmenter()
    images = [_image(30, 40, seed=i) for i in range(2)]
    want = seg.predict(images)
    chw = [torch.from_numpy(a).permute(2, 0, 1) for a in images]
    for got, exp in zip(seg.predict(chw), want):
        np.testing.assert_array_equal(got, exp)
    nchw_float = torch.stack(chw).float() / 255.0
    for got, exp in zip(seg.predict(nchw_float), want):
        np.testing.assert_array_equal(got, exp)
    with pytest.raises(UsageError, match="0-1"):
        seg.predict(nchw_float * 255.0)


def test_bad_inference_options() -> None:
    with pytest.raises(UsageError, match="stride"):
        resolve_options(slide=True, window=(32, 32), stride=(40, 16))
    with pytest.raises(UsageError, match="resize"):
        resolve_options(resize="stretch")
    seg = _segmenter()
    with pytest.raises(UsageError, match="larger than the image"):
        seg.predict(_image(20, 20), resize="none", slide=True, window=(32, 32), stride=(16, 16))
    # other policies pad the resized image up to the window instead
    assert seg.predict(_image(20, 20), resize="keep-ratio", short_side=16, slide=True, window=(32, 32),
                       stride=(16, 16))[0].shape == (20, 20)


# ---- CLI -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def art(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("unet", K, depth=2, base_width=8)
    config = {"num_classes": K, "palette": [[0, 0, 0], [250, 0, 0], [0, 250, 0]], "input_size": [32, 32]}
    return save_artifact(tmp_path_factory.mktemp("inf") / "art", model, config)


def test_cli_bad_window_and_stride_are_one_line_usage_errors(art: Path, tmp_path: Path, capsys) -> None:
    Image.fromarray(_image(30, 40)).save(tmp_path / "small.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(art), str(tmp_path / "small.png"), "--out", str(out),
                 "--slide", "--window", "32", "32", "--stride", "40", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "stride" in err and len(err.splitlines()) == 1
    assert main(["predict", "--checkpoint", str(art), str(tmp_path / "small.png"), "--out", str(out),
                 "--resize", "none", "--slide", "--window", "64", "64", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "small.png" in err and "larger than the image" in err and len(err.splitlines()) == 1


def test_cli_predict_and_eval_take_inference_flags(art: Path, tmp_path: Path) -> None:
    Image.fromarray(_image(30, 50)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(art), str(tmp_path / "a.png"), "--out", str(out), "--save-labels",
                 "--resize", "keep-ratio", "--short-side", "24", "--tta", "scales=0.75,1", "flip", "--no-progress"]) == 0
    labels = np.asarray(Image.open(out / "a_labels.png"))
    seg = distilseg.load(art)
    np.testing.assert_array_equal(labels, seg.predict(_image(30, 50), resize="keep-ratio", short_side=24,
                                                      tta="scales=0.75,1 flip")[0])
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    Image.fromarray(_image(30, 50)).save(data / "images" / "x.png")
    Image.fromarray((np.arange(30 * 50).reshape(30, 50) % K).astype(np.uint8)).save(data / "masks" / "x.png")
    ev = tmp_path / "ev"
    assert main(["eval", "--checkpoint", str(art), "--dataset", "folder", "--root", str(data), "--dataset-args",
                 f"num_classes={K}", "--split", "val", "--out", str(ev), "--resize", "none", "--slide", "--window",
                 "16", "16", "--stride", "8", "8", "--tta", "flip", "--no-progress"]) == 0
    assert json.loads((ev / "metrics.json").read_text())["num_images"] == 1


def test_predict_skip_bad_lists_unreadable_file(art: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(_image(30, 40)).save(folder / "good.png")
    raw = (folder / "good.png").read_bytes()
    (folder / "broken.png").write_bytes(raw[: len(raw) // 2])  # truncated
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(art), str(folder), "--out", str(out), "--no-progress"]) == 1
    assert "broken.png" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(art), str(folder), "--out", str(out), "--no-progress",
                 "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1" in err and "broken.png" in err
    assert (out / "good_overlay.png").is_file() and not (out / "broken_overlay.png").exists()


def test_acceptance_1080p_keep_ratio_slide(tmp_path: Path, monkeypatch) -> None:
    """A 1920x1080 frame at short side 720 with 360x480 windows: a 1920x1080 label map, and the network saw
    the frame at 16:9 (720x1280, already a multiple of the stride) cut into windows."""
    frames = sorted(Path(__file__).resolve().parents[2].joinpath("shared/datasets/camvid/val").glob("*.png"))
    base = np.asarray(Image.open(frames[0]).convert("RGB")) if frames else _image(360, 480)
    frame = tmp_path / "FRAME_1920x1080.png"
    Image.fromarray(base).resize((1920, 1080), Image.BILINEAR).save(frame)
    seen: list[tuple] = []
    real = segmod.sliding_window_logits

    def recording(logits_fn, batch, window, stride, window_batch=4):
        seen.append((tuple(batch.shape[-2:]), tuple(window), tuple(stride)))

        def fn(x):
            seen.append(("window", tuple(x.shape[-2:])))
            return logits_fn(x)

        return real(fn, batch, window, stride, window_batch)

    monkeypatch.setattr(segmod, "sliding_window_logits", recording)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", "zoo:camvid-student-kd", str(frame), "--resize", "keep-ratio",
                 "--short-side", "720", "--slide", "--window", "360", "480", "--stride", "240", "320",
                 "--save-labels", "--out", str(out), "--no-progress"]) == 0
    labels = Image.open(out / "FRAME_1920x1080_labels.png")
    assert labels.size == (1920, 1080) and labels.mode == "L"
    assert int(np.asarray(labels).max()) < 11
    (h, w), window, stride = seen[0]
    assert (h, w) == (720, 1280) and w * 9 == h * 16  # aspect ratio kept: 16:9
    assert window == (360, 480) and stride == (240, 320)
    assert {s[1] for s in seen[1:]} == {(360, 480)}


# ---- legends ---------------------------------------------------------------------------------------------
def test_pictures_carry_a_legend(art: Path, tmp_path: Path) -> None:
    from distilseg.viz import add_legend, legend_strip, save_grid

    palette = np.array([[250, 0, 0], [0, 250, 0], [0, 0, 250]], dtype=np.uint8)
    cells = [[_image(40, 60), np.zeros((40, 60, 3), np.uint8)]]
    plain = np.asarray(Image.open(save_grid(cells, tmp_path / "plain.png")))
    with_legend = np.asarray(Image.open(save_grid(cells, tmp_path / "legend.png", legend=(["a", "b", "c"], palette))))
    assert with_legend.shape[0] > plain.shape[0] + 20
    for color in palette:  # every class swatch is drawn in its exact color
        assert np.all(with_legend[..., :3] == color, axis=2).any()
    strip = legend_strip(["road", "car", "sky"], palette, 200)
    assert strip.shape[1] == 200 and np.all(strip == palette[1], axis=2).any()
    assert add_legend(_image(30, 200), ["road", "car", "sky"], palette, inside=True).shape == (30, 200, 3)
    # predict --legend: a strip under the color / overlay PNGs and legend.png; labels stay exact
    Image.fromarray(_image(30, 50)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(art), str(tmp_path / "a.png"), "--out", str(out), "--legend",
                 "--save-labels", "--no-progress"]) == 0
    assert Image.open(out / "a_overlay.png").size[1] > 30 and Image.open(out / "a_labels.png").size == (50, 30)
    assert (out / "legend.png").is_file()

"""ONNX export, sidecar, dynamic shapes, fp16 / INT8 and OnnxSegmenter against the PyTorch model."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from distilseg.cli import main
from distilseg.artifact import save_artifact
from distilseg.export.onnx_export import check_onnx, export_checkpoint, export_onnx, synthetic_images
from distilseg.inference.onnx_backend import OnnxSegmenter, make_session, run_logits
from distilseg.export.sources import preprocess
from distilseg.models import create_model, list_models

warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)

# Small configurations so the whole parametrized run stays in seconds; models not listed run at defaults.
TINY_ARGS = {
    "unet": {"depth": 2, "base_width": 8},
    "attention_unet": {"depth": 2, "base_width": 8},
    "dilated_dws_unet": {"depth": 2, "base_width": 8},
    "msa_unet": {"base_width": 8},
    "msa_unet_student": {"base_width": 8},
    "danet": {"encoder": "efficientnet_b0"},  # the default efficientnet_b3 only adds time, not coverage
}
BIG = {"danet", "fcn_resnet50", "segformer"}
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


pytestmark = pytest.mark.usefixtures("run_config_check")


def _params():
    out = []
    for name in list_models():
        marks = [pytest.mark.slow] if name in BIG else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


def _tiny_unet(num_classes: int = 4) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unet", num_classes, depth=2, base_width=8).eval()


def _artifact(tmp_path: Path, model: torch.nn.Module, num_classes: int, size=(64, 64)) -> Path:
    config = {
        "num_classes": num_classes,
        "class_names": [f"c{i}" for i in range(num_classes)],
        "palette": [[i * 10, 255 - i * 10, i] for i in range(num_classes)],
        "mean": MEAN,
        "std": STD,
        "input_size": list(size),
        "ignore_index": 255,
        "dataset": "synthetic",
    }
    return save_artifact(tmp_path / "art", model, config)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny U-Net trained for 60 steps on synthetic road scenes: confident, structured predictions
    (unlike a random model), which is what INT8 and fp16 agreement must be judged on."""
    from distilseg.data import create_dataset

    torch.manual_seed(0)
    ds = create_dataset("synthetic", split="train", num_images=32, size=(48, 64), seed=0)
    x = torch.stack([torch.from_numpy(preprocess(ds.load_image(i), None, MEAN, STD)) for i in range(len(ds))])
    y = torch.stack([torch.from_numpy(ds.load_mask(i).astype(np.int64)) for i in range(len(ds))])
    model = create_model("unet", ds.num_classes, depth=2, base_width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for step in range(60):
        idx = torch.arange(step * 8, step * 8 + 8) % len(ds)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y)[y != 255].float().mean().item()
    assert acc > 0.6, f"the fixture model did not learn (pixel accuracy {acc:.3f})"
    return _artifact(tmp_path_factory.mktemp("trained"), model, ds.num_classes, size=(48, 64))


@pytest.mark.parametrize("name", _params())
def test_every_registered_model_exports_and_matches_torch(name, tmp_path):
    torch.manual_seed(0)
    model = create_model(name, 3, **TINY_ARGS.get(name, {})).eval()
    path = export_onnx(model, {"num_classes": 3}, tmp_path / f"{name}.onnx", img_size=(64, 64))
    session = make_session(path)
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert session.get_inputs()[0].shape == [1, 3, 64, 64]
    check = check_onnx(model, path, synthetic_images(2, (64, 64)), size=(64, 64))
    assert check["num_images"] == 2
    assert check["max_abs_logit_diff"] < 1e-3
    assert check["pixel_agreement"] >= 0.999


def test_sidecar_holds_what_inference_needs(tmp_path):
    art = _artifact(tmp_path, _tiny_unet(4), 4, size=(48, 80))
    out = tmp_path / "m.onnx"
    summary = export_checkpoint(str(art), out, opset=13, check_images=2)
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["num_classes"] == 4
    assert side["class_names"] == ["c0", "c1", "c2", "c3"]
    assert side["palette"] == [[0, 255, 0], [10, 245, 1], [20, 235, 2], [30, 225, 3]]
    assert side["mean"] == MEAN and side["std"] == STD
    assert side["input_size"] == [48, 80]
    assert side["ignore_index"] == 255
    assert side["architecture"] == "unet"
    assert side["model_args"] == {"depth": 2, "base_width": 8}
    assert side["opset"] == 13 and side["precision"] == "fp32" and side["dynamic"] is False
    assert side["check"] == summary["check"]
    assert side["check"]["source"] == "synthetic" and side["check"]["num_images"] == 2
    assert side["check"]["pixel_agreement"] >= 0.999
    import onnx

    assert onnx.load(str(out)).opset_import[0].version == 13
    assert make_session(out).get_inputs()[0].shape == [1, 3, 48, 80]


def test_dynamic_export_accepts_other_sizes(tmp_path):
    model = _tiny_unet(3)
    path = export_onnx(model, {"num_classes": 3}, tmp_path / "d.onnx", img_size=(64, 64), dynamic=True)
    session = make_session(path)
    shape = session.get_inputs()[0].shape
    assert all(isinstance(d, str) for d in (shape[0], shape[2], shape[3]))
    side = json.loads((tmp_path / "d.json").read_text())
    assert side["dynamic"] is True and side["output_stride"] == model.output_stride == 4
    gen = torch.Generator().manual_seed(1)
    # a multiple of the stride runs as is; 37x53 needs the padding run_logits adds (like forward does)
    for n, h, w in ((2, 48, 80), (1, 37, 53)):
        x = torch.randn(n, 3, h, w, generator=gen)
        got = run_logits(session, x.numpy(), side["output_stride"])
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.shape == (n, 3, h, w)
        np.testing.assert_allclose(got, ref, atol=1e-4)


def test_onnx_segmenter_predicts_at_original_sizes_like_torch(tmp_path):
    import distilseg
    from distilseg.inference.segmenter import Segmenter

    model = _tiny_unet(4)
    art = _artifact(tmp_path, model, 4, size=(64, 64))
    out = tmp_path / "m.onnx"
    export_checkpoint(str(art), out, check_images=0)
    seg = distilseg.load(out)
    assert isinstance(seg, OnnxSegmenter)
    assert seg.num_classes == 4 and seg.class_names == ["c0", "c1", "c2", "c3"]
    assert seg.palette.shape == (4, 3) and seg.palette.dtype == np.uint8 and seg.palette[1].tolist() == [10, 245, 1]
    assert seg.input_size == (64, 64) and seg.config["input_size"] == [64, 64]
    images = synthetic_images(1, (50, 70), seed=3) + synthetic_images(1, (90, 60), seed=4) + [
        synthetic_images(1, (64, 64), seed=5)[0]
    ]
    preds = seg.predict(images, batch_size=2)
    assert [p.shape for p in preds] == [(50, 70), (90, 60), (64, 64)]
    assert all(p.dtype == np.uint8 and p.max() < 4 for p in preds)
    ref = Segmenter(model, json.loads((art / "config.json").read_text())).predict(images)
    for p, r in zip(preds, ref):
        assert (p == r).mean() >= 0.999
    logits = seg.predict_logits(images[:1])
    assert logits[0].shape == (4, 50, 70) and logits[0].dtype == np.float32
    flip = seg.predict(images[:1], tta="flip")
    assert flip[0].shape == (50, 70)
    with pytest.raises(Exception, match="fixed input size"):
        seg.input_size = (32, 32)


def test_fp16_keeps_float32_io(trained, tmp_path):
    import onnx

    out = tmp_path / "h.onnx"
    summary = export_checkpoint(str(trained), out, fp16=True, check_images=4,
                                calibration_dataset=None)
    graph = onnx.load(str(out)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    assert summary["precision"] == "fp16"
    # fp16 has ~3 significant digits: only pixels whose top-2 logits are within ~1e-3 may flip
    assert summary["check"]["pixel_agreement"] >= 0.995


def test_int8_static_quantization_agrees_with_fp32(trained, tmp_path):
    import onnx

    out = tmp_path / "q.onnx"
    code = main([
        "export", "--checkpoint", str(trained), "--out", str(out), "--int8",
        "--calibration-dataset", "synthetic", "--calibration-split", "train", "--calibration-images", "16",
        "--check-split", "val", "--check-images", "8", "--weight-bits", "7",
    ])
    assert code == 0
    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(t.data_type == onnx.TensorProto.INT8 for t in graph.initializer)  # QInt8 weights
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["precision"] == "int8"
    assert side["calibration"] == {"dataset": "synthetic", "split": "train", "num_images": 16}
    assert side["quantization"]["reduce_range"] is True and side["quantization"]["head_float"] is True
    assert side["quantization"]["weight_bits"] == 7
    assert _largest_int8_weight(graph) <= 64  # 7-bit: the largest filter weight maps to 63 or 64, never 127
    # the classifier conv reads float weights straight from an initializer (no DequantizeLinear before it)
    head = [n for n in graph.node if n.op_type == "Conv"][-1]
    floats = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert head.input[1] in floats
    body = [n for n in graph.node if n.op_type == "Conv"][0]
    assert body.input[1] not in floats
    check = side["check"]
    assert check["source"] == "synthetic:val" and check["num_images"] == 8
    # 8-bit activations put ~0.5% of the logit range of noise on each layer; a trained model's top-2
    # margin is larger than that except on a thin band of boundary pixels (measured 99.8% here; 98% leaves room for other CPUs and versions).
    assert check["pixel_agreement"] >= 0.98
    preds = OnnxSegmenter(out).predict(synthetic_images(1, (30, 40)))
    assert preds[0].shape == (30, 40)
    # scales and zero points are not weights: the INT8 file counts as many parameters as the fp32 one
    from distilseg.export.bench import onnx_param_count

    fp32 = export_checkpoint(str(trained), tmp_path / "f.onnx", check_images=0, calibration_dataset=None)
    qnames = {i for n in graph.node if n.op_type == "DequantizeLinear" for i in n.input[1:]}
    assert qnames and onnx_param_count(out) == onnx_param_count(fp32["onnx"])


def _largest_int8_weight(graph) -> int:
    import onnx
    from onnx import numpy_helper

    return max(int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max())
               for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims)


def test_default_weight_bits_follow_the_cpu():
    from distilseg.export.quantize import default_reduce_range

    flags = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f {}\nbogomips\t: 1\n"
    assert default_reduce_range("x86_64", flags.format("avx512_vnni"))[0] is False
    assert default_reduce_range("x86_64", flags.format("avx_vnni"))[0] is False
    assert default_reduce_range("AMD64", flags.format(""))[0] is True
    assert default_reduce_range("x86_64", "")[0] is True  # flags unreadable: the safe 7 bits
    assert "unreadable" in default_reduce_range("x86_64", "")[1]
    assert default_reduce_range("aarch64", "")[0] is False
    assert default_reduce_range("arm64", flags.format(""))[0] is False
    assert default_reduce_range("", "")[0] is True  # unknown CPU type: the safe 7 bits
    assert default_reduce_range("riscv64", "")[0] is True
    reduce, why = default_reduce_range("x86_64", flags.format("avx512_vnni"))
    assert reduce is False and why == "this CPU has avx512_vnni"


def test_int8_calibration_reads_the_dataset_with_its_options(trained, tmp_path, capsys, monkeypatch):
    import onnx

    from distilseg.export.quantize import default_reduce_range

    out = tmp_path / "q.onnx"
    code = main([
        "export", "--checkpoint", str(trained), "--out", str(out), "--int8", "--calibration-dataset", "synthetic",
        "--calibration-images", "16", "--calibration-dataset-args", "num_images=3", "--check-images", "2",
    ])
    assert code == 0
    # no --weight-bits: this CPU's choice, printed and kept in the sidecar
    reduce, why = default_reduce_range()
    assert f"INT8 weights: {7 if reduce else 8}-bit ({why})" in capsys.readouterr().out
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["quantization"]["reduce_range"] is reduce and side["quantization"]["weight_bits_reason"] == why
    assert (_largest_int8_weight(onnx.load(str(out)).graph) <= 64) is reduce
    # forced 8-bit (whatever this CPU is): full-range weights, and a warning where such a file would saturate
    eight = tmp_path / "q8.onnx"
    assert main(["export", "--checkpoint", str(trained), "--out", str(eight), "--int8", "--calibration-dataset",
                 "synthetic", "--calibration-images", "4", "--check-images", "0", "--full-range"]) == 0
    assert "INT8 weights: 8-bit (as asked" in capsys.readouterr().out
    side8 = json.loads(eight.with_suffix(".json").read_text())["quantization"]
    assert side8["weight_bits"] == 8 and side8["reduce_range"] is False
    assert _largest_int8_weight(onnx.load(str(eight)).graph) == 127
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        OnnxSegmenter(out)  # the 7- or 8-bit file chosen for this CPU: no warning
    import distilseg.inference.int8_cpu as int8_cpu

    monkeypatch.setattr(int8_cpu, "default_reduce_range", lambda: (True, "this x86 CPU has no VNNI"))
    with pytest.warns(UserWarning, match=r"q8\.onnx: INT8 file with 8-bit weights, but this x86 CPU has no VNNI"):
        OnnxSegmenter(eight)
    contradiction = main(["export", "--checkpoint", str(trained), "--out", str(tmp_path / "x.onnx"), "--int8",
                          "--calibration-dataset", "synthetic", "--full-range", "--weight-bits", "7"])
    assert contradiction == 2 and "contradicts --weight-bits 7" in capsys.readouterr().err
    # the option reached the dataset: only its 3 images exist (the default train split has more than 16)
    assert side["calibration"] == {"dataset": "synthetic", "split": "train", "num_images": 3,
                                   "dataset_args": {"num_images": 3}}
    bad = main(["export", "--checkpoint", str(trained), "--out", str(tmp_path / "b.onnx"), "--int8",
                "--calibration-dataset", "synthetic", "--calibration-dataset-args", "num_images"])
    assert bad == 2 and "--calibration-dataset-args: expected key=value" in capsys.readouterr().err
    alone = main(["export", "--checkpoint", str(trained), "--out", str(tmp_path / "c.onnx"),
                  "--calibration-dataset-args", "num_images=3"])
    assert alone == 2 and "needs --calibration-dataset" in capsys.readouterr().err


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    art = _artifact(tmp_path, _tiny_unet(3), 3)
    assert main(["export", "--checkpoint", str(art), "--out", str(tmp_path / "q.onnx"), "--int8"]) == 2
    assert "--calibration-dataset" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(art), "--out", str(tmp_path / "m.txt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
    missing = tmp_path / "nope"
    assert main(["export", "--checkpoint", str(missing), "--out", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and err.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()


def test_export_cli_prints_check(tmp_path, capsys):
    art = _artifact(tmp_path, _tiny_unet(3), 3)
    out = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(art), "--out", str(out), "--check-images", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["onnx"] == str(out) and result["precision"] == "fp32"
    assert result["check"]["pixel_agreement"] >= 0.999
    assert result["check"]["max_abs_logit_diff"] < 1e-3


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_export(tmp_path):
    art = _artifact(tmp_path, _tiny_unet(3), 3)
    out = tmp_path / "m.pt"
    assert main(["export", "--checkpoint", str(art), "--format", "torchscript", "--out", str(out)]) == 0
    loaded = torch.jit.load(str(out))
    x = torch.randn(1, 3, 64, 64)
    model, _ = __import__("distilseg.artifact", fromlist=["load_artifact"]).load_artifact(art)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)
    assert json.loads(out.with_suffix(".json").read_text())["format"] == "distilseg-torchscript"


@pytest.mark.parametrize("dynamic", [False, True])
def test_int8_export_of_a_tf_same_padding_encoder(tmp_path, monkeypatch, dynamic):
    """EfficientNet-Lite's TF "SAME" padding is computed from shapes, where onnxruntime's symbolic shape
    inference gives up; quantization must still work (ONNX shape inference), and leave nothing behind in the
    current directory (onnxruntime dumps its partial model and a uuid-named weights file there)."""
    import onnx

    torch.manual_seed(0)
    model = create_model("fpn", 7, encoder="efficientnet_lite0", encoder_depth=4, pyramid_channels=16,
                         segmentation_channels=16).eval()
    art = _artifact(tmp_path, model, 7, size=(64, 96))
    out = tmp_path / "out" / "q.onnx"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "mine.txt").write_text("the user's file")
    monkeypatch.chdir(cwd)
    code = main([
        "export", "--checkpoint", str(art), "--out", str(out), "--int8", "--no-check",
        "--calibration-dataset", "synthetic", "--calibration-split", "train", "--calibration-images", "4",
        *(["--dynamic"] if dynamic else []),
    ])
    assert code == 0
    assert sorted(p.name for p in cwd.iterdir()) == ["mine.txt"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["q.json", "q.onnx"]
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert OnnxSegmenter(out).predict(synthetic_images(1, (64, 96)))[0].shape == (64, 96)


def test_int8_layernorm_scales_are_quantized_per_channel_without_warnings(tmp_path, caplog):
    """Transformer blocks (SegFormer) hold LayerNormalization, whose scale is 1-D: quantizing it per channel on
    onnxruntime's default axis 1 warns once per layer and falls back to one scale for the whole vector."""
    import logging

    import onnx

    from distilseg.export.quantize import quantize_int8

    class ConvLayerNorm(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.norm = torch.nn.LayerNorm(8)
            self.head = torch.nn.Conv2d(8, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.norm(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
            return self.head(y)

    torch.manual_seed(0)
    model = ConvLayerNorm().eval()
    with torch.no_grad():
        model.norm.weight.copy_(torch.linspace(0.01, 4.0, 8))  # one scale for all would flatten the small ones
    fp32 = export_onnx(model, {"num_classes": 3}, tmp_path / "f.onnx", img_size=(16, 16))
    calib = [np.random.default_rng(i).standard_normal((3, 16, 16)).astype(np.float32) for i in range(4)]
    with caplog.at_level(logging.WARNING):
        out = quantize_int8(fp32, tmp_path / "q.onnx", calib)
    assert not [r.getMessage() for r in caplog.records if "out-of-range" in r.getMessage()]
    graph = onnx.load(str(out)).graph
    norm = next(n for n in graph.node if n.op_type == "LayerNormalization")
    dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == norm.input[1])
    scale = next(t for t in graph.initializer if t.name == dq.input[1])
    assert list(scale.dims) == [8]  # one scale per channel
    assert {a.name: a.i for a in dq.attribute}.get("axis") == 0

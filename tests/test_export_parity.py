"""Export: ONNX output must agree with PyTorch (strict), quantization never changes the working folder, and the
classifier is found from the graph's output."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


pytestmark = pytest.mark.usefixtures("run_config_check")


# ---- strict ONNX parity, no os.chdir, classifier found from the output ----------------------------------
def _unet_artifact(tmp_path: Path) -> Path:
    from distilseg.artifact import save_artifact
    from distilseg.models import create_model

    torch.manual_seed(0)
    model = create_model("unet", 3, depth=2, base_width=8).eval()
    return save_artifact(tmp_path / "art", model, {
        "num_classes": 3, "class_names": ["a", "b", "c"], "palette": [[0, 0, 0], [9, 9, 9], [99, 99, 99]],
        "input_size": [32, 32], "ignore_index": 255})


def test_export_fails_when_onnx_disagrees(tmp_path: Path, capsys, monkeypatch) -> None:
    import copy

    import distilseg.export.onnx_export as ox
    from distilseg.cli import main

    real = ox.export_onnx

    def broken_export(model, *a, **k):  # a file whose weights differ from the PyTorch model's
        other = copy.deepcopy(model)
        with torch.no_grad():
            for p in other.parameters():
                p.add_(0.05 * torch.randn_like(p))
        return real(other, *a, **k)

    art = _unet_artifact(tmp_path)
    out = tmp_path / "m.onnx"
    monkeypatch.setattr(ox, "export_onnx", broken_export)
    assert main(["export", "--checkpoint", str(art), "--out", str(out), "--check-images", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disagrees with PyTorch" in err[0] and str(out) in err[0]
    assert not out.exists() and not out.with_suffix(".json").exists()
    assert main(["export", "--checkpoint", str(art), "--out", str(out), "--check-images", "2", "--no-check"]) == 0
    assert out.exists()
    assert json.loads(out.with_suffix(".json").read_text())["check"]["passed"] is False
    assert main(["export", "--checkpoint", str(art), "--out", str(out), "--check-images", "2",
                 "--tolerance", "100"]) == 0
    monkeypatch.setattr(ox, "export_onnx", real)
    assert main(["export", "--checkpoint", str(art), "--out", str(out), "--check-images", "2"]) == 0
    assert json.loads(out.with_suffix(".json").read_text())["check"]["passed"] is True


def test_check_verdict_thresholds() -> None:
    from distilseg.export.onnx_export import check_verdict

    good = {"max_abs_logit_diff": 1e-5, "max_abs_logit": 10.0, "pixel_agreement": 0.97}
    assert check_verdict(good, "fp32") is None and check_verdict(good, "int8") is None
    assert "tolerance" in check_verdict({**good, "max_abs_logit_diff": 0.1}, "fp32")
    assert check_verdict({**good, "max_abs_logit_diff": 0.1}, "fp16") is None
    assert "agree" in check_verdict({**good, "pixel_agreement": 0.5}, "int8")
    assert check_verdict({**good, "pixel_agreement": 0.5}, "int8", min_agreement=0.4) is None
    assert check_verdict({**good, "max_abs_logit_diff": float("nan")}, "fp32") is not None


def test_quantize_does_not_chdir(tmp_path: Path, monkeypatch) -> None:
    import os

    from distilseg.export.onnx_export import export_checkpoint

    art = _unet_artifact(tmp_path)

    def no_chdir(*_a, **_k):
        raise AssertionError("os.chdir changes process-global state")

    monkeypatch.setattr(os, "chdir", no_chdir)
    before = set(Path.cwd().iterdir())
    r = export_checkpoint(str(art), tmp_path / "q.onnx", int8=True, calibration_dataset="synthetic",
                          calibration_images=2, check_images=0)
    assert Path(r["onnx"]).is_file() and set(Path.cwd().iterdir()) == before


def test_classifier_is_the_conv_that_feeds_the_output(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from distilseg.export.quantize import output_conv_names

    def w(name, o, i):
        return numpy_helper.from_array(np.ones((o, i, 1, 1), np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w_body"], ["b"], name="body"),
        helper.make_node("Conv", ["b", "w_cls"], ["c"], name="classifier"),
        helper.make_node("Shape", ["b"], ["shape_b"], name="shape"),  # a size subgraph from a body feature
        helper.make_node("Resize", ["c", "", "", "sizes"], ["up"], name="resize", mode="linear"),
        helper.make_node("Conv", ["x", "w_skip"], ["s"], name="skip_head"),  # second head, added to logits
        helper.make_node("Add", ["up", "s"], ["logits"], name="add"),
        helper.make_node("Conv", ["b", "w_side"], ["side"], name="side_branch"),  # last Conv, not the output
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2, 8, 8])],
        [w("w_body", 4, 3), w("w_cls", 2, 4), w("w_skip", 2, 3), w("w_side", 2, 4),
         numpy_helper.from_array(np.array([1, 2, 8, 8], np.int64), "sizes")],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    assert sorted(output_conv_names(path)) == ["classifier", "skip_head"]

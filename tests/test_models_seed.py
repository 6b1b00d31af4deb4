"""The project's own architectures: any input size, features, autocast, channels_last, weight loading."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distilseg.errors import CheckpointError, UsageError
from distilseg.io import atomic_torch_save
from distilseg.models import create_model
from distilseg.models.base import SegmentationModel, count_parameters, load_pretrained_weights

NUM_CLASSES = 5

# Narrow configurations keep the suite fast on 2 CPU cores; they run exactly the same code paths as the
# defaults (same depth / stride / block types), only with fewer channels.
CONFIGS = {
    "unet": {"base_width": 8},
    "unet_transposed": {"base_width": 8, "bilinear": False},
    "attention_unet": {"base_width": 8},
    "attention_unet_transposed": {"base_width": 8, "bilinear": False},
    "msa_unet": {"base_width": 8},
    "msa_unet_student": {"base_width": 8},
    "dilated_dws_unet": {"base_width": 8},
    "lite_student": {},
}


def _arch(key: str) -> str:
    return key.replace("_transposed", "")


def build(key: str, num_classes: int = NUM_CLASSES, **extra) -> nn.Module:
    torch.manual_seed(0)
    return create_model(_arch(key), num_classes, **{**CONFIGS[key], **extra})


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    return {key: build(key) for key in CONFIGS}


@pytest.mark.parametrize("key", list(CONFIGS))
def test_forward_backward_gives_finite_gradients_everywhere(models, key):
    model = copy.deepcopy(models[key]).train()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 96, 128)
    target = torch.randint(0, NUM_CLASSES, (2, 96, 128))
    logits = model(x)
    assert logits.shape == (2, NUM_CLASSES, 96, 128)
    F.cross_entropy(logits, target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{key}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{key}: {name} has non-finite gradient"


@pytest.mark.parametrize("key", list(CONFIGS))
@pytest.mark.parametrize("size", [(97, 131), (33, 47)])
def test_odd_sizes_give_logits_at_input_size(models, key, size):
    model = models[key].eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, NUM_CLASSES, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("key", list(CONFIGS))
def test_return_features_match_feature_channels_and_logits(models, key):
    model = models[key].eval()
    x = torch.randn(1, 3, 97, 131)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
        plain = model(x)
    assert torch.equal(logits, plain)
    assert isinstance(feats, list) and len(feats) == len(model.feature_channels) >= 2
    assert [f.shape[1] for f in feats] == list(model.feature_channels)
    # Features are cropped to the region covering the unpadded input.
    stride = model.output_stride
    padded = (math.ceil(97 / stride) * stride, math.ceil(131 / stride) * stride)
    for f in feats:
        scale = padded[0] // f.shape[-2] if padded[0] >= f.shape[-2] else 1
        assert f.shape[-2] <= math.ceil(97 / scale) + 1 and f.shape[-1] <= math.ceil(131 / scale) + 1


def test_unet_features_are_cropped_to_the_input():
    model = build("unet").eval()
    with torch.no_grad():
        _, feats = model(torch.randn(1, 3, 97, 131), return_features=True)
    assert model.output_stride == 16
    # 97x131 pads to 112x144; level i is cropped to ceil(97 / 2**i) x ceil(131 / 2**i).
    assert [tuple(f.shape[-2:]) for f in feats[:5]] == [(97, 131), (49, 66), (25, 33), (13, 17), (7, 9)]
    assert tuple(feats[-1].shape[-2:]) == (97, 131)
    assert model.feature_channels == [8, 16, 32, 64, 128, 64, 32, 16, 8]


@pytest.mark.parametrize("key", list(CONFIGS))
def test_same_seed_builds_the_same_model_and_another_seed_does_not(key):
    """Two fresh models built under the same seed give bit-identical eval outputs (initialization and forward
    are deterministic); a third built under another seed must differ, so the comparison can fail."""
    x = torch.randn(2, 3, 64, 80, generator=torch.Generator().manual_seed(1))
    first, second = build(key).eval(), build(key).eval()
    torch.manual_seed(1)
    other = create_model(_arch(key), NUM_CLASSES, **CONFIGS[key]).eval()
    with torch.no_grad():
        out = first(x)
        assert torch.equal(out, second(x))
        assert not torch.allclose(out, other(x))


@pytest.mark.parametrize("key", list(CONFIGS))
def test_bf16_autocast_forward_on_cpu(models, key):
    model = models[key].eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, feats = model(torch.randn(1, 3, 64, 96), return_features=True)
    assert out.shape == (1, NUM_CLASSES, 64, 96)
    assert torch.isfinite(out.float()).all()
    assert [f.shape[1] for f in feats] == list(model.feature_channels)


@pytest.mark.parametrize("key", list(CONFIGS))
def test_channels_last_matches_contiguous(models, key):
    model = models[key].eval()
    cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)
        out = cl_model(x.to(memory_format=torch.channels_last))
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_parameter_budgets():
    lite = create_model("lite_student", 11)
    assert count_parameters(lite) == sum(p.numel() for p in lite.parameters())
    assert count_parameters(lite) < 1_000_000
    teacher = count_parameters(create_model("msa_unet", 11))
    student = count_parameters(create_model("msa_unet_student", 11))
    assert student * 5 < teacher


def test_msa_unet_decoder_uses_all_scales_and_attention():
    model = create_model("msa_unet", 3, base_width=8)
    assert model.output_stride == 16
    assert [len(stage.skips) for stage in model.decoder] == [5, 5, 5, 5]
    assert model.feature_channels[:5] == [8, 16, 32, 64, 128]
    student = create_model("msa_unet_student", 3, base_width=8)
    # Half width, depthwise branches (groups == in_channels) after the RGB stem conv.
    assert student.feature_channels[:5] == [4, 8, 16, 32, 64]
    conv = student.encoder[1][1].square[0]
    assert conv.groups == conv.in_channels == 4


def test_base_class_pads_crops_and_upsamples():
    class Identityish(SegmentationModel):
        output_stride = 32

        def __init__(self, low_res: bool) -> None:
            super().__init__()
            self.low_res = low_res
            self.feature_channels = [3]

        def _forward(self, x):
            assert x.shape[-2] % 32 == 0 and x.shape[-1] % 32 == 0
            logits = F.avg_pool2d(x, 4) if self.low_res else x * 2
            return logits, [x]

    x = torch.randn(1, 3, 45, 70)
    out, feats = Identityish(False)(x, return_features=True)
    assert torch.equal(out, x * 2)  # padded then cropped back exactly
    assert torch.equal(feats[0], x)
    low = Identityish(True)(x)
    assert low.shape == (1, 3, 45, 70)
    with pytest.raises(ValueError, match="N x C x H x W"):
        Identityish(False)(torch.randn(3, 45, 70))


@pytest.mark.parametrize("key", ["unet", "msa_unet_student", "lite_student"])
@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_pretrained_path_round_trip(tmp_path, key, fmt):
    torch.manual_seed(3)
    src = build(key)
    path = tmp_path / f"weights.{fmt}"
    state = {k: v.clone() for k, v in src.state_dict().items()}
    if fmt == "pt":
        atomic_torch_save(state, path)
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    torch.manual_seed(4)
    loaded = build(key, pretrained=str(path))
    assert "pretrained" not in loaded.distilseg_args
    got = loaded.state_dict()
    assert got.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(got[k], v), k


def test_pretrained_accepts_lightning_style_wrapper(tmp_path):
    src = build("unet")
    path = tmp_path / "ckpt.pth"
    atomic_torch_save({"state_dict": src.state_dict(), "epoch": 3}, path)
    loaded = build("unet", pretrained=path)
    assert torch.equal(loaded.head.weight, src.head.weight)


def test_pretrained_wrong_shapes_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "other.pt"
    atomic_torch_save(build("unet", num_classes=7).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"other\.pt.*wrong shapes: head\.weight"):
        build("unet", pretrained=str(path))
    deeper = tmp_path / "deeper.safetensors"
    from safetensors.torch import save_file

    save_file(build("unet", depth=3).state_dict(), str(deeper))
    with pytest.raises(CheckpointError, match=r"deeper\.safetensors.*missing keys"):
        build("unet", pretrained=str(deeper))
    extra = tmp_path / "extra.pt"
    state = build("unet").state_dict()
    state["surplus.weight"] = torch.zeros(1)
    atomic_torch_save(state, extra)
    with pytest.raises(CheckpointError, match=r"extra\.pt.*unexpected keys: surplus\.weight"):
        build("unet", pretrained=str(extra))


def test_pretrained_errors_for_missing_unsafe_and_imagenet(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        build("lite_student", pretrained=str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        build("lite_student", pretrained=str(bad))
    not_dict = tmp_path / "list.pt"
    atomic_torch_save([torch.zeros(2)], not_dict)
    with pytest.raises(CheckpointError, match="list.pt.*state dict"):
        load_pretrained_weights(build("unet"), not_dict)
    for key in ("unet", "attention_unet", "msa_unet", "msa_unet_student", "dilated_dws_unet", "lite_student"):
        with pytest.raises(UsageError, match="from scratch"):
            create_model(_arch(key), 3, **CONFIGS[key], pretrained="imagenet")


def test_unet_argument_checks_and_encoder_delegation():
    with pytest.raises(UsageError, match="only valid together with encoder"):
        create_model("unet", 3, decoder_channels=(8, 8, 8, 8, 8))
    with pytest.raises(UsageError, match="depth"):
        create_model("unet", 3, depth=0)
    from distilseg.models.unet import UNet

    model = create_model("unet", 3, encoder="resnet18")
    assert not isinstance(model, UNet)
    assert model.distilseg_args == {"encoder": "resnet18"}

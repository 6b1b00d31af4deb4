"""Library-backed models (timm, torchvision, transformers) and pretrained loading.

These networks are big, so inputs are tiny; each model gets one forward+backward at 2x3x96x128.
Pretrained weights are never downloaded: tests save weights to ``tmp_path`` and load them back, and the
hub cases run with the hub made unreachable (offline mode / failing download).
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from distilseg.errors import CheckpointError, UsageError
from distilseg.models import create_model
from distilseg.models.pretrained import encoder_parameters

MODELS = [
    ("danet", {}),
    ("fcn_resnet50", {}),
    ("segformer", {}),
    ("unet", {"encoder": "resnet18"}),
]


def _numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _assert_same_tensors(ours: dict, reference: dict, keys=None) -> None:
    keys = list(reference) if keys is None else keys
    assert keys, "nothing to compare"
    for k in keys:
        assert torch.equal(ours[k], reference[k]), k


# ------------------------------------------------------------------------------------ forward passes
@pytest.mark.parametrize("name,kwargs", MODELS, ids=[m[0] for m in MODELS])
def test_forward_backward_and_features(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = create_model(name, 5, **kwargs)
    assert model.distilseg_arch == name and model.distilseg_args == kwargs

    # One training step's worth: full-size logits, finite gradients reaching the encoder.
    model.train()
    x = torch.randn(2, 3, 96, 128)
    logits = model(x)
    assert logits.shape == (2, 5, 96, 128)
    target = torch.randint(0, 5, (2, 96, 128))
    nn.functional.cross_entropy(logits, target).backward()
    enc = encoder_parameters(model)
    assert enc and all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc)
    assert sum(float(p.grad.abs().sum()) for p in enc) > 0

    # Odd, 360x480-like size (45x60 = 1/8 scale): logits at the input size, features as documented.
    model.eval()
    with torch.no_grad():
        small = torch.randn(1, 3, 45, 60)
        out, feats = model(small, return_features=True)
        assert torch.allclose(model(small), out)
    assert out.shape == (1, 5, 45, 60)
    assert [f.shape[1] for f in feats] == model.feature_channels
    assert all(f.shape[0] == 1 and f.dim() == 4 for f in feats)


def test_encoder_parameters_are_exactly_the_encoder() -> None:
    model = create_model("unet", 3, encoder="resnet18")
    enc = encoder_parameters(model)
    assert {id(p) for p in enc} == {id(p) for p in model.encoder.parameters()}
    assert len(enc) < len(list(model.parameters()))
    assert encoder_parameters(nn.Linear(2, 2)) == []


# -------------------------------------------------------------------------------- parameter counts
def test_fcn_resnet50_parameter_count_equals_torchvision() -> None:
    from torchvision.models.segmentation import fcn_resnet50 as tv_fcn

    # torchvision's default aux_loss=None means no auxiliary head when weights=None.
    reference = tv_fcn(weights=None, weights_backbone=None, num_classes=19)
    assert reference.aux_classifier is None
    ours = create_model("fcn_resnet50", 19)
    assert _numel(ours) == _numel(reference)
    assert set(ours.state_dict()) == set(reference.state_dict())

    # aux_loss=True: torchvision adds exactly one FCNHead(1024, num_classes) on layer3.
    from torchvision.models.segmentation.fcn import FCNHead

    ours_aux = create_model("fcn_resnet50", 19, aux_loss=True)
    assert _numel(ours_aux) == _numel(reference) + _numel(FCNHead(1024, 19))
    ours_aux.eval()
    with torch.no_grad():
        logits, aux = ours_aux.forward_aux(torch.randn(1, 3, 33, 47))
    assert logits.shape == (1, 19, 33, 47) and [a.shape for a in aux] == [(1, 19, 33, 47)]


def test_fcn_resnet50_matches_torchvision_output() -> None:
    from torchvision.models.segmentation import fcn_resnet50 as tv_fcn

    ours = create_model("fcn_resnet50", 4).eval()
    reference = tv_fcn(weights=None, weights_backbone=None, num_classes=4).eval()
    reference.load_state_dict(ours.state_dict())  # same names: loads strictly
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x)["out"])


def test_segformer_parameter_count_equals_transformers() -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    reference = SegformerForSemanticSegmentation(SegformerConfig(num_labels=19))
    ours = create_model("segformer", 19)  # default variant b0
    assert _numel(ours) == _numel(reference)


def test_segformer_matches_transformers_output() -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    ours = create_model("segformer", 3).eval()
    reference = SegformerForSemanticSegmentation(SegformerConfig(num_labels=3)).eval()
    reference.load_state_dict(ours.net.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = nn.functional.interpolate(
            reference(pixel_values=x).logits, size=(64, 64), mode="bilinear", align_corners=False
        )
        torch.testing.assert_close(ours(x), expected)


@pytest.mark.parametrize("variant,millions", [("b1", 13.7), ("b2", 27.5)])
def test_segformer_variants_match_paper_sizes(variant: str, millions: float) -> None:
    # SegFormer paper, Table 1 (ADE20K, 150 classes): B1 13.7M, B2 27.5M parameters in total.
    model = create_model("segformer", 150, variant=variant)
    assert round(_numel(model) / 1e6, 1) == millions
    with pytest.raises(UsageError, match="b9"):
        create_model("segformer", 150, variant="b9")


# -------------------------------------------------------------------------------------------- DANet
def test_danet_attention_modules() -> None:
    from distilseg.models.danet import ChannelAttention, PositionAttention

    torch.manual_seed(0)
    pam, cam = PositionAttention(16), ChannelAttention()
    assert pam.query.out_channels == pam.key.out_channels == 2 and pam.value.out_channels == 16
    x = torch.randn(2, 16, 3, 5)
    # gamma starts at 0: both modules start as the identity.
    assert pam.gamma.item() == 0.0 and cam.gamma.item() == 0.0
    assert torch.equal(pam(x), x) and torch.equal(cam(x), x)

    with torch.no_grad():
        pam.gamma.fill_(1.0)
        cam.gamma.fill_(1.0)
        # Position attention by the definition, one position at a time.
        q, k, v = pam.query(x).flatten(2), pam.key(x).flatten(2), pam.value(x).flatten(2)
        expected = torch.empty_like(v)
        for n in range(2):
            for i in range(15):
                weights = torch.softmax(q[n, :, i] @ k[n], dim=0)  # over positions j
                expected[n, :, i] = v[n] @ weights
        torch.testing.assert_close(pam(x), expected.view_as(x) + x)
        # Channel attention: softmax over (rowmax - gram) rows.
        f = x.flatten(2)
        gram = f @ f.transpose(1, 2)
        attn = torch.softmax(gram.amax(-1, keepdim=True) - gram, dim=-1)
        torch.testing.assert_close(cam(x), (attn @ f).view_as(x) + x)


def test_danet_output_stride_8_and_aux() -> None:
    model = create_model("danet", 3, encoder="resnet18", aux_loss=True).eval()
    assert model.encoder.feature_info.reduction()[-1] == 8  # dilated: head runs at stride 8
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, 64, 64), return_features=True)
        assert feats[-1].shape[-2:] == (8, 8) and feats[-1].shape[1] == 512 // 4
        main, aux = model.forward_aux(torch.randn(1, 3, 64, 64))
    assert [a.shape for a in aux] == [(1, 3, 64, 64)] * 2 and main.shape == logits.shape
    assert _numel(create_model("danet", 3, encoder="resnet18")) < _numel(model)  # aux heads off by default


# ------------------------------------------------------------------------------ local weights files
def test_timm_classifier_state_dict_into_unet_encoder(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(1)
    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = create_model("unet", 4, encoder="resnet18", pretrained=str(path))
    report = model.pretrained_report
    assert report.target == "unet(encoder='resnet18').encoder"
    assert sorted(report.unexpected) == ["fc.bias", "fc.weight"]
    assert report.missing == [] and report.mismatched == []
    expected = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    _assert_same_tensors(model.encoder.state_dict(), expected)
    assert model.distilseg_args == {"encoder": "resnet18"}  # pretrained is not part of the rebuild args


def test_timm_features_only_safetensors_into_danet(tmp_path: Path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    source = timm.create_model("resnet18", features_only=True, output_stride=8)
    path = tmp_path / "encoder.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = create_model("danet", 4, encoder="resnet18", pretrained=str(path))
    assert model.pretrained_report.missing == [] and model.pretrained_report.unexpected == []
    _assert_same_tensors(model.encoder.state_dict(), source.state_dict())


def test_full_model_state_dict_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    source = create_model("unet", 4, encoder="resnet18")
    path = tmp_path / "full.pt"
    # A Lightning-style wrapper with a "model." prefix: still recognised.
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, path)
    model = create_model("unet", 4, encoder="resnet18", pretrained=str(path))
    rep = model.pretrained_report
    assert rep.missing == [] and rep.unexpected == [] and rep.loaded == len(source.state_dict())
    _assert_same_tensors(model.state_dict(), source.state_dict())


def test_torchvision_resnet50_into_fcn_backbone(tmp_path: Path) -> None:
    import torchvision

    torch.manual_seed(4)
    source = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(source.state_dict(), path)
    model = create_model("fcn_resnet50", 6, pretrained=str(path))
    assert sorted(model.pretrained_report.unexpected) == ["fc.bias", "fc.weight"]
    assert model.pretrained_report.missing == []
    backbone = model.backbone.state_dict()
    assert len(backbone) == len(source.state_dict()) - 2
    _assert_same_tensors(backbone, source.state_dict(), keys=list(backbone))


def test_segformer_save_pretrained_folder(tmp_path: Path) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.manual_seed(5)
    source = SegformerForSemanticSegmentation(SegformerConfig(num_labels=19))
    source.save_pretrained(tmp_path / "hf")
    ref = source.state_dict()

    same = create_model("segformer", 19, pretrained=str(tmp_path / "hf"))
    _assert_same_tensors(same.net.state_dict(), ref)  # encoder and decoder (same label count)

    other = create_model("segformer", 5, pretrained=str(tmp_path / "hf"))
    got = other.net.state_dict()
    encoder_keys = [k for k in ref if k.startswith("segformer.")]
    _assert_same_tensors(got, ref, keys=encoder_keys)
    decoder_keys = [k for k in ref if k.startswith("decode_head.") and not k.startswith("decode_head.classifier")]
    _assert_same_tensors(got, ref, keys=decoder_keys)
    assert got["decode_head.classifier.weight"].shape == (5, 256, 1, 1)
    rep = other.pretrained_report
    assert rep.missing == ["decode_head.classifier.bias", "decode_head.classifier.weight"]
    assert rep.mismatched == [
        "decode_head.classifier.bias (file (19,) vs model (5,))",
        "decode_head.classifier.weight (file (19, 256, 1, 1) vs model (5, 256, 1, 1))",
    ]
    assert rep.loaded == len(ref) - 2

    # An encoder-only MiT checkpoint (what nvidia/mit-b0 is): encoder loaded, decoder reported missing.
    from transformers import SegformerForImageClassification

    mit = SegformerForImageClassification(SegformerConfig(num_labels=10))
    mit.save_pretrained(tmp_path / "mit")
    enc_only = create_model("segformer", 5, pretrained=str(tmp_path / "mit"))
    mit_state = mit.state_dict()
    mit_encoder = [k for k in mit_state if k.startswith("segformer.")]
    _assert_same_tensors(enc_only.net.state_dict(), mit_state, keys=mit_encoder)
    rep = enc_only.pretrained_report
    assert rep.unexpected == ["classifier.bias", "classifier.weight"]
    assert rep.missing and all(k.startswith("decode_head.") for k in rep.missing)
    assert len(rep.missing) == sum(k.startswith("decode_head.") for k in ref)

    # A folder of ours (model.safetensors + a config.json that is not a transformers config) loads as a
    # full-model state dict.
    from safetensors.torch import save_file

    ours = tmp_path / "artifact"
    ours.mkdir()
    save_file({k: v.contiguous() for k, v in same.state_dict().items()}, str(ours / "model.safetensors"))
    (ours / "config.json").write_text('{"architecture": "segformer", "num_classes": 19}')
    again = create_model("segformer", 19, pretrained=str(ours))
    assert again.pretrained_report.target == "segformer" and again.pretrained_report.missing == []
    _assert_same_tensors(again.state_dict(), same.state_dict())

    with pytest.raises(CheckpointError, match="variant='b0'"):
        create_model("segformer", 19, variant="b1", pretrained=str(tmp_path / "hf"))


def test_weights_that_match_nothing_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "unrelated.pth"
    torch.save({"foo.weight": torch.zeros(3, 3), "bar": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="unrelated.pth.*none of its 2 tensors"):
        create_model("unet", 4, encoder="resnet18", pretrained=str(path))
    with pytest.raises(CheckpointError, match="missing.pth: no such"):
        create_model("fcn_resnet50", 4, pretrained=str(tmp_path / "missing.pth"))
    bad = tmp_path / "code.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": socket.AF_INET}, bad)  # not weights-only
    with pytest.raises(CheckpointError, match="code.pth"):
        create_model("unet", 4, encoder="resnet18", pretrained=str(bad))


# ------------------------------------------------------------------------------------ offline hubs
@pytest.fixture()
def hf_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Hugging Face hub unreachable for this test only (huggingface_hub reads the env at import time)."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))  # no stale cache hits


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("segformer", {"pretrained": "nvidia/mit-b0"}),
        ("segformer", {"pretrained": "imagenet"}),
        ("unet", {"encoder": "resnet18", "pretrained": "imagenet"}),
        ("danet", {"encoder": "resnet18", "pretrained": "timm/resnet18.a1_in1k"}),
    ],
    ids=["segformer-hub-id", "segformer-imagenet", "unet-timm-imagenet", "danet-timm-hub-id"],
)
def test_hub_offline_gives_checkpoint_error(hf_offline: None, name: str, kwargs: dict) -> None:
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="could not get .* hub.*pass pretrained=/path"):
        create_model(name, 4, **kwargs)
    assert time.monotonic() - start < 30


def _resolves_quickly(host: str, seconds: float = 3.0) -> bool | None:
    """True: the host resolves (network up); False: fails fast; None: still hanging after ``seconds``."""
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.getaddrinfo(host, 443)
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(seconds)
    return result[0] if result else None


def test_torchvision_download_failure_gives_checkpoint_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    state = _resolves_quickly("download.pytorch.org")
    if state is True:
        pytest.skip("download.pytorch.org is reachable: the weights would really be downloaded")
    if state is None:
        pytest.skip("name lookup hangs here: a failing download would take too long")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    start = time.monotonic()
    with pytest.raises(CheckpointError, match="ResNet50_Weights.IMAGENET1K_V1.*torchvision"):
        create_model("fcn_resnet50", 4, pretrained="imagenet")
    assert time.monotonic() - start < 30


def test_bad_pretrained_names_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="unknown timm encoder 'nosuchnet'"):
        create_model("unet", 4, encoder="nosuchnet")
    with pytest.raises(UsageError, match="decoder_channels needs 5"):
        create_model("unet", 4, encoder="resnet18", decoder_channels=(64, 32, 16))
    with pytest.raises(UsageError, match="ResNet50_Weights"):
        create_model("fcn_resnet50", 4, pretrained="nvidia/mit-b0")
    with pytest.raises(UsageError, match="no weights named"):
        create_model("fcn_resnet50", 4, pretrained="ResNet50_Weights.NOPE")


def test_torchvision_weights_name_loads_through_torch_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path without a network: torch.hub's download is replaced by a state dict we built."""
    from torchvision.models.segmentation import FCN_ResNet50_Weights
    from torchvision.models.segmentation import fcn_resnet50 as tv_fcn

    torch.manual_seed(6)
    published = tv_fcn(weights=None, weights_backbone=None, num_classes=21, aux_loss=True).state_dict()
    calls: list[tuple[str, dict]] = []

    def fake_download(url: str, **kwargs):
        calls.append((url, kwargs))
        return published

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    from distilseg.models import pretrained as pre

    monkeypatch.setattr(pre, "_REACHABLE", {"download.pytorch.org": True})  # the fake download needs no network
    model = create_model("fcn_resnet50", 4, pretrained="FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1")
    assert calls == [
        (
            FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.url,
            {"progress": False, "check_hash": True, "weights_only": True, "map_location": "cpu"},
        )
    ]
    rep = model.pretrained_report
    assert rep.target == "fcn_resnet50"  # whole network, not just the backbone
    assert [m.split(" ")[0] for m in rep.mismatched] == ["classifier.4.weight", "classifier.4.bias"]
    assert rep.unexpected and all(k.startswith("aux_classifier.") for k in rep.unexpected)
    assert rep.missing == ["classifier.4.weight", "classifier.4.bias"]
    keys = [k for k in model.state_dict() if not k.startswith("classifier.4.")]
    _assert_same_tensors(model.state_dict(), published, keys=keys)

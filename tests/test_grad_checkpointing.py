"""``set_grad_checkpointing`` / ``--grad-checkpointing``: the same step for less memory.

A checkpointed training step must give the same outputs, gradients and BatchNorm statistics as a plain one
(the recompute in the backward pass must not update the statistics a second time), keep far fewer
activations, and a model without support must say so instead of silently training without it.
"""
from __future__ import annotations

import copy

import pytest
import torch

from distilseg import TrainConfig
from distilseg.errors import UsageError
from distilseg.models import create_model
from distilseg.training.config import GRAD_CHECKPOINTING_MODELS
from distilseg.training.train import build_model

SMALL = dict(depth=2, base_width=8)


def _saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Logits and the bytes autograd keeps for the backward pass during one forward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return out, total


@pytest.mark.parametrize("name", GRAD_CHECKPOINTING_MODELS)
def test_checkpointed_step_matches_the_plain_step_and_keeps_less(name):
    torch.manual_seed(0)
    plain = create_model(name, 5, **SMALL).train()
    ckpt = copy.deepcopy(plain)
    ckpt.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 32, 48)
    target = torch.randint(0, 5, (2, 32, 48))

    out_p, kept_p = _saved_bytes(plain, x)
    out_c, kept_c = _saved_bytes(ckpt, x)
    torch.nn.functional.cross_entropy(out_p, target).backward()
    torch.nn.functional.cross_entropy(out_c, target).backward()

    assert torch.equal(out_p, out_c)
    for (name, p), (_, c) in zip(plain.named_parameters(), ckpt.named_parameters()):
        assert torch.allclose(p.grad, c.grad, rtol=1e-5, atol=1e-7), name
    for (name, b), (_, c) in zip(plain.named_buffers(), ckpt.named_buffers()):
        assert torch.equal(b, c), name  # running stats and num_batches_tracked updated once
    counts = [int(b) for n, b in ckpt.named_buffers() if n.endswith("num_batches_tracked")]
    assert counts and set(counts) == {1}
    assert kept_c * 4 < kept_p, (kept_c, kept_p)


def test_checkpointing_is_off_in_eval_and_without_grad():
    model = create_model("dilated_dws_unet", 3, **SMALL)
    model.set_grad_checkpointing(True)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        a = model.train()(x)
    b = model.eval()(x)
    assert a.shape == b.shape == (1, 3, 32, 32)
    _, kept = _saved_bytes(model.eval(), x)
    plain = copy.deepcopy(model)
    plain.set_grad_checkpointing(False)
    assert kept == _saved_bytes(plain.eval(), x)[1]


def test_models_without_support_say_so(tmp_path):
    student = create_model("lite_student", 3)
    student.set_grad_checkpointing(False)  # turning it off is always allowed
    with pytest.raises(UsageError, match="LiteStudent does not support gradient checkpointing"):
        student.set_grad_checkpointing(True)
    cfg = TrainConfig(dataset="synthetic", model="lite_student", grad_checkpointing=True, out=str(tmp_path))
    with pytest.raises(UsageError, match=r"^--grad-checkpointing: lite_student \(LiteStudent\) does not support it "
                                         r"\(these do: unet, attention_unet, dilated_dws_unet\)$"):
        build_model(cfg, 3)
    # a U-Net on a timm encoder is another class, without checkpointed stages
    with pytest.raises(UsageError, match="EncoderUNet does not support gradient checkpointing"):
        create_model("unet", 3, encoder="efficientnet_lite0").set_grad_checkpointing(True)
    cfg = TrainConfig(dataset="synthetic", model="dilated_dws_unet", model_args=SMALL, grad_checkpointing=True,
                      out=str(tmp_path))
    assert build_model(cfg, 3).grad_checkpointing is True

"""Auxiliary heads (FCN, DANet) get gradients in a training step."""
from __future__ import annotations


import pytest
import torch


# ---- auxiliary heads are trained -----------------------------------------------------------------------
@pytest.mark.parametrize("name, args", [
    ("fcn_resnet50", {"aux_loss": True}),
    ("danet", {"aux_loss": True, "encoder": "resnet18", "output_stride": 16, "head_channels": 16}),
])
def test_aux_heads_get_gradients_in_a_training_step(name: str, args: dict) -> None:
    from distilseg.training.module import SegModule
    from distilseg.losses import build_loss
    from distilseg.models import create_model

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **args)
    assert model.has_aux
    module = SegModule(model, build_loss("ce", 3), 3, {"lr": 0.01, "weight_decay": 0.0})
    module.train()
    images = torch.randn(2, 3, 32, 32)
    masks = torch.randint(0, 3, (2, 32, 32))
    torch.manual_seed(1)  # same dropout draws for the reference below
    task, terms = module._task_and_terms(images, masks)
    assert terms == {}
    task.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None)]
    assert missing == []
    aux_names = [n for n, _ in model.named_parameters() if n.startswith("aux_classifier")]
    assert aux_names and all(model.get_parameter(n).grad.abs().sum() > 0 for n in aux_names if n.endswith("weight"))
    # main + 0.5 * aux (torchvision's reference); in eval mode the aux heads are not run
    with torch.no_grad():
        torch.manual_seed(1)
        logits, aux = model.forward_aux(images)
        loss_fn = build_loss("ce", 3)
        want = loss_fn(logits, masks) + 0.5 * sum(loss_fn(a, masks) for a in aux)
    assert float(task.detach()) == pytest.approx(float(want), rel=1e-5)
    module.eval()
    assert not module._uses_aux()

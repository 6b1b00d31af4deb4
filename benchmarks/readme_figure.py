"""The README's picture: a CamVid road frame, the bundled distilled student's prediction on it (overlay with the
class legend), and the accuracy / latency Pareto plot of the bundled models (the plot ``compress`` draws).

    python benchmarks/readme_figure.py --root ../shared/datasets/camvid --out docs/assets/readme_figure.png

The frame is downscaled; the scores come from ``benchmarks/results/camvid_zoo.json`` (``benchmarks/camvid_zoo.py``):
CamVid val mIoU, a split that shares its street with training frames, and ONNX Runtime latency at 360x480,
2 threads, batch 1.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROWS = (  # (label, zoo name, mIoU key, latency key)
    ("teacher", "camvid-teacher", "val_mIoU", "ort_fp32"),
    ("student", "camvid-student", "val_mIoU", "ort_fp32"),
    ("KD student", "camvid-student-kd", "val_mIoU", "ort_fp32"),
    ("INT8 KD student", "camvid-student-kd", "val_mIoU_int8_full_range", "ort_int8_full_range"),
)
X_KEY = "latency ms (ONNX Runtime)"
Y_KEY = "val mIoU %"


def pareto_rows(zoo_json: Path) -> list[dict]:
    models = {m["name"]: m for m in json.loads(zoo_json.read_text())["models"]}
    rows = []
    for label, name, miou, latency in ROWS:
        m = models[name]
        rows.append({"name": label, X_KEY: m["latency_ms"][latency], Y_KEY: 100 * m[miou], "params": m["params"]})
    return rows


def build(root: Path, frame: str, zoo_json: Path, out: Path, panel_height: int) -> Path:
    import distilseg
    from distilseg.viz import add_legend, overlay, save_pareto

    image = np.asarray(Image.open(root / "val" / frame).convert("RGB"))
    seg = distilseg.load("zoo:camvid-student-kd")
    (labels,) = seg.predict([image])
    palette = np.asarray(seg.palette, dtype=np.uint8)
    over = add_legend(overlay(image, labels, palette, alpha=0.55), seg.class_names, palette, void=False)
    with tempfile.TemporaryDirectory() as tmp:
        plot = Path(tmp) / "pareto.png"
        save_pareto(pareto_rows(zoo_json), plot, x=X_KEY, y=Y_KEY, size="params", dpi=110)
        pareto = np.asarray(Image.open(plot).convert("RGB"))

    def fit(a: np.ndarray, height: int) -> Image.Image:
        im = Image.fromarray(a)
        return im.resize((round(im.width * height / im.height), height), Image.LANCZOS)

    # frame and overlay share the frame's scale; the frame is padded white where the overlay has its legend
    scale = panel_height / over.shape[0]
    frame_im = Image.fromarray(image).resize((round(image.shape[1] * scale), round(image.shape[0] * scale)),
                                             Image.LANCZOS)
    over_im = fit(over, panel_height)
    pareto_im = fit(pareto, panel_height)
    gap = 12
    width = frame_im.width + over_im.width + pareto_im.width + 2 * gap
    canvas = Image.new("RGB", (width, panel_height), "white")
    canvas.paste(frame_im, (0, 0))
    canvas.paste(over_im, (frame_im.width + gap, 0))
    canvas.paste(pareto_im, (frame_im.width + over_im.width + 2 * gap, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", required=True, type=Path, help="CamVid root (SegNet layout)")
    p.add_argument("--frame", default="0016E5_08085.png", help="file name of a val frame")
    p.add_argument("--zoo-json", type=Path, default=Path("benchmarks/results/camvid_zoo.json"))
    p.add_argument("--out", type=Path, default=Path("docs/assets/readme_figure.png"))
    p.add_argument("--height", type=int, default=360, help="panel height in pixels")
    args = p.parse_args()
    print(build(args.root, args.frame, args.zoo_json, args.out, args.height))


if __name__ == "__main__":
    main()

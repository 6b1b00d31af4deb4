"""Copy a trained model artifact into the package's zoo (``zoo:NAME``) with fp16 weights.

    python benchmarks/bundle_zoo.py RUN/best camvid-student [--note "how it was trained"]

The weights are stored in float16 (halves the repository size; they are cast back to the model's dtype on
load) and config.json keeps the source run's validation metrics plus a ``zoo`` entry saying where it came
from, so ``distilseg eval --checkpoint zoo:NAME`` can be compared with the numbers in benchmarks/camvid.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from distilseg.artifact import load_artifact, save_artifact
from distilseg.zoo import ZOO_DIR


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", help="model artifact folder (e.g. RUN/best)")
    ap.add_argument("name", help="zoo name, e.g. camvid-student")
    ap.add_argument("--note", default="", help="how the model was trained (stored in config.json)")
    args = ap.parse_args()
    model, config = load_artifact(args.artifact)
    config = dict(config)
    config["zoo"] = {"name": args.name, "source": str(Path(args.artifact)), "weights": "float16",
                     "note": args.note}
    run = Path(args.artifact).resolve().parent  # RUN/best -> RUN: the settings that produced the model
    if (run / "config.yaml").is_file():
        config["zoo"]["train_config"] = yaml.safe_load((run / "config.yaml").read_text())
    if (run / "distill.json").is_file():
        config["zoo"]["distill"] = json.loads((run / "distill.json").read_text())
    out = save_artifact(ZOO_DIR / args.name, model, config, half=True)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"zoo:{args.name} -> {out} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Median time to decode a random 1920x1080 color-coded IDD mask (target: under 50 ms).

Also times the synthetic scene generator (target: under 5 ms per 96x128 image).

    python benchmarks/decode.py [--repeats 20] [--json OUT.json]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from distilseg.data.synthetic import render_scene
from distilseg.data.tables import ColorDecoder, idd_rgb_table


def bench_color_decode(height: int, width: int, repeats: int, seed: int = 0) -> dict:
    _, _, colors = idd_rgb_table()
    palette = np.array(list(colors), dtype=np.uint8)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, len(palette), (height, width))
    mask = palette[ids]
    decoder = ColorDecoder(colors)
    expected = np.array(list(colors.values()), dtype=np.uint8)[ids]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = decoder(mask)
        times.append((time.perf_counter() - t) * 1000)
    assert np.array_equal(out, expected), "decoder output differs from the palette's ids"
    return {"size": [height, width], "repeats": repeats, "median_ms": statistics.median(times), "min_ms": min(times)}


def bench_synthetic(height: int, width: int, repeats: int) -> dict:
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        render_scene(np.random.default_rng([0, 0, i]), height, width)
        times.append((time.perf_counter() - t) * 1000)
    return {"size": [height, width], "repeats": repeats, "median_ms": statistics.median(times), "min_ms": min(times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    result = {
        "idd_rgb_decode_1920x1080": bench_color_decode(1080, 1920, args.repeats),
        "synthetic_scene_96x128": bench_synthetic(96, 128, max(args.repeats, 50)),
    }
    d, s = result["idd_rgb_decode_1920x1080"], result["synthetic_scene_96x128"]
    print(f"idd-rgb color decode 1920x1080: median {d['median_ms']:.1f} ms (min {d['min_ms']:.1f}) [target < 50 ms]")
    print(f"synthetic scene 96x128:        median {s['median_ms']:.2f} ms (min {s['min_ms']:.2f}) [target < 5 ms]")
    if args.json:
        from distilseg.io import atomic_write_json

        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()

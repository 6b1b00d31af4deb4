"""The README's model table: every registered model through ``distilseg bench`` (torch eager, CPU).

Run: ``python benchmarks/models_table.py --img-size 360 480 --threads 2 --runs 3 --json out.json``.
Prints a Markdown table (params, GFLOPs, median CPU latency) and, with --json, the raw bench objects.
Each model runs in a fresh ``distilseg bench`` process, exactly the command a user would type.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--img-size", nargs=2, type=int, default=[360, 480])
    ap.add_argument("--num-classes", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from distilseg.models import get_model_entry, list_models

    rows = []
    for name in list_models():
        cmd = [sys.executable, "-m", "distilseg.cli", "bench", "--model", name,
               "--num-classes", str(args.num_classes), "--img-size", *map(str, args.img_size),
               "--runtime", "torch", "--threads", str(args.threads), "--runs", str(args.runs),
               "--warmup", "1", "--json"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["description"] = get_model_entry(name).description
        rows.append(res)
        print(f"{name}: {res['params']} params, {res['gflops']:.2f} GFLOPs, "
              f"{res['latency_ms_median']:.1f} ms", file=sys.stderr)

    h, w = args.img_size
    print(f"| model | description | params | GFLOPs @{h}x{w} | CPU latency ms ({args.threads} threads) |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| `{r['model']}` | {r['description']} | {r['params']/1e6:.2f}M | {r['gflops']:.1f} | "
              f"{r['latency_ms_median']:.0f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

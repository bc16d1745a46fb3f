"""`brainuad segment` on the 11 raw longitudinal MS FLAIRs of ../shared/data (issue 16): the
seconds of every stage, the process's wall time from start-up to exit, and its peak memory,
each scan in a fresh process (as a user runs it). The CPU differs between sessions, so the run
also measures its fp32 matmul speed (2 threads, 2048^2) before and after the scans: compare
runs through it.

    python benchmarks/segment.py [--model flair-ms] [--work /tmp/bench-segment] [--scans N]

Prints a table per scan, one per stage (mean and range) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from inference import matmul_gflops  # benchmarks/inference.py
from run_record import run_record  # benchmarks/run_record.py

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mslub_longitudinal_raw"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="bundled model or run directory")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-segment"))
    parser.add_argument("--scans", type=int, default=0, help="only the first N scans (0: all)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    torch.set_num_threads(2)
    matmul = [matmul_gflops(torch.float32)]
    shutil.rmtree(args.work, ignore_errors=True)
    rows = []
    for folder in sorted(DATA.glob("patient*"))[:args.scans or None]:
        scan = folder / "FLAIR.nii.gz"
        out = args.work / folder.name
        command = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "brainuad", "segment",
                   str(scan), "--out", str(out)] + (["--model", args.model] if args.model else [])
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if result.returncode:
            sys.exit(f"{scan}: segment failed:\n{result.stderr[-2000:]}")
        summary = json.loads((out / "FLAIR" / "summary.json").read_text())
        rows.append({"scan": folder.name, "wall_s": round(wall, 2),
                     "peak_mb": round(int(result.stderr.strip().splitlines()[-1]) / 1024),
                     "lesions": summary["lesions"],
                     "lesion_ml": round(summary["lesion_volume_ml"], 2),
                     "stages": summary["seconds"],
                     "preprocess": summary["preprocess_seconds"]})
    stages = [k for k in rows[0]["stages"] if k != "total"]
    print(f"\n| scan | {' | '.join(stages)} | in-process total | wall (start-up included) | "
          "peak MB | lesions | ml |")
    print("|" + " --- |" * (len(stages) + 6))
    for r in rows:
        print(f"| {r['scan']} | " + " | ".join(f"{r['stages'][k]:.2f}" for k in stages)
              + f" | {r['stages']['total']:.1f} | {r['wall_s']:.1f} | {r['peak_mb']} | "
              f"{r['lesions']} | {r['lesion_ml']} |")
    matmul.append(matmul_gflops(torch.float32))
    walls = [r["wall_s"] for r in rows]
    print("\n| stage | mean (s) | range (s) |\n| --- | --- | --- |")
    for name, values in [(k, [r["stages"][k] for r in rows]) for k in stages] + [
            ("**process wall time, start-up included**", walls)]:
        print(f"| {name} | {sum(values) / len(values):.2f} | {min(values):.2f}-{max(values):.2f} |")
    print(f"| peak resident memory (MB) | {sum(r['peak_mb'] for r in rows) / len(rows):.0f} | "
          f"{min(r['peak_mb'] for r in rows)}-{max(r['peak_mb'] for r in rows)} |")
    steps = list(dict.fromkeys(k for r in rows for k in r["preprocess"]))
    print("\n| inside preprocess | mean (s) | range (s) |\n| --- | --- | --- |")
    for name in steps:
        values = [r["preprocess"].get(name, 0.0) for r in rows]
        print(f"| {name} | {sum(values) / len(values):.2f} | {min(values):.2f}-{max(values):.2f} |")
    print(f"\nwall: mean {sum(walls) / len(walls):.1f} s, max {max(walls):.1f} s; peak memory "
          f"max {max(r['peak_mb'] for r in rows)} MB; fp32 matmul 2048^2 on 2 threads "
          f"{matmul[0]:.0f} GFLOP/s before the scans, {matmul[1]:.0f} after")
    print(json.dumps({"benchmark": "segment", **run_record(vars(args)), "rows": rows,
                      "wall_max_s": max(walls),
                      "wall_mean_s": sum(walls) / len(walls), "matmul_fp32_gflops": matmul}))


if __name__ == "__main__":
    main()

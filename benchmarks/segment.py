"""`brainuad segment` on the 11 raw longitudinal MS FLAIRs of ../shared/data (issues 16, 42):
the seconds of every stage, the process's start-up (from its launch to its first stage: the
interpreter and the imports) and exit (from its last stage's end to the process's end), its
wall time and its peak memory, each scan in a fresh process (as a user runs it), the median of
`--repeat` runs. The CPU differs between sessions, so the run also measures its fp32 matmul
speed (2 threads, 2048^2) before and after the scans, and `--baseline SRC` (the `src` folder of
another checkout, e.g. `git worktree add /tmp/main main`) runs that code on the same scans in
the same run, turn about, for a ratio that the machine's speed does not move.

    python benchmarks/segment.py [--model flair-ms] [--work /tmp/bench-segment] [--scans N]
                                 [--repeat 3] [--baseline /tmp/main/src]

Prints a table per scan, one per stage (mean and range) and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from inference import matmul_gflops  # benchmarks/inference.py
from run_record import run_record  # benchmarks/run_record.py

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mslub_longitudinal_raw"


def run(scan: Path, out: Path, model: str, src: Path | None = None) -> dict:
    """One `brainuad segment` process on `scan`: its figures, start-up and exit included
    (`BRAINUAD_STAMPS`; code without it, e.g. an older baseline, gets them together)."""
    shutil.rmtree(out, ignore_errors=True)
    command = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "brainuad", "segment",
               str(scan), "--out", str(out)] + (["--model", model] if model else [])
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as stamps:
        env = {**os.environ, "BRAINUAD_STAMPS": stamps.name}
        if src is not None:
            env["PYTHONPATH"] = str(src)
        start = time.time()
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        end = time.time()
        marks = dict(line.split() for line in stamps.read().splitlines())
    if result.returncode:
        sys.exit(f"{scan}: segment failed:\n{result.stderr[-2000:]}")
    summary = json.loads((out / "FLAIR" / "summary.json").read_text())
    work = summary["seconds"]["total"]
    outside = end - start - work
    row = {"wall_s": round(end - start, 2), "outside_s": round(outside, 2),
           "peak_mb": round(int(result.stderr.strip().splitlines()[-1]) / 1024),
           "lesions": summary["lesions"], "lesion_ml": round(summary["lesion_volume_ml"], 3),
           "stages": summary["seconds"], "preprocess": summary["preprocess_seconds"]}
    if "work" in marks and "exit" in marks:
        row["startup_s"] = round(float(marks["work"]) - start, 2)
        row["exit_s"] = round(end - float(marks["exit"]), 2)
    return row


def median_row(runs: list[dict]) -> dict:
    """The run of median wall time, with every figure the median over the runs."""
    middle = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
    row = dict(middle)
    for key in ("wall_s", "outside_s", "peak_mb", "startup_s", "exit_s"):
        if key in middle:
            row[key] = round(statistics.median(r[key] for r in runs), 2)
    row["stages"] = {k: round(statistics.median(r["stages"][k] for r in runs), 3)
                     for k in middle["stages"]}
    row["preprocess"] = {k: round(statistics.median(r["preprocess"].get(k, 0.0) for r in runs),
                                  3) for k in middle["preprocess"]}
    row["wall_runs_s"] = [r["wall_s"] for r in runs]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="bundled model or run directory")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-segment"))
    parser.add_argument("--scans", type=int, default=0, help="only the first N scans (0: all)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scan (the median)")
    parser.add_argument("--baseline", type=Path, help="another checkout's src folder, run on "
                                                      "the same scans turn about")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    torch.set_num_threads(2)
    matmul = [matmul_gflops(torch.float32)]
    shutil.rmtree(args.work, ignore_errors=True)
    rows, base = [], []
    for folder in sorted(DATA.glob("patient*"))[:args.scans or None]:
        scan = folder / "FLAIR.nii.gz"
        runs, base_runs = [], []
        for _ in range(args.repeat):
            runs.append(run(scan, args.work / folder.name, args.model))
            if args.baseline:
                base_runs.append(run(scan, args.work / "baseline" / folder.name, args.model,
                                     args.baseline))
        rows.append({"scan": folder.name, **median_row(runs)})
        if base_runs:
            base.append({"scan": folder.name, **median_row(base_runs)})
    stages = [k for k in rows[0]["stages"] if k != "total"]
    print(f"\n| scan | start-up | {' | '.join(stages)} | exit | in-process total | wall | "
          "peak MB | lesions | ml |")
    print("|" + " --- |" * (len(stages) + 8))
    for r in rows:
        print(f"| {r['scan']} | {r.get('startup_s', float('nan')):.2f} | "
              + " | ".join(f"{r['stages'][k]:.2f}" for k in stages)
              + f" | {r.get('exit_s', float('nan')):.2f} | {r['stages']['total']:.1f} | "
              f"{r['wall_s']:.1f} | {r['peak_mb']} | {r['lesions']} | {r['lesion_ml']} |")
    matmul.append(matmul_gflops(torch.float32))
    walls = [r["wall_s"] for r in rows]
    print("\n| stage | mean (s) | range (s) |\n| --- | --- | --- |")
    split = [("start-up (launch to the first stage)", [r["startup_s"] for r in rows])] if all(
        "startup_s" in r for r in rows) else []
    ends = [("exit (last stage to the process's end)", [r["exit_s"] for r in rows])] if all(
        "exit_s" in r for r in rows) else []
    for name, values in split + [(k, [r["stages"][k] for r in rows]) for k in stages] + ends + [
            ("start-up and exit together", [r["outside_s"] for r in rows]),
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
    record = {"benchmark": "segment", **run_record(vars(args)), "rows": rows,
              "wall_max_s": max(walls), "wall_mean_s": sum(walls) / len(walls),
              "matmul_fp32_gflops": matmul}
    if base:
        ratios = [r["wall_s"] / b["wall_s"] for r, b in zip(rows, base, strict=True)]
        print("\n| scan | baseline wall (s) | this wall (s) | this / baseline | baseline start-up "
              "and exit (s) | this (s) | lesions baseline / this | ml baseline / this |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r, b, ratio in zip(rows, base, ratios, strict=True):
            print(f"| {r['scan']} | {b['wall_s']:.2f} | {r['wall_s']:.2f} | {ratio:.3f} | "
                  f"{b['outside_s']:.2f} | {r['outside_s']:.2f} | {b['lesions']} / "
                  f"{r['lesions']} | {b['lesion_ml']} / {r['lesion_ml']} |")
        print(f"\nthis / baseline wall: median {statistics.median(ratios):.3f}, range "
              f"{min(ratios):.3f}-{max(ratios):.3f}; baseline {args.baseline}")
        record |= {"baseline_rows": base, "wall_ratio_median": statistics.median(ratios)}
    print(json.dumps(record))


if __name__ == "__main__":
    main()

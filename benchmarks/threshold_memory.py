"""Peak memory of the threshold step against cohort size (issue 18): it must stay flat.

For each cohort size N, a synthetic cohort of N subjects at 2 mm (85 % healthy: train and val;
15 % lesioned) is made and preprocessed, then `brainuad train --model threshold` runs in a fresh
process under `/usr/bin/time`: no network to fit, so its peak memory is that of the threshold
step (the normative maps summed over the training scans, the scores of the validation scans
streamed into fixed-memory histograms, in fp32; the threshold baseline has no bf16 pass).
Before the histograms, every validation voxel's score was held in memory at once.

    python benchmarks/threshold_memory.py [--sizes 20 100 400] [--work /tmp/bench-thr]

Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from run_record import run_record  # benchmarks/run_record.py

from brainuad.data.synth import SynthConfig, synth_cohort
from brainuad.preprocessing.pipeline import preprocess_manifest


def peak_train(prepared: Path, run: Path) -> tuple[float, float, dict]:
    """Peak resident memory (MB) and seconds of `brainuad train --model threshold`."""
    shutil.rmtree(run, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-m", "brainuad",
                             "train", str(prepared), str(run), "--model", "threshold"],
                            capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    peak_kb = int(result.stderr.strip().splitlines()[-1])
    info = json.loads((run / "threshold.json").read_text())
    return peak_kb / 1024, seconds, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 100, 400])
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-threshold-memory"))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        folder = args.work / f"n{n}"
        cohort = folder / "cohort" / "manifest.csv"
        if not cohort.is_file():
            healthy = round(0.85 * n)
            synth_cohort(folder / "cohort", SynthConfig(n_healthy=healthy,
                                                        n_lesioned=n - healthy, seed=n),
                         workers=args.workers)
        prepared = preprocess_manifest(cohort, folder / "prep", workers=args.workers).path
        peak, seconds, info = peak_train(prepared, folder / "run")
        rows.append({"subjects": n, "calibration_subjects": len(info["subjects"]),
                     "calibration_voxels": info["voxels"], "peak_mb": round(peak, 1),
                     "seconds": round(seconds, 1)})
    print("\n| subjects | calibration scans | calibration voxels | peak memory (MB) | seconds |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['subjects']} | {r['calibration_subjects']} | {r['calibration_voxels']:,} | "
              f"{r['peak_mb']:.0f} | {r['seconds']:.0f} |")
    print("\n" + json.dumps({"benchmark": "threshold_memory", **run_record(vars(args)),
                             "rows": rows}))


if __name__ == "__main__":
    main()

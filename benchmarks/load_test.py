"""Sustained load (issue 15): `brainuad detect --workers 2` over 200 synthetic subjects.

1. A synthetic cohort (2 mm): 20 healthy subjects train a small model (sAE16, 64 px, 1 epoch),
   200 lesioned subjects are detected.
2. One uninterrupted run, the resident memory of the whole process tree (the command and its
   workers) sampled every half second against the subjects done: it must stay flat after the
   first subjects.
3. A second run killed (SIGKILL to every process of it) at three random moments and run again
   each time until it completes: its outputs must equal the uninterrupted run's, byte for
   byte in the voxels, and no temporary file may be left.

    python benchmarks/load_test.py [--subjects 200] [--work /tmp/bench-load] [--seed 0]

Prints the memory curve, the kill times and the comparison, and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from run_record import run_record  # benchmarks/run_record.py


def tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants (MB), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def detect_command(run: Path, prep: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "brainuad", "detect", str(run), str(prep), "--split", "test",
            "--out", str(out), "--workers", "2"]


def done(out: Path) -> int:
    return len(list(out.glob("*/timing.json")))


def uninterrupted(run: Path, prep: Path, out: Path) -> list[tuple[float, int, float]]:
    """(seconds, subjects done, MB) samples of one run to the end."""
    process = subprocess.Popen(detect_command(run, prep, out), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    start, samples = time.perf_counter(), []
    while process.poll() is None:
        samples.append((time.perf_counter() - start, done(out), tree_rss_mb(process.pid)))
        time.sleep(0.5)
    if process.returncode:
        raise SystemExit(f"detect failed with exit code {process.returncode}")
    return samples


def killed_three_times(run: Path, prep: Path, out: Path, total: int, seed: int) -> list[dict]:
    rng, kills = random.Random(seed), []
    for _ in range(3):
        process = subprocess.Popen(detect_command(run, prep, out), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        wait = rng.uniform(3, 25)
        time.sleep(wait)
        os.killpg(process.pid, signal.SIGKILL)  # the command and its workers, mid-write
        process.wait()
        kills.append({"after_s": round(wait, 1), "subjects_done": done(out)})
    subprocess.run(detect_command(run, prep, out), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    assert done(out) == total
    return kills


def compare(a: Path, b: Path) -> dict:
    import nibabel as nib

    files = sorted(p.relative_to(a) for p in a.glob("*/*.nii.gz"))
    differing = [str(f) for f in files
                 if not np.array_equal(np.asarray(nib.load(a / f).dataobj),
                                       np.asarray(nib.load(b / f).dataobj))]
    missing = sorted({str(p.relative_to(a)) for p in a.glob("*/*")}
                     ^ {str(p.relative_to(b)) for p in b.glob("*/*")})
    leftovers = [str(p) for p in b.rglob(".*.partial-*")]
    return {"files": len(files), "differing": differing, "missing": missing,
            "temporaries_left": leftovers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-load"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from brainuad.data.synth import SynthConfig, synth_cohort
    from brainuad.preprocessing.pipeline import preprocess_manifest

    work = args.work
    cohort = work / "cohort" / "manifest.csv"
    if not cohort.is_file():
        synth_cohort(work / "cohort", SynthConfig(n_healthy=20, n_lesioned=args.subjects),
                     workers=2)
    prep = preprocess_manifest(cohort, work / "prep", workers=2).path
    run = work / "run"
    if not (run / "threshold.json").is_file():
        subprocess.run([sys.executable, "-m", "brainuad", "train", str(prep), str(run),
                        "--model", "sae16", "--image-size", "64", "--epochs", "1"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for name in ("straight", "killed"):
        subprocess.run(["rm", "-rf", str(work / name)], check=True)
    samples = uninterrupted(run, prep, work / "straight")
    kills = killed_three_times(run, prep, work / "killed", args.subjects, args.seed)
    result = compare(work / "straight", work / "killed")
    print("\nresident memory of detect --workers 2 (the command and its workers) against "
          "subjects done:\n\n| subjects done | seconds | MB |\n| --- | --- | --- |")
    marks = sorted({min(args.subjects, k) for k in (1, 10, 25, 50, 100, 150, args.subjects)})
    for mark in marks:
        at = [s for s in samples if s[1] >= mark]
        if at:
            peak = max(mb for _, n, mb in samples if n <= mark)
            print(f"| {mark} | {at[0][0]:.0f} | {peak:.0f} |")
    after_first = [mb for _, n, mb in samples if n >= 10]
    steady = {"first_10_peak_mb": round(max(mb for _, n, mb in samples if n < 10), 1),
              "after_10_peak_mb": round(max(after_first), 1) if after_first else None,
              "last_quarter_peak_mb": round(max(mb for _, n, mb in samples
                                                if n >= 0.75 * args.subjects), 1),
              "seconds": round(samples[-1][0], 1)}
    print(f"\nkills: {kills}\ncomparison with the uninterrupted run: {result['files']} NIfTI "
          f"files, differing {len(result['differing'])}, missing or extra "
          f"{len(result['missing'])}, temporaries left {len(result['temporaries_left'])}")
    print(json.dumps({"benchmark": "load_test", **run_record(vars(args)),
                      "subjects": args.subjects, **steady,
                      "kills": kills, **{k: v if isinstance(v, int) else len(v)
                                         for k, v in result.items()}}))


if __name__ == "__main__":
    main()

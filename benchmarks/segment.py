"""`brainuad segment` on the 11 raw longitudinal MS FLAIRs of ../shared/data (issue 16): the
seconds of every stage, the process's wall time from start-up to exit, and its peak memory,
each scan in a fresh process (as a user runs it).

    python benchmarks/segment.py [--model flair-ms] [--work /tmp/bench-segment]

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

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mslub_longitudinal_raw"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="bundled model or run directory")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-segment"))
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA}: the shared data is not there; nothing to measure")
    shutil.rmtree(args.work, ignore_errors=True)
    rows = []
    for folder in sorted(DATA.glob("patient*")):
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
                     "stages": summary["seconds"]})
    stages = [k for k in rows[0]["stages"] if k != "total"]
    print(f"\n| scan | {' | '.join(stages)} | in-process total | wall (start-up included) | "
          "peak MB | lesions | ml |")
    print("|" + " --- |" * (len(stages) + 6))
    for r in rows:
        print(f"| {r['scan']} | " + " | ".join(f"{r['stages'][k]:.2f}" for k in stages)
              + f" | {r['stages']['total']:.1f} | {r['wall_s']:.1f} | {r['peak_mb']} | "
              f"{r['lesions']} | {r['lesion_ml']} |")
    walls = [r["wall_s"] for r in rows]
    print(f"\nwall: mean {sum(walls) / len(walls):.1f} s, max {max(walls):.1f} s; peak memory "
          f"max {max(r['peak_mb'] for r in rows)} MB")
    print(json.dumps({"benchmark": "segment", "rows": rows, "wall_max_s": max(walls),
                      "wall_mean_s": sum(walls) / len(walls)}))


if __name__ == "__main__":
    main()

"""Whole-volume detection: `brainuad detect` on one 182 x 218 x 182 MNI FLAIR, stage by stage.

    python benchmarks/detect_volume.py [--run RUN] [--work /tmp/bench-detect]

The volume is MSLUB patient07's FLAIR (FSL MNI152 1 mm, skull-stripped, from ../shared/data),
preprocessed on its own grid. The model is the run given, or by default AnoVAEGAN at the paper's
256 px and channels with random weights (speed does not depend on the weights; its threshold is
taken on the same volume). `brainuad detect` runs as a user runs it, in a fresh process, every
brain slice; the table gives its wall time (Python start-up included), its peak resident memory,
and the stages it recorded (patient07/timing.json). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
from run_record import run_record  # benchmarks/run_record.py

from brainuad.config import from_dict
from brainuad.detection.calibration import calibrate
from brainuad.detection.cohort import read_timing
from brainuad.models import folder as rundir
from brainuad.models.registry import build_network, model_defaults
from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_manifest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "mslub" / "patient07"


def paper_run(folder: Path, manifest: Path) -> Path:
    """A run directory with the paper's AnoVAEGAN (256 px, 64..256 channels), random weights."""
    cfg = from_dict({"model": {**model_defaults("anovaegan")}})
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    model = build_network(cfg.model)
    rundir.write_config(folder, cfg)
    rundir.save_weights(folder, model.state_dict())
    rundir.write_provenance(folder, manifest)
    # thresholds on the volume below, as training does
    calibrate(folder, manifest, network=model, cfg=cfg)
    rundir.describe_run(folder, cfg).write(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="Run directory (default: paper AnoVAEGAN).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-detect"))
    parser.add_argument("--precision", default="32", help="32 or bf16 (brainuad detect's).")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs ../shared/data")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    raw = args.work / "raw.csv"
    raw.write_text("subject,split,health,flair\n"
                   f"patient07,train,healthy,{SHARED / 'FLAIR.nii.gz'}\n")
    prep = preprocess_manifest(raw, args.work / "prep", PreprocessConfig(register="never")).path
    run = args.run or paper_run(args.work / "run", prep)
    cfg = rundir.read_config(run)
    out = args.work / "pred"
    command = [sys.executable, "-m", "brainuad", "detect", str(run), str(prep),
               "--out", str(out), "--precision", args.precision]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    timing = read_timing(out / "patient07")
    stages = timing["stages"]
    print(f"brainuad detect, MSLUB patient07 FLAIR 182 x 218 x 182, {timing['slices']} brain "
          f"slices, {cfg.model.name} {cfg.model.image_size} px, channels {cfg.model.width}.."
          f"{cfg.model.max_width}, precision {args.precision}, {torch.get_num_threads()} "
          "threads\n")
    print("| stage | seconds |\n| --- | --- |")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| sum of stages | {sum(stages.values()):.2f} |")
    print(f"| process wall time (start-up, imports, model load included) | {wall:.2f} |")
    print(f"\npeak resident memory of the detect process: {peak_mb:.0f} MB")
    print(json.dumps({"benchmark": "detect_volume", **run_record(vars(args)),
                      "model": cfg.model.name,
                      "precision": args.precision,
                      "image_size": cfg.model.image_size, "slices": timing["slices"],
                      "stages": stages, "wall_s": wall, "peak_rss_mb": peak_mb}))


if __name__ == "__main__":
    main()

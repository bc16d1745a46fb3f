"""Retrain the bundled model `flair-ms`, reproduce its figures, and put it into the package.

    python scripts/release_model.py [--out release-flair-ms]

1. `brainuad benchmark configs/models/flair-ms.yaml OUT --split val`: preprocesses the raw
   scans and a synthetic healthy cohort, trains (fits the normative maps on the 9 training
   FLAIRs and 8 of the 10 synthetic ones), takes the label-free percentiles on the held-out scans
   (the 2 other raw FLAIRs, the 2 other synthetic ones)
   and chooses the operating point on the labelled validation set; scores that set (with the
   healthy synthetic scans' flagged volume).
2. The same with `--split test`: MSLUB patient07 and patient19, scored once.
3. Copies the files the run's model.json lists (config, normative maps, thresholds) into
   src/brainuad/weights/flair-ms/ (local paths removed), writes its model.json (what it is, its
   data, licence and card), and the model card's tables to docs/models/flair-ms_results{,-val}.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
from pathlib import Path

import brainuad
from brainuad.commands.benchmark import BenchmarkOptions, run_benchmark
from brainuad.models.folder import ModelInfo, read_info

REPO = Path(__file__).resolve().parents[1]
NAME, VERSION = "flair-ms", "1"
CONFIG = REPO / "configs" / "models" / f"{NAME}.yaml"
TARGET = REPO / "src" / "brainuad" / "weights" / NAME
DESCRIPTION = ("MS lesions on FLAIR: a voxel-wise normative model (z-score) of 9 raw MS FLAIRs "
               "and 8 synthetic healthy ones, operating point chosen on held-out scans with "
               "synthetic lesions; research use, not a clinical device")


def _without_paths(info: dict) -> dict:
    """threshold.json as shipped: scan names stay, the paths of the machine that made it go."""
    points = {key: {k: v for k, v in point.items() if k != "manifest"}
              for key, point in info.get("operating_points", {}).items()}
    return {**info, "operating_points": points}


def release(out: Path) -> None:
    for split in ("val", "test"):
        run_benchmark(CONFIG, out, BenchmarkOptions(split=split))
    run = out / "runs" / NAME
    made = read_info(run)
    if TARGET.exists():
        shutil.rmtree(TARGET)
    TARGET.mkdir(parents=True)
    for name in made.files:
        if name == "threshold.json":
            info = _without_paths(json.loads((run / name).read_text()))
            (TARGET / name).write_text(json.dumps(info, indent=2) + "\n")
        else:
            shutil.copyfile(run / name, TARGET / name)
    provenance = json.loads((run / "provenance.json").read_text())
    ModelInfo(
        name=NAME, version=VERSION, kind=made.kind, modality=made.modality,
        polarity=made.polarity, description=DESCRIPTION, files=made.files,
        training_data="MSLUB longitudinal (Lesjak et al. 2016, Neuroinformatics): 9 raw FLAIRs; "
                      "and 8 synthetic healthy FLAIRs of brainuad synth",
        trained_on=provenance["training_subjects"],
        licence="CC BY 4.0 (the MSLUB data it was derived from; attribution in the card)",
        card=f"docs/models/{NAME}.md",
        extra={"recipe": str(CONFIG.relative_to(REPO)), "brainuad": brainuad.__version__,
               "git_commit": provenance.get("git_commit"),
               "released": datetime.date.today().isoformat()}).write(TARGET)
    docs = REPO / "docs" / "models"
    docs.mkdir(parents=True, exist_ok=True)
    for tag in ("", "-val"):
        shutil.copyfile(out / f"results{tag}.md", docs / f"{NAME}_results{tag}.md")
    size = sum(p.stat().st_size for p in TARGET.iterdir()) / 1e6
    print(f"{NAME} version {VERSION}: {TARGET} ({size:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(f"release-{NAME}"))
    release(parser.parse_args().out)


if __name__ == "__main__":
    main()

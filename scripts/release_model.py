"""Remake the bundled model `flair-ms`, reproduce its validation figures, and put it into the
package.

    python scripts/release_model.py [--out release-flair-ms]

1. `brainuad benchmark configs/models/flair-ms.yaml OUT --split val`: preprocesses the raw and
   the MSLUB scans, makes the labelled validation set (MSLUB patient07 and patient19 with their
   real lesions, 3D FLAIRs of another protocol; the held-out raw 2D FLAIRs with synthetic
   lesions drawn in; a synthetic 1 mm cohort), "trains" the recipe (a tissue-referenced model
   learns nothing: it takes its label-free quantiles on the unlabelled held-out scans), chooses
   its operating point on the validation set and scores it there.
2. Copies the files the run's model.json lists (config, thresholds) into
   src/brainuad/weights/flair-ms/ (local paths removed), writes its model.json (what it is, its
   data, licence and card), and the validation table to docs/models/flair-ms_results-val.md.

Its test figures are leave-one-patient-out (`python scripts/cross_protocol.py`); the independent
test scans are held outside the project.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
from pathlib import Path

import yaml

import brainuad
from brainuad.commands.benchmark import BenchmarkOptions, run_benchmark
from brainuad.models.folder import ModelInfo, read_info

REPO = Path(__file__).resolve().parents[1]
NAME, VERSION, VARIANT = "flair-ms", "6", "model"
CONFIG = REPO / "configs" / "models" / f"{NAME}.yaml"
TARGET = REPO / "src" / "brainuad" / "weights" / NAME
DESCRIPTION = ("MS lesions on FLAIR: each voxel against the scan's own grey matter around it (a "
               "z-score against a level that varies over about 7 mm; "
               "no training, so no other protocol's intensities; lesions at a healthy FLAIR's "
               "normal bright places left out), operating point chosen on "
               "3D and 2D FLAIRs with real and synthetic lesions; research use, not a "
               "clinical device")


def shipped_thresholds(info: dict) -> dict:
    """threshold.json as shipped: only the scorings that have an operating point (the ones
    the bundled config runs), without the training percentile's threshold of another scoring
    or the paths of the machine that made it; scan names stay."""
    points = {key: {k: v for k, v in point.items() if k != "manifest"}
              for key, point in info.get("operating_points", {}).items()}
    return {"version": info["version"], "calibration": info["calibration"],
            "scorings": {key: info["scorings"][key] for key in points},
            "operating_points": points}


def _point_subjects(path: Path) -> list[str]:
    """The validation scans the shipped operating points were chosen on."""
    points = json.loads(path.read_text()).get("operating_points", {})
    return sorted({name for point in points.values() for name in point.get("subjects", [])})


def _uncommitted() -> bool:
    """Whether tracked files differ from the commit (a release made so says it)."""
    said = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                          capture_output=True, text=True, check=False)
    return bool(said.stdout.strip())


def release(out: Path, workers: int = 2) -> None:
    dirty = _uncommitted()  # before the release rewrites the weights' files
    run_benchmark(CONFIG, out, BenchmarkOptions(split="val", workers=workers))
    run = out / "runs" / NAME
    made = read_info(run)
    if TARGET.exists():
        shutil.rmtree(TARGET)
    TARGET.mkdir(parents=True)
    for name in made.files:
        if name == "threshold.json":
            info = shipped_thresholds(json.loads((run / name).read_text()))
            (TARGET / name).write_text(json.dumps(info, indent=2) + "\n")
        elif name == "config.yaml":  # with the detection settings of the variant it was chosen in
            config = yaml.safe_load((run / name).read_text())
            variant = yaml.safe_load(CONFIG.read_text())["variants"][VARIANT]
            config["detect"].update({k: v for k, v in variant.items() if k != "precision"})
            (TARGET / name).write_text(yaml.safe_dump(config, sort_keys=False))
        else:
            shutil.copyfile(run / name, TARGET / name)
    provenance = json.loads((run / "provenance.json").read_text())
    ModelInfo(
        name=NAME, version=VERSION, kind=made.kind, modality=made.modality,
        polarity=made.polarity, description=DESCRIPTION, files=made.files,
        training_data="nothing learnt from other scans; operating point chosen on MSLUB "
                      "patient07 and patient19 (Lesjak et al. 2018) and the MSLUB longitudinal "
                      "set (Lesjak et al. 2016) with synthetic lesions, and synthetic scans",
        # a kind that fits nothing (no weights, no maps) learnt from no scan
        trained_on=provenance["training_subjects"] if {"model.pt", "normative.pt"}
        & set(made.files) else [],
        licence="CC BY 4.0 (the MSLUB data it was derived from; attribution in the card)",
        card=f"docs/models/{NAME}.md",
        extra={"operating_point_on": _point_subjects(TARGET / "threshold.json"),
               "recipe": str(CONFIG.relative_to(REPO)), "brainuad": brainuad.__version__,
               "git_commit": (provenance.get("git_commit") or "")
               + (" with uncommitted changes" if dirty else ""),
               "released": datetime.date.today().isoformat()}).write(TARGET)
    docs = REPO / "docs" / "models"
    docs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "results-val.md", docs / f"{NAME}_results-val.md")
    size = sum(p.stat().st_size for p in TARGET.iterdir()) / 1e6
    print(f"{NAME} version {VERSION}: {TARGET} ({size:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(f"release-{NAME}"))
    parser.add_argument("--workers", type=int, default=2, help="processes for preprocessing")
    args = parser.parse_args()
    release(args.out, args.workers)


if __name__ == "__main__":
    main()

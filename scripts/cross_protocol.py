"""Cross-protocol validation of the FLAIR recipes (issue 22), leave one patient out.

    python scripts/cross_protocol.py [--out cross-protocol] [--models tissue,threshold]

1. `brainuad preprocess` once: the 11 raw 2D FLAIRs of the MSLUB longitudinal set and MSLUB
   patient07 and patient19 (3D FLAIRs of another scanner and protocol), raw-scan path.
2. Two folds of `configs/experiments/mslub_cross.yaml`: in fold `p07` patient19 is a validation
   scan (its real lesions) and patient07 the test; in fold `p19` the other way round. Each fold
   chooses every operating point on its validation set (`--split val`), then scores its left-out
   patient once (`--split test`).
3. `OUT/cross.md`: per recipe, the validation figures of each fold and the left-out patients'
   figures, with the flagged volume outside the lesions (lesions dilated by 2 mm).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from brainuad.commands.benchmark import BenchmarkOptions, run_benchmark
from brainuad.io.files import file_checksum
from brainuad.io.manifest import read_manifest, write_manifest
from brainuad.io.provenance import git_commit
from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_manifest

REPO = Path(__file__).resolve().parents[1]
SCANS = REPO / "configs" / "experiments" / "mslub_recipes.csv"
RECIPES = REPO / "configs" / "experiments" / "mslub_cross.yaml"
PATIENTS = {"p07": "mslub_patient07", "p19": "mslub_patient19"}


def fold(out: Path, prep: Path, test: str, models: list[str] | None) -> dict[str, list[dict]]:
    """One fold: `test` left out, the other patient validates; its val and test rows."""
    folder = out / f"fold-{test}"
    subjects = read_manifest(prep).subjects
    for subject in subjects:
        if subject.subject in PATIENTS.values():
            subject.split = "test" if subject.subject == PATIENTS[test] else "val"
    manifest = write_manifest(folder / "manifest.csv", subjects).path
    config = yaml.safe_load(RECIPES.read_text())
    config.update({"manifest": str(manifest), "prepared": True})
    (folder / "cross.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    rows = {}
    for split in ("val", "test"):
        run_benchmark(folder / "cross.yaml", folder, BenchmarkOptions(models=models, split=split))
        tag = "" if split == "test" else "-val"
        rows[split] = json.loads((folder / f"results{tag}.json").read_text())["benchmark"]
    return rows


def table(folds: dict[str, dict[str, list[dict]]]) -> str:
    head = ("| recipe | variant | val Dice (fold p07 / p19) | val flagged outside, ml max | "
            "left out: Dice p07 / p19 | left out: flagged outside ml p07 / p19 |")
    lines = [head, "|" + " --- |" * 6]
    for a, b in zip(folds["p07"]["val"], folds["p19"]["val"], strict=True):
        test = {name: next(r for r in folds[name]["test"]
                           if (r["model"], r["variant"]) == (a["model"], a["variant"]))
                for name in PATIENTS}
        lines.append(
            f"| {a['model']} | {a['variant']} | {a['dice_mean']:.3f} / {b['dice_mean']:.3f} | "
            f"{a['flagged_outside_ml_max']:.2f} / {b['flagged_outside_ml_max']:.2f} | "
            f"{test['p07']['dice_mean']:.3f} / {test['p19']['dice_mean']:.3f} | "
            f"{test['p07']['flagged_outside_ml_mean']:.2f} / "
            f"{test['p19']['flagged_outside_ml_mean']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("cross-protocol"))
    parser.add_argument("--models", help="comma-separated recipes of mslub_cross.yaml")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    models = args.models.split(",") if args.models else None
    prep = preprocess_manifest(SCANS, args.out / "prep", PreprocessConfig(register="always"),
                               workers=args.workers).path
    folds = {name: fold(args.out, prep, name, models) for name in PATIENTS}
    made = {"git_commit": git_commit(), "recipes_sha256": file_checksum(RECIPES),
            "scans_sha256": file_checksum(SCANS), "models": models or "all"}
    text = table(folds) + "\nMade by: " + ", ".join(f"{k} {v}" for k, v in made.items()) + "\n"
    (args.out / "cross.md").write_text(text)
    (args.out / "cross.json").write_text(json.dumps({"folds": folds, "made_by": made}) + "\n")
    print(text)


if __name__ == "__main__":
    main()

"""`brainuad benchmark`: several models on one cohort, one table, from one YAML file.

The file names a manifest (relative to itself), a synthetic cohort to make (`synth`), or both
(synthetic plus real training: the healthy synthetic subjects join the training set), the
models, the run settings they share and the detection variants to evaluate each model with
(slice mode, residual, score). The benchmark preprocesses the cohort, trains every model (a
finished run directory is reused when its settings are the ones asked for, retrained when they
changed; one cut off is resumed), detects and evaluates every (model, variant) on the `split`,
and writes `results.md`, `results.csv`, `subjects.csv`, `results.json` and, per variant, a
combined Fig. 5 and Fig. 6.

    manifest: cohort.csv
    preprocess: {register: auto}     # or `prepared: true`: the manifest is preprocessed already
    models: [anovaegan, svae, threshold]
    run: {model: {image_size: 128}, train: {epochs: 20}}
    variants: {brain: {slices: brain}, paper: {slices: paper}}

A model entry may also be a recipe: `{name: dae100, model: denoising, run: {...}, variants:
[brain]}` (its own run settings over the shared ones, a subset of the variants).

With `validation: {copies: 2, synth: {...}}` the benchmark makes a labelled validation set (the
manifest's `val` scans with synthetic lesions drawn in, `copies` each, plus a synthetic cohort
whose lesioned and healthy subjects all go to validation) and every (model, variant) takes its
operating point there (`training.choose_operating_point`). `split: val` then scores that
validation set (to choose recipes), `split: test` the manifest's test subjects (once, for the
finalists).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainuad import __version__
from brainuad.config import from_dict, load_yaml, merge
from brainuad.data.lesions import has_real_lesions, lesioned_copies
from brainuad.data.synth import SynthConfig, synth_cohort
from brainuad.detection.calibration import calibrate, choose_operating_point
from brainuad.detection.cohort import DetectOptions, detect_manifest
from brainuad.errors import BrainUADError
from brainuad.evaluation.evaluate import evaluate
from brainuad.io.files import file_checksum, write_csv, write_text
from brainuad.io.manifest import Manifest, Subject, read_manifest, write_manifest
from brainuad.io.provenance import git_commit
from brainuad.models.registry import model_defaults, name_defaults
from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_manifest
from brainuad.reporting import figures, tables
from brainuad.training.reuse import train_or_reuse

#: Settings of `--quick`: a smoke check of the whole path in minutes.
QUICK = {"model": {"image_size": 64}, "train": {"epochs": 2}}
VARIANT_KEYS = ("slices", "residual", "score", "precision", "median_size", "seed_margin",
                "min_component", "reference_mm", "reference_passes", "normal_sites")
RECIPE_KEYS = ("name", "model", "run", "variants")


@dataclass
class Recipe:
    """One row group of the table: a model name of the registry, trained with the shared run
    settings and its own on top, evaluated with some (default: all) of the variants."""

    name: str
    model: str
    run: dict[str, Any] = field(default_factory=dict)
    variants: list[str] | None = None


@dataclass
class BenchmarkConfig:
    manifest: Path | None  # None: the cohort is synthesised (`synth`)
    recipes: list[Recipe]
    run: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, str]] = field(default_factory=lambda: {"brain": {}})
    preprocess: dict[str, Any] = field(default_factory=dict)
    prepared: bool = False  # the manifest is a `brainuad preprocess` output: used as it is
    split: str = "test"
    synth: dict[str, Any] | None = None  # SynthConfig values
    validation: dict[str, Any] | None = None  # {copies: n, synth: SynthConfig values}

    @property
    def models(self) -> list[str]:
        return [r.name for r in self.recipes]


def _recipe(entry: Any, path: Path, variants: dict) -> Recipe:
    if isinstance(entry, str):
        model_defaults(entry)
        return Recipe(entry, entry)
    if not isinstance(entry, dict) or set(entry) - set(RECIPE_KEYS) or "model" not in entry:
        raise BrainUADError(f"{path}: a model entry is a name or a mapping with `model` and "
                            f"optional {', '.join(k for k in RECIPE_KEYS if k != 'model')}; "
                            f"got {entry!r}")
    model_defaults(entry["model"])
    unknown = sorted(set(entry.get("variants") or []) - set(variants))
    if unknown:
        raise BrainUADError(f"{path}: recipe {entry.get('name')!r}: unknown variant(s) "
                            f"{', '.join(unknown)}")
    return Recipe(str(entry.get("name", entry["model"])), entry["model"], entry.get("run") or {},
                  entry.get("variants"))


def _synth_values(values: Any, path: Path, what: str) -> dict[str, Any]:
    fields = set(SynthConfig.__dataclass_fields__)
    if not isinstance(values, dict) or set(values) - fields:
        raise BrainUADError(f"{path}: `{what}` takes {', '.join(sorted(fields))}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def read_benchmark(path: str | Path) -> BenchmarkConfig:
    path = Path(path)
    data = load_yaml(path)
    known = {"manifest", "synth", "models", "run", "variants", "preprocess", "prepared", "split",
             "validation"}
    unknown = sorted(set(data) - known)
    if unknown or not ("manifest" in data or "synth" in data) or not data.get("models"):
        raise BrainUADError(f"{path}: a benchmark needs `models` and a `manifest`, a `synth` "
                            f"cohort or both; unknown key(s): {', '.join(unknown) or 'none'}")
    variants = data.get("variants") or {"brain": {}}
    for name, variant in variants.items():
        bad = sorted(set(variant or {}) - set(VARIANT_KEYS))
        if bad:
            raise BrainUADError(f"{path}: variant {name!r}: unknown key(s) {', '.join(bad)}; "
                                f"known: {', '.join(VARIANT_KEYS)}")
    recipes = [_recipe(entry, path, variants) for entry in data["models"]]
    names = [r.name for r in recipes]
    if len(set(names)) != len(names):
        raise BrainUADError(f"{path}: recipe names must differ ({', '.join(names)})")
    synth = _synth_values(data["synth"], path, "synth") if "synth" in data else None
    validation = data.get("validation")
    if validation is not None:
        if not isinstance(validation, dict) or set(validation) - {"copies", "synth"}:
            raise BrainUADError(f"{path}: `validation` takes copies and synth")
        validation = {"copies": int(validation.get("copies", 2)),
                      "synth": _synth_values(validation["synth"], path, "validation: synth")
                      if validation.get("synth") else None}
    split = data.get("split", "test")
    if split == "val" and validation is None:
        raise BrainUADError(f"{path}: `split: val` scores the labelled validation set; add a "
                            "`validation` section")
    manifest = Path(data["manifest"]) if "manifest" in data else None
    if manifest is not None and not manifest.is_absolute():
        manifest = path.parent / manifest
    return BenchmarkConfig(manifest, recipes, data.get("run") or {},
                           {k: v or {} for k, v in variants.items()},
                           data.get("preprocess") or {}, bool(data.get("prepared", False)), split,
                           synth, validation)


def _synthetic(folder: Path, cfg: SynthConfig, workers: int) -> Path:
    """A synthetic cohort's manifest: the one in `folder` if it was made with these settings
    (`synth.json`), else made anew."""
    settings = json.loads(json.dumps(dataclasses.asdict(cfg)))
    record = folder / "synth.json"
    if (folder / "manifest.csv").is_file() and record.is_file() and json.loads(
            record.read_text()) == settings:
        return folder / "manifest.csv"
    shutil.rmtree(folder, ignore_errors=True)
    path = synth_cohort(folder, cfg, workers=workers).path
    write_text(record, json.dumps(settings, indent=2) + "\n")
    return path


def _validation_set(bench: BenchmarkConfig, prep: Manifest, out: Path,
                    preprocess: PreprocessConfig, workers: int, say: Callable) -> Path:
    """The labelled validation set, every subject in split `val`: the manifest's `val` patients
    with labelled lesions as they are, lesioned copies of its other `val` scans, and the
    subjects of a synthetic cohort; its manifest."""
    folder = out / "validation"
    say(f"validation set -> {folder}")
    val = prep.select(split="val")
    subjects: list[Subject] = [s for s in val if has_real_lesions(s)]
    if len(subjects) < len(val):
        subjects += lesioned_copies(prep.path, folder / "real", "val",
                                    bench.validation["copies"]).subjects
    if bench.validation["synth"]:
        cohort = _synthetic(folder / "synth", SynthConfig(**bench.validation["synth"]),
                            workers)
        # through the raw-scan path (N4, registration), as a user's scan goes: left on the
        # template grid without N4, their bias field alone made the normative model flag
        # 70-540 ml of a healthy synthetic brain (9-11 ml with N4)
        raw_path = dataclasses.replace(preprocess, register="always")
        made = preprocess_manifest(cohort, folder / "synth-prep", raw_path, workers=workers)
        for subject in made.subjects:  # named apart from any synthetic training subject
            subject.subject, subject.split = f"val-{subject.subject}", "val"
        subjects += made.subjects
    if not subjects:
        raise BrainUADError(f"{bench.manifest}: the validation set is empty: the manifest has "
                            "no `val` scans and `validation` no `synth` cohort")
    return write_manifest(folder / "manifest.csv", subjects).path


@dataclass(frozen=True)
class BenchmarkOptions:
    """A subset of the file's `models`; `quick` (64 px, 2 epochs) or other `epochs`; `workers`
    processes for preprocessing; `split` (val or test) instead of the file's."""

    models: list[str] | None = None
    quick: bool = False
    epochs: int | None = None
    workers: int = 1
    split: str | None = None


def run_benchmark(config_path: str | Path, out: str | Path,
                  options: BenchmarkOptions | None = None,
                  say: Callable[[str], None] = print) -> list[dict]:
    """Preprocess the cohort, train (or reuse) every recipe, detect and evaluate each with
    every variant on the split; write the tables and figures into `out`."""
    options = options or BenchmarkOptions()
    models, workers, split = options.models, options.workers, options.split
    bench = read_benchmark(config_path)
    if split is not None:
        if split not in ("val", "test") or (split == "val" and bench.validation is None):
            raise BrainUADError(f"--split {split!r}: test, or val with a `validation` section")
        bench.split = split
    out = Path(out)
    unknown = sorted(set(models or []) - set(bench.models))
    if unknown:
        raise BrainUADError(f"{config_path}: no model(s) {', '.join(unknown)} "
                            f"(the file has {', '.join(bench.models)})")
    chosen = [r for r in bench.recipes if models is None or r.name in models]
    shared = merge(bench.run, QUICK) if options.quick else bench.run
    preprocess = PreprocessConfig(**bench.preprocess)
    synthetic = None
    if bench.synth is not None:
        say(f"synth -> {out / 'cohort'}")
        cohort = _synthetic(out / "cohort", SynthConfig(**bench.synth), workers)
        folder = out / ("prep" if bench.manifest is None else "prep-synth")
        synthetic = preprocess_manifest(cohort, folder, preprocess, workers=workers)
        prepared = synthetic
    if bench.manifest is not None:
        if bench.prepared:
            prepared = read_manifest(bench.manifest)
        else:
            say(f"preprocess {bench.manifest} -> {out / 'prep'}")
            prepared = preprocess_manifest(bench.manifest, out / "prep", preprocess,
                                           workers=workers)
    prep = prepared.path
    if synthetic is not None and bench.manifest is not None:
        # synthetic plus real: the healthy synthetic subjects train too
        extra = [s for s in synthetic.subjects if s.health == "healthy" and s.split != "test"]
        prep = write_manifest(out / "prep-combined.csv", prepared.subjects + extra).path
    validation = (_validation_set(bench, prepared, out, preprocess, workers, say)
                  if bench.validation is not None else None)
    scored = validation if bench.split == "val" else prep
    rows, per_subject, examples, histograms, thresholds = [], [], {}, {}, {}
    for recipe in chosen:
        values = merge(merge(name_defaults(recipe.model), shared), recipe.run)
        if options.epochs is not None:
            values = merge(values, {"train": {"epochs": options.epochs}})
        cfg = from_dict(values, f"{config_path} [{recipe.name}]")
        run = out / "runs" / recipe.name
        say(f"train {recipe.name} -> {run}")
        train_or_reuse(prep, run, cfg, say)
        variants = {k: v for k, v in bench.variants.items()
                    if recipe.variants is None or k in recipe.variants}
        settings = [cfg.detect.replaced(**{k: v for k, v in variant.items() if k != "precision"})
                    for variant in variants.values()]
        calibrate(run, prep, settings=settings)
        if validation is not None:
            choose_operating_point(run, validation, settings)
        for variant, detect in variants.items():
            say(f"detect and evaluate {recipe.name} ({variant})")
            for old in (f"pred-{bench.split}-{variant}", f"eval-{bench.split}-{variant}"):
                shutil.rmtree(run / old, ignore_errors=True)  # never a stale result
            pred = detect_manifest(run, scored, run / f"pred-{bench.split}-{variant}",
                                   DetectOptions(split=bench.split, scoring=detect))
            result = evaluate(pred, scored, run / f"eval-{bench.split}-{variant}",
                              split=bench.split)
            rows.append({**result.summary, "model": recipe.name, "variant": variant,
                         "architecture": result.summary.get("model")})
            per_subject += [{"model": recipe.name, "variant": variant, **r}
                            for r in result.rows]
            examples.setdefault(variant, {})[recipe.name] = result.examples
            histograms.setdefault(variant, {})[recipe.name] = result.histogram
            thresholds.setdefault(variant, {})[recipe.name] = result.summary.get("threshold")
    tag = "" if bench.split == "test" else f"_{bench.split}"
    for variant in examples:
        figures.figure_examples(examples[variant], out / f"fig5_{variant}{tag}.png")
        figures.figure_histograms(histograms[variant], out / f"fig6_{variant}{tag}.png",
                                 thresholds=thresholds[variant])
    made = {"config": str(config_path), "config_sha256": file_checksum(Path(config_path)),
            "models": [r.name for r in chosen], "git_commit": git_commit(),
            "brainuad": __version__}
    write_results(rows, per_subject, out, bench.split, made)
    say("\n" + tables.benchmark_table(rows))
    return rows


def write_results(rows: list[dict], per_subject: list[dict], out: Path,
                  split: str = "test", made: dict | None = None) -> None:
    """results.md (the table, then one row per subject, then what made it), results.csv (one
    row per model and variant, means and sds), subjects.csv and results.json (one line, with
    `made_by`: the config, its hash, the git commit); a `val` benchmark's files are named
    results-val.md and so on, so it never overwrites the test's."""
    tag = "" if split == "test" else f"-{split}"
    made = made or {}
    footer = ("\nMade by: " + ", ".join(f"{k} {v}" for k, v in made.items()) + "\n"
              if made else "")
    write_text(out / f"results{tag}.md", tables.benchmark_table(rows) + "\nPer subject:\n\n"
               + tables.subject_table(per_subject) + footer)
    write_csv(out / f"subjects{tag}.csv", per_subject)
    flat = []
    for row in rows:
        entry = {}
        for key, value in row.items():
            if isinstance(value, dict):  # {"mean": m, "sd": s} -> key_mean, key_sd
                entry |= {f"{key}_{part}": v for part, v in value.items()}
            else:
                entry[key] = value
        flat.append(entry)
    write_csv(out / f"results{tag}.csv", flat)
    write_text(out / f"results{tag}.json", json.dumps({"benchmark": flat, "made_by": made})
               + "\n")

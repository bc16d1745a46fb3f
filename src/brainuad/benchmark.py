"""`brainuad benchmark`: several models on one cohort, one table, from one YAML file.

The file names a manifest (relative to itself), a synthetic cohort to make (`synth`), or both
(synthetic plus real training: the healthy synthetic subjects join the training set), the
models, the run settings they share and the detection variants to evaluate each model with
(slice mode, residual). The benchmark preprocesses the cohort, trains every model (a run
directory that already finished is reused, one cut off is resumed), detects and evaluates every
(model, variant) on the test split, and writes `results.md`, `results.csv`, `subjects.csv`,
`results.json` and, per variant, a combined Fig. 5 and Fig. 6.

    manifest: cohort.csv
    preprocess: {register: auto}
    models: [anovaegan, svae, threshold]
    run: {model: {image_size: 128}, train: {epochs: 20}}
    variants: {brain: {slices: brain}, paper: {slices: paper}}
"""

from __future__ import annotations

import csv
import io as _io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brainuad import report, rundir
from brainuad.config import from_dict, load_yaml, merge
from brainuad.detect import detect_manifest
from brainuad.errors import BrainUADError
from brainuad.evaluate import evaluate
from brainuad.io import write_text
from brainuad.manifest import write_manifest
from brainuad.models.registry import model_defaults, name_defaults
from brainuad.preprocess import PreprocessConfig, preprocess_manifest
from brainuad.synth import SynthConfig, synth_cohort
from brainuad.training import calibrate, train

#: Settings of `--quick`: a smoke check of the whole path in minutes.
QUICK = {"model": {"image_size": 64}, "train": {"epochs": 2}}
VARIANT_KEYS = ("slices", "residual", "score", "precision")


@dataclass
class BenchmarkConfig:
    manifest: Path | None  # None: the cohort is synthesised (`synth`)
    models: list[str]
    run: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, dict[str, str]] = field(default_factory=lambda: {"brain": {}})
    preprocess: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    synth: dict[str, Any] | None = None  # SynthConfig values


def read_benchmark(path: str | Path) -> BenchmarkConfig:
    path = Path(path)
    data = load_yaml(path)
    known = {"manifest", "synth", "models", "run", "variants", "preprocess", "split"}
    unknown = sorted(set(data) - known)
    if unknown or not ("manifest" in data or "synth" in data) or not data.get("models"):
        raise BrainUADError(f"{path}: a benchmark needs `models` and a `manifest`, a `synth` "
                            f"cohort or both; unknown key(s): {', '.join(unknown) or 'none'}")
    for name in data["models"]:
        model_defaults(name)
    variants = data.get("variants") or {"brain": {}}
    for name, variant in variants.items():
        bad = sorted(set(variant or {}) - set(VARIANT_KEYS))
        if bad:
            raise BrainUADError(f"{path}: variant {name!r}: unknown key(s) {', '.join(bad)}; "
                                f"known: {', '.join(VARIANT_KEYS)}")
    synth = data.get("synth")
    if synth is not None:
        fields = set(SynthConfig.__dataclass_fields__)
        if not isinstance(synth, dict) or set(synth) - fields:
            raise BrainUADError(f"{path}: `synth` takes {', '.join(sorted(fields))}")
    manifest = Path(data["manifest"]) if "manifest" in data else None
    if manifest is not None and not manifest.is_absolute():
        manifest = path.parent / manifest
    return BenchmarkConfig(manifest, list(data["models"]), data.get("run") or {},
                           {k: v or {} for k, v in variants.items()},
                           data.get("preprocess") or {}, data.get("split", "test"),
                           synth)


def _train_or_reuse(prep: Path, run: Path, cfg, progress: Callable) -> None:
    """Train into `run`, reuse it when finished, resume it when cut off after a checkpoint."""
    if (run / rundir.THRESHOLD).is_file():
        return
    if (run / rundir.LAST).is_file():
        train(prep, run, resume=True, progress=progress("threshold"))
        return
    if run.exists():
        shutil.rmtree(run)  # cut off before its first checkpoint: start again
    train(prep, run, cfg, progress=progress("threshold"))


def run_benchmark(config_path: str | Path, out: str | Path, models: list[str] | None = None,
                  quick: bool = False, epochs: int | None = None, workers: int = 1,
                  say: Callable[[str], None] = print,
                  progress: Callable[[str], Callable] | None = None) -> list[dict]:
    bench = read_benchmark(config_path)
    out = Path(out)
    progress = progress or (lambda desc: None)
    chosen = models or bench.models
    shared = merge(bench.run, QUICK) if quick else bench.run
    if epochs is not None:
        shared = merge(shared, {"train": {"epochs": epochs}})
    preprocess = PreprocessConfig(**bench.preprocess)
    synthetic = None
    if bench.synth is not None:
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in bench.synth.items()}
        say(f"synth -> {out / 'cohort'}")
        cohort = out / "cohort" / "manifest.csv"
        cohort = cohort if cohort.is_file() else synth_cohort(
            out / "cohort", SynthConfig(**settings), workers=workers,
            progress=progress("synth")).path
        folder = out / ("prep" if bench.manifest is None else "prep-synth")
        synthetic = preprocess_manifest(cohort, folder, preprocess, workers=workers,
                                        progress=progress("preprocess"))
        prep = synthetic.path
    if bench.manifest is not None:
        say(f"preprocess {bench.manifest} -> {out / 'prep'}")
        real = preprocess_manifest(bench.manifest, out / "prep", preprocess, workers=workers,
                                   progress=progress("preprocess"))
        prep = real.path
        if synthetic is not None:  # synthetic plus real: the healthy synthetic subjects train too
            extra = [s for s in synthetic.subjects if s.health == "healthy" and s.split != "test"]
            prep = write_manifest(out / "prep-combined.csv", real.subjects + extra).path
    rows, per_subject, examples, histograms, thresholds = [], [], {}, {}, {}
    for name in chosen:
        cfg = from_dict(merge(name_defaults(name), shared), f"{config_path} [{name}]")
        run = out / "runs" / name
        say(f"train {name} -> {run}")
        _train_or_reuse(prep, run, cfg, progress)
        calibrate(run, prep, progress=progress("calibrate"),  # each variant's scoring, once
                  settings=[cfg.detect.replaced(**{k: v for k, v in variant.items()
                                                   if k != "precision"})
                            for variant in bench.variants.values()])
        for variant, settings in bench.variants.items():
            say(f"detect and evaluate {name} ({variant})")
            pred = detect_manifest(run, prep, run / f"pred-{variant}", split=bench.split,
                                   progress=progress("detect"), **settings)
            result = evaluate(pred, prep, run / f"eval-{variant}", progress=progress("evaluate"))
            rows.append({"model": name, "variant": variant, **result.summary})
            per_subject += [{"model": name, "variant": variant, **r} for r in result.rows]
            examples.setdefault(variant, {})[name] = result.examples
            histograms.setdefault(variant, {})[name] = result.histogram
            thresholds.setdefault(variant, {})[name] = result.summary.get("threshold")
    for variant in examples:
        report.figure_examples(examples[variant], out / f"fig5_{variant}.png")
        report.figure_histograms(histograms[variant], out / f"fig6_{variant}.png",
                                 thresholds=thresholds[variant])
    write_results(rows, per_subject, out)
    say("\n" + report.benchmark_table(rows))
    return rows


def write_results(rows: list[dict], per_subject: list[dict], out: Path) -> None:
    """results.md (the table, then one row per subject), results.csv (one row per model and
    variant, means and sds), subjects.csv and results.json (one line)."""
    write_text(out / "results.md", report.benchmark_table(rows) + "\nPer subject:\n\n"
               + report.subject_table(per_subject))
    write_text(out / "subjects.csv", _csv(per_subject))
    flat = []
    for row in rows:
        entry = {}
        for key, value in row.items():
            if isinstance(value, dict) and {"mean", "sd"} <= set(value):
                entry[f"{key}_mean"], entry[f"{key}_sd"] = value["mean"], value["sd"]
            else:
                entry[key] = value
        flat.append(entry)
    write_text(out / "results.csv", _csv(flat))
    write_text(out / "results.json", json.dumps({"benchmark": flat}) + "\n")


def _csv(rows: list[dict]) -> str:
    buffer = _io.StringIO()
    fields = list(dict.fromkeys(k for entry in rows for k in entry))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()

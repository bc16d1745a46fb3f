import json

import pytest
import yaml
from typer.testing import CliRunner

from brainuad.commands.cli import app
from conftest import TINY_MODEL, tiny_config

runner = CliRunner()


@pytest.mark.slow  # about 17 s: preprocess, train, detect and evaluate twice
def test_benchmark_command_end_to_end(tmp_path, cohort):
    config = tmp_path / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "manifest": str(cohort.relative_to(tmp_path)),  # relative to the YAML file
        "preprocess": {"register": "never"},
        "models": ["sae16", "threshold", "svae"],
        "run": {"model": TINY_MODEL, "train": {"epochs": 1, "batch_size": 4}},
        "variants": {"brain": {}, "paper_hyper": {"slices": "paper", "residual": "hyperintense"}},
    }))
    out = tmp_path / "bench out"
    result = runner.invoke(app, ["benchmark", str(config), str(out), "--models",
                                 "sae16,threshold"])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["benchmark"]
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("sae16", "brain"), ("sae16", "paper_hyper"),
        ("threshold", "brain"), ("threshold", "paper_hyper")]
    for row in rows:
        assert 0 <= row["dice_mean"] <= 1 and 0 <= row["auroc_mean"] <= 1
        assert {"dice_fpr1_mean", "dice_fpr5_mean", "dice_fpr10_mean"} <= set(row)
    assert rows[1]["slices"] == "paper" and rows[1]["residual"] == "hyperintense"
    table = (out / "results.md").read_text()
    summary, subjects = table.split("Per subject:")
    assert "Dice @ 5 % FPR" in summary and summary.count("| sae16 |") == 2
    assert subjects.count("| sae16 |") == 2 * 2  # two variants x two test subjects
    assert len((out / "results.csv").read_text().splitlines()) == 5
    assert len((out / "subjects.csv").read_text().splitlines()) == 1 + 4 * 2
    for name in ("fig5_brain.png", "fig6_brain.png", "fig5_paper_hyper.png"):
        assert (out / name).stat().st_size > 0
    assert not (out / "runs" / "svae").exists()  # not requested

    # a second call reuses the finished runs (no retraining) and gives the same figures (the
    # detections are made again, so only the seconds differ)
    weights = (out / "runs" / "sae16" / "model.pt").stat().st_mtime_ns
    again = runner.invoke(app, ["benchmark", str(config), str(out), "--models",
                                "sae16,threshold"])
    assert again.exit_code == 0, again.output
    assert (out / "runs" / "sae16" / "model.pt").stat().st_mtime_ns == weights

    def figures(rows):
        return [{k: v for k, v in r.items() if not k.startswith("seconds")} for r in rows]

    assert figures(json.loads((out / "results.json").read_text())["benchmark"]) == figures(rows)


def test_benchmark_config_errors_name_the_file(tmp_path):
    config = tmp_path / "bench.yaml"
    config.write_text("manifest: x.csv\nmodels: [svae, unet]\n")
    result = runner.invoke(app, ["benchmark", str(config), str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "model 'unet'" in result.output and "Traceback" not in result.output
    config.write_text("models: [svae]\n")
    result = runner.invoke(app, ["benchmark", str(config), str(tmp_path / "o")])
    assert str(config) in result.output and "manifest" in result.output


def test_benchmark_can_synthesise_its_cohort(tmp_path):
    from brainuad.commands.benchmark import read_benchmark

    config = tmp_path / "zoo.yaml"
    config.write_text("synth: {n_healthy: 2, n_lesioned: 1, lesions: [1, 2]}\nmodels: [svae]\n")
    bench = read_benchmark(config)
    assert bench.manifest is None and bench.synth["n_healthy"] == 2
    config.write_text("synth: {n_healthy: 2, colour: red}\nmodels: [svae]\n")
    result = runner.invoke(app, ["benchmark", str(config), str(tmp_path / "o")])
    assert result.exit_code == 1 and "`synth` takes" in result.output
    config.write_text("models: [svae]\n")
    result = runner.invoke(app, ["benchmark", str(config), str(tmp_path / "o")])
    assert result.exit_code == 1 and "a `manifest`, a `synth` cohort or both" in result.output


@pytest.mark.slow  # synthesises two subjects: about 15 s
def test_synthetic_plus_real_training(tmp_path, cohort):
    config = tmp_path / "both.yaml"
    config.write_text(yaml.safe_dump({
        "manifest": str(cohort), "synth": {"n_healthy": 2, "n_lesioned": 1, "seed": 3},
        "preprocess": {"register": "never"},  # the toy brains are no brains to register
        "models": ["threshold"], "run": {"model": TINY_MODEL}}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["benchmark", str(config), str(out)])
    assert result.exit_code == 0, result.output
    from brainuad.io.manifest import read_manifest
    from brainuad.models import folder as rundir

    synthetic = read_manifest(out / "prep-synth" / "manifest.csv")
    trained_on = rundir.read_provenance(out / "runs" / "threshold")["training_subjects"]
    real_train = [s.subject for s in read_manifest(out / "prep" / "manifest.csv").subjects
                  if s.split == "train"]
    synth_train = [s.subject for s in synthetic.subjects if s.split == "train"]
    assert synth_train and trained_on == real_train + synth_train
    tested = json.loads((out / "results.json").read_text())["benchmark"][0]["subjects"]
    assert tested == 2  # the real test subjects only: the lesioned synthetic one is left out


def test_benchmark_retrains_a_run_whose_settings_changed(prepared, tmp_path):
    """A `--quick` run left in the folder is not reported as the full one (the check that
    `benchmark` and `demo` share); a setting its kind does not use changes nothing."""
    from brainuad.models import folder as rundir
    from brainuad.training.reuse import train_or_reuse

    run, said = tmp_path / "run", []
    quick, full = tiny_config("sae16", epochs=1), tiny_config("sae16", epochs=2)
    train_or_reuse(prepared, run, quick, said.append)
    first = (run / "config.yaml").stat().st_mtime_ns
    train_or_reuse(prepared, run, quick, said.append)
    assert (run / "config.yaml").stat().st_mtime_ns == first and not said  # reused
    train_or_reuse(prepared, run, full, said.append)
    assert "train.epochs" in said[0]  # retrained, and said why
    assert rundir.read_config(run).train.epochs == 2
    other = prepared.with_name("other.csv")
    other.write_text(prepared.read_text())
    train_or_reuse(other, run, full, said.append)
    assert "training manifest" in said[-1]
    threshold, said = tmp_path / "threshold", []
    train_or_reuse(prepared, threshold, tiny_config("threshold", epochs=1), said.append)
    train_or_reuse(prepared, threshold, tiny_config("threshold", epochs=2), said.append)
    assert not said  # epochs mean nothing for the threshold


@pytest.mark.slow  # a synthetic cohort, its validation set, two recipes: about 40 s
def test_benchmark_recipes_on_a_labelled_validation_set(tmp_path):
    config = tmp_path / "val.yaml"
    config.write_text(yaml.safe_dump({
        "synth": {"n_healthy": 5, "n_lesioned": 1, "seed": 2},
        "validation": {"copies": 2, "synth": {"n_healthy": 1, "n_lesioned": 1, "seed": 9}},
        "split": "val",
        "models": [{"name": "intensity", "model": "threshold", "variants": ["brain"]},
                   {"name": "normative", "model": "normative", "variants": ["z"]}],
        "run": {"model": TINY_MODEL},
        "variants": {"brain": {}, "z": {"score": "normative", "residual": "positive"}}}))
    out = tmp_path / "out"
    result = runner.invoke(app, ["benchmark", str(config), str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results-val.json").read_text())["benchmark"]
    assert [(r["model"], r["variant"]) for r in rows] == [("intensity", "brain"),
                                                           ("normative", "z")]
    assert not (out / "results.json").exists()  # the test set was not scored
    from brainuad.io.manifest import read_manifest

    validation = read_manifest(out / "validation" / "manifest.csv")
    assert {s.split for s in validation.subjects} == {"val"}
    # 2 lesioned copies of the one real val scan, the synthetic lesioned and healthy subjects
    assert len(validation.subjects) == 4 and all(s.label for s in validation.subjects)
    for row in rows:
        assert row["split"] == "val" and row["subjects"] == 3 and row["healthy_subjects"] == 1
        assert 0 < row["dataset_best_dice"] <= 1 and row["healthy_flagged_ml_mean"] >= 0
        detect = json.loads((out / "runs" / row["model"] / f"pred-val-{row['variant']}"
                             / "detect.json").read_text())
        assert "validation operating point" in detect["rule"]
    # then the finalists on the test split, once, with the operating points chosen above
    result = runner.invoke(app, ["benchmark", str(config), str(out), "--split", "test"])
    assert result.exit_code == 0, result.output
    tested = json.loads((out / "results.json").read_text())["benchmark"]
    assert [r["split"] for r in tested] == ["test", "test"] and tested[0]["subjects"] == 1

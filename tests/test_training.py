import csv
import pickle

import pytest
import torch
from typer.testing import CliRunner

from brainuad.commands.cli import app
from brainuad.config import TrainConfig
from brainuad.errors import BrainUADError
from brainuad.models import folder as rundir
from brainuad.training.train import train
from conftest import PicklePayload, tiny_config


def _weights(run):
    return rundir.load_weights(run)


def test_one_step_changes_both_networks(prepared, tmp_path):
    from brainuad.models.registry import kind_of

    cfg = tiny_config()
    module = kind_of(cfg.model.name).module()(cfg.to_dict())
    before_g = {k: v.clone() for k, v in module.model.state_dict().items()}
    before_d = {k: v.clone() for k, v in module.discriminator.state_dict().items()}
    import lightning as L

    from brainuad.data.dataset import SliceDataset
    from brainuad.io.manifest import read_manifest

    data = SliceDataset(read_manifest(prepared).select(split="train"), "flair", 32)
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, loader)
    changed_g = [k for k, v in module.model.state_dict().items()
                 if v.is_floating_point() and not torch.equal(v, before_g[k])]
    changed_d = [k for k, v in module.discriminator.state_dict().items()
                 if v.is_floating_point() and not torch.equal(v, before_d[k])]
    assert any(k.startswith("encoder") for k in changed_g)
    assert any(k.startswith("decoder") for k in changed_g)
    assert any(k.startswith("features") for k in changed_d)


def test_run_directory_and_threshold(prepared, tmp_path):
    run = train(prepared, tmp_path / "run", tiny_config())
    for name in ("model.json", "config.yaml", "model.pt", "threshold.json", "provenance.json",
                 "checkpoints/last.ckpt", "checkpoints/best.ckpt", "log/metrics.csv"):
        assert (run / name).is_file(), name
    assert rundir.read_threshold_info(run)["threshold"] > 0
    assert rundir.read_config(run).model.image_size == 32
    with pytest.raises(BrainUADError, match="already holds a run"):
        train(prepared, run, tiny_config())


def test_resume_gives_the_same_weights(prepared, tmp_path):
    straight = train(prepared, tmp_path / "straight", tiny_config(epochs=2))
    part = train(prepared, tmp_path / "part", tiny_config(epochs=1))
    train(prepared, part, resume=True, epochs=2)
    a, b = _weights(straight), _weights(part)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_pickled_object_checkpoint_is_refused(prepared, tmp_path):
    run = train(prepared, tmp_path / "run", tiny_config("svae"))
    marker = tmp_path / "pwned"
    with open(run / "model.pt", "wb") as handle:
        pickle.dump({"weights": PicklePayload(str(marker))}, handle)
    with pytest.raises(BrainUADError, match="refused to load"):
        rundir.load_weights(run)
    assert not marker.exists()


def test_cli_end_to_end(prepared, tmp_path):
    runner = CliRunner()
    config = tmp_path / "tiny.yaml"
    config.write_text("model: {image_size: 32, width: 4, max_width: 8}\n"
                      "train: {epochs: 1, batch_size: 4}\n")
    for model in ("anovaegan", "threshold"):
        run = tmp_path / model
        result = runner.invoke(app, ["train", str(prepared), str(run), "--model", model,
                                     "--config", str(config)])
        assert result.exit_code == 0, result.output
        result = runner.invoke(app, ["detect", str(run), str(prepared), "--split", "test"])
        assert result.exit_code == 0, result.output
        for subject in ("sub-p04", "sub-p05"):
            for name in ("score", "mask", "region"):
                assert (run / "pred" / subject / f"{name}.nii.gz").is_file()
        assert not (run / "pred" / "sub-h00").exists()
        result = runner.invoke(app, ["evaluate", str(run), str(prepared)])
        assert result.exit_code == 0, result.output
        assert f"| {model} |" in result.output
        for name in ("subjects.csv", "summary.json", "fig5_examples.png", "fig6_histogram.png"):
            assert (run / "eval" / name).is_file()


def test_threshold_baseline_finds_bright_lesions(prepared, tmp_path):
    import json

    from brainuad.detection.cohort import DetectOptions, detect_manifest
    from brainuad.evaluation.evaluate import evaluate

    run = train(prepared, tmp_path / "thr", tiny_config("threshold"))
    pred = detect_manifest(run, prepared, None, DetectOptions(split="test"))
    result = evaluate(pred, prepared)
    # the toy lesions are the brightest thing in the toy brains
    assert result.summary["auroc"]["mean"] > 0.9
    assert json.loads((run / "eval" / "summary.json").read_text())["model"] == "threshold"


class _Grey(torch.nn.Module):
    """A 'model' that reconstructs every slice as uniform 0.5."""

    def reconstruct(self, x):
        return torch.full_like(x, 0.5)


@pytest.mark.parametrize("residual, dark_flagged", [("abs", True), ("positive", False)])
def test_residual_sign_option(prepared, residual, dark_flagged):
    import numpy as np

    from brainuad.config import DetectConfig, ModelConfig, RunConfig
    from brainuad.data.slices import load_subject_slices, to_volume
    from brainuad.detection.detector import Detector
    from brainuad.io.images import Volume
    from brainuad.io.manifest import read_manifest

    data = load_subject_slices(read_manifest(prepared).subjects[0], "flair", 32)
    data.images[:] = 0.5 * data.masks
    n, c = len(data.images), 16
    data.images[:, c - 4:c - 1, c - 4:c - 1] = 1.0  # brighter than the reconstruction
    data.images[:, c + 1:c + 4, c + 1:c + 4] = 0.0  # darker than the reconstruction
    image = Volume(to_volume(data.images, data.geometry), data.volume.affine)
    cfg = DetectConfig(residual=residual, median_size=1, erosion_mm=0)
    scored = Detector(RunConfig(model=ModelConfig(image_size=32)), _Grey()).score(
        image, data.mask, cfg)

    def square(lo):
        return to_volume(np.pad(np.ones((n, 3, 3)), ((0, 0), (lo, 29 - lo), (lo, 29 - lo))),
                         data.geometry) > 0

    bright, dark = square(c - 4), square(c + 1)
    brain = data.mask.data > 0
    assert scored.score[bright & brain].min() == pytest.approx(0.5)
    assert (scored.score[dark & brain].min() > 0.4) == dark_flagged


def test_cosine_schedule_anneals_both_rates_and_is_checkpointed(prepared, tmp_path):
    run = train(prepared, tmp_path / "cos", tiny_config(epochs=2, lr_schedule="cosine"))
    state = rundir.safe_torch_load(run / "checkpoints" / "last.ckpt")
    rates = [s["_last_lr"][0] for s in state["lr_schedulers"]]
    assert len(rates) == 2  # generator and discriminator
    assert rates[0] == pytest.approx(0.0, abs=1e-12)  # cosine over 2 epochs ends at zero
    with pytest.raises(BrainUADError, match="lr_schedule"):
        TrainConfig(lr_schedule="linear")


def test_registered_subjects_get_maps_on_their_raw_grid(prepared, tmp_path):
    """A subject with `native` + `transform` columns is written on its raw scan's grid: the
    atlas-space mask resampled there (here through an identity transform onto a coarser grid)."""
    import numpy as np
    import SimpleITK as sitk

    from brainuad.detection.cohort import DetectOptions, detect_manifest
    from brainuad.evaluation.evaluate import evaluate
    from brainuad.io.images import load_image
    from brainuad.io.manifest import read_manifest, write_manifest
    from brainuad.io.sitk import from_sitk, to_sitk
    from brainuad.preprocessing.transforms import to_native, write_transform
    from conftest import write_nifti

    run = train(prepared, tmp_path / "thr", tiny_config("threshold"))
    atlas_pred = detect_manifest(run, prepared, tmp_path / "atlas", DetectOptions(split="test"))
    manifest = read_manifest(prepared)
    subject = next(s for s in manifest.subjects if s.split == "test")
    image = load_image(subject.images["flair"])
    native_affine = image.affine @ np.diag([1.0, 1.0, 2.0, 1.0])  # coarser slices, same world
    native_shape = (image.shape[0], image.shape[1], image.shape[2] // 2)
    subject.native = write_nifti(tmp_path / "raw" / "flair.nii.gz",
                                 np.random.default_rng(0).random(native_shape) + 1,
                                 native_affine)
    subject.transform = write_transform(tmp_path / "raw" / "to_native.tfm",
                                        sitk.AffineTransform(3))
    grid = to_sitk(np.zeros(native_shape), native_affine)
    label = load_image(subject.label, allow_blank=True)
    subject.label = write_nifti(tmp_path / "raw" / "label.nii.gz", to_native(
        label.data, label.affine, grid, sitk.AffineTransform(3), nearest=True).astype(np.uint8),
        native_affine)
    registered = write_manifest(tmp_path / "registered.csv", manifest.subjects).path

    pred = detect_manifest(run, registered, tmp_path / "native", DetectOptions(split="test"))
    mask = load_image(pred / subject.subject / "mask.nii.gz", allow_blank=True)
    assert mask.shape == native_shape
    np.testing.assert_allclose(mask.affine, native_affine)
    atlas_mask = load_image(atlas_pred / subject.subject / "mask.nii.gz", allow_blank=True)
    expected = to_native(atlas_mask.data, atlas_mask.affine, grid, sitk.AffineTransform(3),
                         nearest=True)
    np.testing.assert_array_equal(mask.data, expected)
    assert from_sitk(grid)[0].shape == native_shape
    assert evaluate(pred, registered).rows  # the native label and maps agree on the grid


@pytest.mark.slow  # two processes: about 15 s
def test_two_process_ddp_on_cpu(prepared, tmp_path):
    """The distributed path (Lightning DDP, gloo) on this machine: two CPU processes each take
    half of every batch, batch norm over the whole batch (GlooSyncBatchNorm): the same weights
    as one process up to float rounding; the run is complete and detects."""


    from brainuad.detection.cohort import DetectOptions, detect_manifest

    one = train(prepared, tmp_path / "one", tiny_config("saegan", epochs=2))
    two = train(prepared, tmp_path / "two",
                tiny_config("saegan", epochs=2, batch_size=2, devices=2, strategy="ddp_fork",
                            accelerator="cpu"))
    steps = []
    for run in (one, two):
        with open(run / "log" / "metrics.csv") as handle:
            steps.append(max(int(row["step"]) for row in csv.DictReader(handle)))
    assert steps[1] == steps[0]  # the same number of (global) steps: each rank took half
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    # Weights agree to float rounding. (A bias right before a batch norm has no gradient but
    # rounding noise, which Adam scales up to steps of its learning rate; batch norm cancels it,
    # so it is left out here and the outputs are compared instead.)
    deltas = {k: float((a[k] - b[k]).abs().max()) for k in a
              if k.endswith("weight") and a[k].is_floating_point()}
    assert max(deltas.values()) < 1e-3, max(deltas.items(), key=lambda kv: kv[1])
    from brainuad.data.slices import load_subject_slices
    from brainuad.detection.detector import Detector
    from brainuad.io.manifest import read_manifest

    subject = read_manifest(prepared).select(split="test")[0]
    x = torch.from_numpy(load_subject_slices(subject, "flair", 32).images[:, None])
    with torch.no_grad():
        outputs = [Detector.load(run, "cpu").network.reconstruct(x) for run in (one, two)]
    difference = float((outputs[0] - outputs[1]).abs().max())
    assert difference < 1e-3, difference
    pred = detect_manifest(two, prepared, tmp_path / "pred", DetectOptions(split="test"))
    assert (pred / "detect.json").is_file() and list(pred.glob("*/timing.json"))


@pytest.mark.parametrize("name", ["dae", "sae8", "sae16", "saegan", "dvae", "svae", "anovaegan",
                                  "anogan"])
def test_every_model_takes_a_training_step(prepared, tmp_path, name):
    import lightning as L

    from brainuad.data.dataset import SliceDataset
    from brainuad.io.manifest import read_manifest
    from brainuad.models.registry import kind_of

    module = kind_of(name).module()(tiny_config(name).to_dict())
    before = {k: v.clone() for k, v in module.state_dict().items() if v.is_floating_point()}
    data = SliceDataset(read_manifest(prepared).select(split="train"), "flair", 32)
    L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(module, torch.utils.data.DataLoader(data,
                                                                                 batch_size=4))
    changed = {k for k, v in module.state_dict().items()
               if k in before and not torch.equal(v, before[k])}
    assert any("decoder" in k or "generator" in k for k in changed)
    if name in ("saegan", "anovaegan", "anogan"):
        assert any("discriminator" in k for k in changed)


@pytest.mark.slow  # two epochs and two latent-search thresholds: about 15 s
def test_anogan_keeps_every_epoch_and_a_user_picks_one(prepared, tmp_path):
    from brainuad.training.train import use_epoch

    cfg = tiny_config("anogan", epochs=2)
    cfg.model.search_steps = 5  # the threshold at the end runs the latent search
    run = train(prepared, tmp_path / "gan", cfg)
    for epoch in (0, 1):
        assert (run / "checkpoints" / f"epoch-{epoch:03d}.ckpt").is_file()
        assert (run / "samples" / f"epoch-{epoch:03d}.png").stat().st_size > 0
    last = _weights(run)
    use_epoch(run, 0)
    first = _weights(run)
    assert any(not torch.equal(first[k], last[k]) for k in first)
    assert rundir.read_threshold_info(run)["epoch"] == 0
    with pytest.raises(BrainUADError, match="no checkpoint of epoch 7"):
        use_epoch(run, 7)


def test_resume_with_more_epochs_follows_the_longer_cosine(prepared, tmp_path):
    """Raising `epochs` on resume gives the schedule of a run asked for that many from the start
    (CosineAnnealingLR kept the old length and, past it, raised the rates again)."""
    import math

    straight = train(prepared, tmp_path / "straight", tiny_config(epochs=3, lr_schedule="cosine"))
    part = train(prepared, tmp_path / "part", tiny_config(epochs=1, lr_schedule="cosine"))
    train(prepared, part, resume=True, epochs=3)
    with open(part / "log" / "resume-1" / "metrics.csv") as handle:
        rates = [float(row["lr-Adam"]) for row in csv.DictReader(handle) if row.get("lr-Adam")]
    assert rates == pytest.approx([1e-3 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2)])
    a, b = _weights(straight), _weights(part)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)

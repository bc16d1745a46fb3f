"""Checks on the real MSLUB scans in ../shared/data (marked `realdata`)."""

import numpy as np
import pytest

from brainuad.data.slices import PAPER_SLICES, load_subject_slices, to_volume
from brainuad.io.images import load_binary, load_image
from brainuad.io.manifest import Subject
from brainuad.preprocessing.pipeline import PreprocessConfig, preprocess_subject
from conftest import bids_validator, shared_data

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def patient07(tmp_path_factory):
    folder = shared_data("mslub", "patient07")
    subject = Subject("patient07", "test", "patient", {"flair": folder / "FLAIR.nii.gz"},
                      label=folder / "lesion_mask.nii.gz")
    out = tmp_path_factory.mktemp("prep")
    return preprocess_subject(subject, out, PreprocessConfig(register="never"))


def test_mslub_flair_slices(patient07):
    raw = load_image(patient07.images["flair"])
    assert raw.shape == (182, 218, 182)
    mask = load_binary(patient07.mask, raw)
    # the skull-stripped FLAIR is non-zero on 1.13 M voxels (1 mm): the mask is that region
    nonzero = int((raw.data > 0).sum())
    assert abs(int(mask.data.sum()) - nonzero) < 0.01 * nonzero
    paper = load_subject_slices(patient07, "flair", 256, "paper")
    assert paper.images.shape == (PAPER_SLICES, 256, 256)
    assert not paper.geometry.resampled
    brain = load_subject_slices(patient07, "flair", 256, "brain")
    assert 120 < len(brain.geometry.indices) < 182
    assert brain.images.min() >= 0 and brain.images.max() <= 1
    # the slices carry the brain: most of the mask's voxels, and the volume comes back exactly
    back = to_volume(brain.images, brain.geometry)
    np.testing.assert_array_equal(back, np.clip(raw.data, 0, 1) * mask.data)
    label = load_binary(patient07.label, raw, "label").data
    lesion = back[label > 0]
    assert np.median(lesion) > np.median(back[mask.data > 0])  # lesions are bright on FLAIR


def test_registration_recovers_a_known_transform_on_a_real_flair():
    """patient07's FLAIR at 2 mm, moved by a known affine onto a 2 x 2 x 4 mm grid."""
    import SimpleITK as sitk

    from brainuad.evaluation.metrics import dice
    from brainuad.io.sitk import from_sitk, to_sitk
    from brainuad.preprocessing.registration import RegistrationConfig, register, rough_brain
    from brainuad.preprocessing.transforms import affine_transform, matrix

    flair = load_image(shared_data("mslub", "patient07", "FLAIR.nii.gz"))
    full = to_sitk(flair.data, flair.affine)
    grid = sitk.Image([91, 109, 91], sitk.sitkFloat32)
    grid.SetSpacing([2.0, 2.0, 2.0])
    grid.SetDirection(full.GetDirection())
    grid.SetOrigin(full.GetOrigin())
    fixed = sitk.Resample(full, grid, sitk.Transform(), sitk.sitkLinear, 0.0)
    known = np.array([[0.97, 0.06, 0.0, 4.0], [-0.05, 1.04, 0.03, -6.0],
                      [0.01, -0.04, 1.02, 3.0], [0, 0, 0, 1]])
    raw_grid = sitk.Image([96, 110, 46], sitk.sitkFloat32)
    raw_grid.SetSpacing([2.0, 2.0, 4.0])
    raw_grid.SetDirection(full.GetDirection())
    raw_grid.SetOrigin(full.GetOrigin())
    moving = sitk.Resample(full, raw_grid, affine_transform(np.linalg.inv(known)),
                           sitk.sitkLinear, 0.0)
    cfg = RegistrationConfig(shrink=(2, 1), smoothing_mm=(2.0, 0.0), sampling=0.1)
    found = matrix(register(fixed, moving, cfg, "patient07"))
    data = from_sitk(fixed)[0]
    points = np.array([fixed.TransformIndexToPhysicalPoint([int(i) for i in index])
                       for index in np.argwhere(data > 0)[::200]])
    points = np.c_[points, np.ones(len(points))]
    error = np.linalg.norm((points @ found.T - points @ known.T)[:, :3], axis=1).mean()
    assert error < 1.0  # mm
    # the atlas-free rough brain of a skull-stripped scan is that scan's brain
    assert dice(from_sitk(rough_brain(fixed))[0] > 0, data > 0) > 0.95


@pytest.mark.slow  # preprocesses three real scans (about 2 minutes)
def test_mslub_experiment_config_end_to_end_at_tiny_settings(tmp_path):
    """configs/experiments/mslub_flair.yaml as shipped, on a subset of its subjects (one raw
    FLAIR to train on, one to validate, patient07 to test) at --quick settings."""
    import csv
    import json

    import yaml
    from typer.testing import CliRunner

    from brainuad.commands.cli import app
    from conftest import REPO

    shared_data("mslub_longitudinal_raw")
    config = REPO / "configs" / "experiments" / "mslub_flair.yaml"
    rows = list(csv.DictReader((config.parent / "mslub_flair.csv").open()))
    chosen = [next(r for r in rows if r["split"] == s) for s in ("train", "val", "test")]
    for row in chosen:
        for key in ("flair", "label"):
            row[key] = str((config.parent / row[key]).resolve()) if row[key] else ""
    with (tmp_path / "subset.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    settings = yaml.safe_load(config.read_text())
    settings["manifest"] = "subset.csv"
    (tmp_path / "subset.yaml").write_text(yaml.safe_dump(settings))
    result = CliRunner().invoke(app, ["benchmark", str(tmp_path / "subset.yaml"),
                                      str(tmp_path / "out"), "--quick", "--models",
                                      "svae,threshold"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["benchmark"]
    assert len(rows) == 2 * len(settings["variants"])
    # the test patient was scored on its own grid, against its own lesion mask
    mask = load_image(tmp_path / "out" / "runs" / "svae" / "pred-test-brain" / chosen[2]["subject"]
                      / "mask.nii.gz", allow_blank=True)
    assert mask.shape == (182, 218, 182)
    for row in rows:
        assert 0 <= row["auroc_mean"] <= 1 and 0 <= row["dice_mean"] <= 1
    # the FLAIR threshold ranks patient07's lesions above normal tissue (0.74 at full settings);
    # two epochs of a 64 px model promise nothing
    baseline = next(r for r in rows if (r["model"], r["variant"]) == ("threshold", "brain"))
    assert baseline["auroc_mean"] > 0.6


@pytest.mark.slow  # 23 registrations: about 4 minutes
def test_every_real_scan_passes_the_registration_plausibility_bounds():
    """The bounds of RegistrationConfig were set so that every real scan here passes: the 11
    raw MS FLAIRs, the 2 MSLUB test FLAIRs (FSL MNI space), the 10 healthy IXI T1."""
    from brainuad.io.sitk import to_sitk
    from brainuad.preprocessing.bias import head_mask, n4
    from brainuad.preprocessing.registration import RegistrationConfig, to_template
    from brainuad.preprocessing.registration_gate import check_quality

    data = shared_data()
    scans = sorted((data / "mslub_longitudinal_raw").glob("*/FLAIR.nii.gz"))
    scans += sorted((data / "mslub").glob("*/FLAIR.nii.gz"))
    scans += sorted((data / "ixi_t1").glob("*/T1.nii.gz"))
    assert len(scans) == 23
    cfg = RegistrationConfig()
    for path in scans:
        volume = load_image(path)
        image = to_sitk(volume.data, volume.affine)
        image = n4(image, head_mask(image), cfg)
        figures = to_template(image, cfg, str(path))[1]
        check_quality(figures, cfg, str(path))  # raises for a scan below a bound


def _gate(data, affine, name):
    """The registration gate's verdict on one scan as preprocessing runs it: (figures, broken)."""
    from brainuad.errors import BrainUADError
    from brainuad.io.sitk import to_sitk
    from brainuad.preprocessing.bias import head_mask, n4
    from brainuad.preprocessing.registration import RegistrationConfig, to_template
    from brainuad.preprocessing.registration_gate import judge

    cfg = RegistrationConfig()
    image = to_sitk(data, affine)
    try:
        image = n4(image, head_mask(image), cfg)
        figures = to_template(image, cfg, name)[1]
    except BrainUADError as err:  # the registration itself failed: refused
        return {"error": str(err)}, True
    return figures, judge(figures, cfg)[1]


@pytest.mark.slow  # five registrations: about two minutes
def test_the_gate_lets_hard_clinical_cases_through_and_refuses_broken_ones():
    """Issue 24: thick slices, a large mass with oedema and a field of view without the lowest
    30 % of the head (a raw 2D FLAIR; the cut also on the 3D FLAIR) are accepted, warned at
    most; a scan cut to its top third and one whose axes are mislabelled are refused."""
    from brainuad.data.gate_cases import broken_cases, hard_cases

    flair2d = load_image(shared_data("mslub_longitudinal_raw", "patient01_study1")
                         / "FLAIR.nii.gz")
    flair3d = load_image(shared_data("mslub", "patient07") / "FLAIR.nii.gz")
    hard2d = hard_cases(flair2d.data, flair2d.affine)
    hard3d = hard_cases(flair3d.data, flair3d.affine)
    broken = broken_cases(flair2d.data, flair2d.affine)
    for name, (data, affine) in [
            ("6 mm slices", hard2d["slices thickened to 6 mm"]),
            ("mass", hard2d["large mass with oedema"]),
            ("cut field of view", hard2d["lowest 30 % of the head not in the field of view"]),
            ("cut 3D", hard3d["lowest 30 % of the head not in the field of view"])]:
        figures, refused = _gate(data, affine, name)
        assert not refused, (name, figures)
    for name in ("top third", "axes mislabelled"):
        figures, refused = _gate(*broken[name], name)
        assert refused, (name, figures)


@pytest.mark.slow  # two raw scans through the whole path: about a minute
def test_segment_two_raw_longitudinal_flairs(tmp_path):
    """`brainuad segment` with the bundled model on raw MS FLAIRs as acquired (with skull,
    anisotropic, scanner space): outputs on each scan's grid, a plausible registration, lesions
    found in these MS patients, the report written. The two scans the model held out: a
    normative model finds the lesions of its own training scans poorly (one scan of n moves a
    voxel's mean and spread so that it lies at most (n - 1) / sqrt(n) spreads above them: 3.9
    for the 17 scans of flair-ms, not far above its threshold of 2.16)."""
    import json

    import nibabel as nib

    from brainuad.commands.segment import SegmentOptions, segment_scans

    scans = [shared_data("mslub_longitudinal_raw", name, "FLAIR.nii.gz")
             for name in ("patient09_study2", "patient20_study2")]
    rows = segment_scans(scans, tmp_path, SegmentOptions(accelerator="cpu"))
    # both files are FLAIR.nii.gz: each is named by its folder too
    assert [row["scan"] for row in rows] == ["patient09_study2_FLAIR", "patient20_study2_FLAIR"]
    for path, row in zip(scans, rows, strict=True):
        folder = tmp_path / row["scan"]
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["model"]["name"] == "flair-ms"
        assert summary["registration"]["brain_dice"] > 0.88 and not summary["warnings"]
        assert 900 < summary["brain_volume_ml"] < 2000
        assert summary["lesions"] > 0 and 0 < summary["lesion_volume_ml"] < 100
        mask = nib.load(folder / "lesion_mask.nii.gz")
        assert mask.shape == nib.load(path).shape
        assert (folder / "report.html").stat().st_size > 50_000


#: The shipped flair-ms on patient07/19 as `segment` outlines them (versions 4 and 5, measured
#: 2026-12-02 and 2026-12-06: Dice 0.364 and 0.828, 0.15 and 0.92-0.93 ml flagged outside;
#: version 6, this test's computation at git commit 7e09ea9: 0.360 and 0.827, 0.14 and
#: 0.90 ml), less a margin for ITK's registration, which is not bit-reproducible between runs;
#: the outside bound is issue 22's
#: target (2 ml). Version 3's were Dice 0.320 and 0.808, 0.34 and 1.47 ml (bounds 0.27, 0.76);
#: version 2's 0.244 and 0.742, 0.41 and 0.86 ml.
BOUNDS = {"p07_dice": 0.31, "p19_dice": 0.78, "outside_ml": 2.0}


@pytest.mark.slow  # two scans through the whole path
def test_the_shipped_model_on_the_cross_protocol_validation_patients(tmp_path):
    """flair-ms on MSLUB patient07 and patient19 (3D FLAIRs of another protocol than the 2D
    FLAIRs of the longitudinal set) as a user segments them: the lesions outlined, and little
    flagged away from them (the lesions dilated by 2 mm). These two patients chose the model's
    operating point (with synthetic lesions), so these are validation figures, fixed here so a
    change that loses them is seen; its held-out figures are leave-one-patient-out (the model
    card)."""
    import nibabel as nib
    from scipy import ndimage

    from brainuad.commands.segment import SegmentOptions, segment_scans

    scans = [shared_data("mslub", name, "FLAIR.nii.gz") for name in ("patient07", "patient19")]
    rows = segment_scans(scans, tmp_path, SegmentOptions(accelerator="cpu"))
    figures = {}
    for path, row in zip(scans, rows, strict=True):
        found = np.asarray(nib.load(tmp_path / row["scan"] / "lesion_mask.nii.gz").dataobj) > 0
        truth = np.asarray(nib.load(path.parent / "lesion_mask.nii.gz").dataobj) > 0
        near = ndimage.binary_dilation(truth, iterations=2)  # 1 mm voxels: 2 mm
        figures[path.parent.name] = (2 * (found & truth).sum() / (found.sum() + truth.sum()),
                                     (found & ~near).sum() / 1000)
    dice07, outside07 = figures["patient07"]
    dice19, outside19 = figures["patient19"]
    assert dice07 > BOUNDS["p07_dice"] and outside07 < BOUNDS["outside_ml"], figures
    assert dice19 > BOUNDS["p19_dice"] and outside19 < BOUNDS["outside_ml"], figures



@pytest.mark.slow  # three raw scans and one pair through the whole path
def test_bids_app_on_a_bids_layout_of_the_raw_longitudinal_flairs(tmp_path):
    """`brainuad bids` on real raw FLAIRs laid out as BIDS (links in a temporary folder, never
    written into shared/): patient01's two studies as two sessions, patient09's one; then
    `group`, and the BIDS validator on the output."""
    import csv
    import json
    import subprocess

    from brainuad.commands.bids_app import BidsOptions, group, participant
    from brainuad.commands.segment import SegmentOptions

    root = tmp_path / "bids"
    for patient, study in (("01", 1), ("01", 2), ("09", 2)):
        source = shared_data("mslub_longitudinal_raw", f"patient{patient}_study{study}",
                             "FLAIR.nii.gz")
        anat = root / f"sub-{patient}" / f"ses-{study}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{patient}_ses-{study}_FLAIR.nii.gz").symlink_to(source)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "MSLUB longitudinal (Lesjak et al. 2016, CC BY)", "BIDSVersion": "1.10.0"}))
    out = tmp_path / "derivatives"
    done = participant(root, out, BidsOptions(segment=SegmentOptions(accelerator="cpu")))
    assert len(done) == 4
    rows = group(out)
    table = list(csv.DictReader((out / "lesions.tsv").read_text().splitlines(),
                                delimiter="\t"))
    assert [(r["subject"], r["session"]) for r in table] == [("01", "1"), ("01", "2"),
                                                            ("09", "2")]
    assert all(float(r["lesion_volume_ml"]) > 0 for r in table) and len(rows) == 3
    assert table[1]["baseline_session"] == "1" and table[1]["new_count"] != "n/a"
    validator = bids_validator()
    result = subprocess.run([validator, str(out), "--json"], capture_output=True, text=True,
                            timeout=300)
    issues = json.loads(result.stdout)["issues"]["issues"]
    assert [i["code"] for i in issues if i["severity"] == "error"] == []


@pytest.mark.slow  # three real pairs and one scan-rescan pair through compare: about 80 s
def test_compare_on_the_real_pairs_and_on_a_real_rescan(tmp_path):
    """The three MSLUB pairs' studies against the dataset's reference of lesion change
    (Lesjak et al. 2016, CC BY; our change mask carried to its common space by the dataset's
    transform), and one raw FLAIR against its own rescan (moved, a new bias field, new noise:
    nothing changed). These pairs chose compare's settings (docs/models/compare.md): validation
    figures, fixed here so that a change that loses them is seen."""
    import nibabel as nib
    import SimpleITK as sitk
    from scipy import ndimage

    from brainuad.commands.compare import compare_scans
    from brainuad.data.shifts import rescanned
    from brainuad.io.images import load_scan, save_volume
    from brainuad.preprocessing.transforms import read_transform

    # measured with the shipped detector (rule 4): detection, false-discovery rate, Dice
    # patient03 0.30 / 0.50 / 0.17, patient12 0.13 / 0.30 / 0.60, patient19 0.57 / 0.07 / 0.64
    # (benchmarks/compare_harness.py); the bounds leave room for ITK's registration, which is
    # not bit-reproducible from machine to machine
    bounds = {"patient03": {"detection": 0.2}, "patient12": {"dice": 0.5, "fdr": 0.4},
              "patient19": {"dice": 0.5, "fdr": 0.3, "detection": 0.45}}
    for patient, bound in bounds.items():
        common = shared_data("mslub_longitudinal_common", patient)
        visits = [shared_data("mslub_longitudinal_raw", f"{patient}_study{s}", "FLAIR.nii.gz")
                  for s in (1, 2)]
        row = compare_scans(visits, tmp_path / patient)[0]
        reference = sitk.ReadImage(str(common / "change_mask.nii.gz"))
        ours = sitk.Resample(sitk.ReadImage(str(tmp_path / patient / row["pair"] /
                                                "change_mask.nii.gz")), reference,
                             read_transform(common / "study2_FLAIR_to_common_space.tfm"),
                             sitk.sitkNearestNeighbor, 0)
        found, truth = sitk.GetArrayFromImage(ours) > 0, sitk.GetArrayFromImage(reference) > 0
        labels, count = ndimage.label(found, np.ones((3, 3, 3)))
        references, total = ndimage.label(truth, np.ones((3, 3, 3)))
        got = {"dice": 2 * (found & truth).sum() / (found.sum() + truth.sum()),
               "fdr": len(set(range(1, count + 1)) - set(np.unique(labels[truth])))
               / max(count, 1),
               "detection": len(set(np.unique(references[found])) - {0}) / total}
        assert got["dice"] > bound.get("dice", 0), (patient, got)
        assert got["fdr"] < bound.get("fdr", 1), (patient, got)
        assert got["detection"] > bound.get("detection", 0), (patient, got)

    followup = shared_data("mslub_longitudinal_raw", "patient19_study2", "FLAIR.nii.gz")
    scan = load_scan(followup)
    again = save_volume(tmp_path / "rescan.nii.gz", rescanned(scan, 9).data, scan.affine,
                        np.float32)
    row = compare_scans([followup, again], tmp_path / "rescan")[0]
    flagged = np.asarray(nib.load(tmp_path / "rescan" / row["pair"] /
                                  "change_mask.nii.gz").dataobj) > 0
    assert flagged.sum() * scan.spacing.prod() / 1000 < 0.5, row  # version 3: 0.000 ml


def test_a_t1_or_another_persons_flair_is_refused_whatever_its_name(tmp_path):
    """Issue 37: a T1 copied to `visit.nii.gz` is refused by segment and compare from what it
    contains (its tissues' order after registration), and two different people's FLAIRs are
    not compared (their correlation after rigid registration: benchmarks/inputs_check.py)."""
    import shutil

    from typer.testing import CliRunner

    from brainuad.commands.cli import app

    raw = shared_data("mslub_longitudinal_raw")
    visit = tmp_path / "visit.nii.gz"
    shutil.copy(raw / "patient03_study2" / "T1W.nii.gz", visit)
    for args in (["segment", str(visit), "--out", str(tmp_path / "seg")],
                 ["compare", str(visit), str(raw / "patient03_study2" / "FLAIR.nii.gz"),
                  "--out", str(tmp_path / "cmp")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1, result.output
        assert f"{visit}: given as a FLAIR, but its contrast is not a FLAIR's" in result.output
        assert "it looks like a T1" in result.output and "Traceback" not in result.output
    others = [str(raw / s / "FLAIR.nii.gz") for s in ("patient04_study1", "patient03_study2")]
    result = CliRunner().invoke(app, ["compare", *others, "--out", str(tmp_path / "two")])
    assert result.exit_code == 1 and "not the same person's" in result.output, result.output

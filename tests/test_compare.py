"""`brainuad compare`: two visits of one person in, new and enlarging lesions out."""

import csv
import json
from dataclasses import fields, replace

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from brainuad.commands.cli import app
from brainuad.commands.compare import CompareOptions, compare_scans, read_visits
from brainuad.data.example import example_pair
from brainuad.data.shifts import rescanned
from brainuad.errors import BrainUADError
from brainuad.io.images import dicom_series, load_scan, save_volume
from brainuad.longitudinal.change import ChangeConfig, detect_change
from brainuad.longitudinal.visits import Visits, match
from brainuad.preprocessing.pipeline import PreprocessConfig
from brainuad.preprocessing.registration import RegistrationConfig
from conftest import fetched_urls, write_series

QUICK = PreprocessConfig(registration=RegistrationConfig(
    shrink=(4, 2), smoothing_mm=(2.0, 1.0), iterations=40, sampling=(0.2, 0.05)))


def test_visits_are_matched_by_a_gain_that_keeps_a_lesions_contrast():
    """Another session's gain is taken off by the ratio of the medians: a lesion twice as bright
    as its white matter stays twice as bright, and a volume with no signal is left as it is."""
    rng = np.random.default_rng(1)
    fixed = rng.choice([0.3, 0.6, 0.8], size=(20, 20, 20)) * rng.normal(1, 0.01, (20, 20, 20))
    fixed[:2, :2, :2] = 1.6  # a lesion, twice the white matter's 0.8
    moving = 1.7 * fixed
    where = np.ones(fixed.shape, bool)
    matched = match(moving, fixed, where)
    np.testing.assert_allclose(matched, fixed, rtol=1e-6)
    assert matched[0, 0, 0] == pytest.approx(1.6)
    empty = np.zeros_like(fixed)
    assert match(empty, fixed, where) is empty


def test_change_types_on_a_hand_built_pair():
    """A lesion only at the follow-up is new, one grown around a baseline lesion enlarging, one
    gone at the follow-up shrinking; noise alone is nothing."""
    rng = np.random.default_rng(0)
    shape = (40, 40, 40)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    baseline = 0.5 + rng.normal(0, 0.01, shape)
    followup = 0.5 + rng.normal(0, 0.01, shape)
    for image, box in ((followup, (slice(5, 10),) * 3),  # new
                       (baseline, (slice(20, 23), slice(5, 8), slice(5, 8))),  # enlarging
                       (followup, (slice(19, 25), slice(4, 10), slice(4, 10))),
                       (baseline, (slice(30, 35),) * 3)):  # resolved
        image[box] = 1.0
    # lesions 5 spreads above "grey matter" at 0.5 (a baseline lesion is beyond `HAD_Z`)
    lesion = {k: (v - 0.5) / 0.01 / 10 for k, v in (("b", baseline), ("f", followup))}
    visits = Visits(baseline, followup, lesion["b"], lesion["f"], brain, brain * 1.0, 1.0)
    # a 36 mm box of "white matter": no part of it lies 8 mm deep enough for the edge rule
    change = detect_change(visits, ChangeConfig(threshold=5, lesion=2, min_mm3=10,
                                                median_mm=1, edge_mm=0))
    kinds = sorted(c["type"] for c in change.components)
    assert kinds == ["enlarging", "new", "shrinking or resolving"]
    assert change.mask[7, 7, 7] == 1 and change.mask[32, 32, 32] == 2
    assert change.mask[21, 6, 6] == 0  # the baseline lesion itself did not change
    assert 0.005 < change.noise < 0.03


def test_no_change_is_looked_for_near_the_brains_outline():
    """The same new lesion is found deep in the white matter and not within `edge_mm` of the
    brain mask's outline (where the visits' partial volume differs)."""
    rng = np.random.default_rng(1)
    shape = (60, 60, 60)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    baseline, followup = (0.5 + rng.normal(0, 0.01, shape) for _ in range(2))
    followup[27:33, 27:33, 27:33] = 1.0  # 25 mm deep
    followup[3:8, 27:33, 27:33] = 1.0  # 2-6 mm inside the outline
    lesion = {k: (v - 0.5) / 0.01 / 20 for k, v in (("b", baseline), ("f", followup))}
    visits = Visits(baseline, followup, lesion["b"], lesion["f"], brain, brain * 1.0, 1.0)
    cfg = ChangeConfig(threshold=5, lesion=2, min_mm3=10, median_mm=1)
    mask = detect_change(visits, cfg).mask
    assert mask[30, 30, 30] == 1 and not mask[:12].any()
    assert detect_change(visits, replace(cfg, edge_mm=0)).mask[5, 30, 30] == 1


def test_compare_runs_n4_at_the_shrink_its_detector_was_calibrated_with(monkeypatch, tmp_path):
    """segment's N4 shrinks by 6 (flair-ms 6); compare keeps `N4_SHRINK` whatever the
    preprocessing it is given, and its outputs' record says so."""
    from brainuad.commands.compare import made_by
    from brainuad.io.images import Volume
    from brainuad.longitudinal import visits

    seen = []

    def stopped(image, mask, cfg):
        seen.append(cfg.n4_shrink)
        raise RuntimeError("stopped here")

    monkeypatch.setattr(visits, "n4", stopped)
    scan = Volume(np.random.default_rng(0).random((24, 24, 12), np.float32), np.eye(4),
                  tmp_path / "visit.nii.gz")
    assert PreprocessConfig().registration.n4_shrink != visits.N4_SHRINK
    with pytest.raises(BrainUADError, match="N4 bias correction failed"):
        visits.register_pair(scan, scan, PreprocessConfig())
    assert seen == [visits.N4_SHRINK]
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())
    record = made_by(tmp_path / "a", tmp_path / "b", CompareOptions())
    assert record["settings"]["preprocess"]["registration"]["n4_shrink"] == visits.N4_SHRINK


def _noisy_pair(seed: int, shape: tuple[int, ...]):
    """A brain box and two visits of "white matter" at 0.5 with noise of 0.01."""
    rng = np.random.default_rng(seed)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    baseline, followup = (0.5 + rng.normal(0, 0.01, shape) for _ in range(2))
    return brain, baseline, followup


def test_a_lesion_edge_that_moved_within_a_thick_slice_is_no_change():
    """A lesion whose edge moved by 2 mm is grown on 1 mm slices, and is the same lesion where
    one visit has 6 mm slices (where an edge lies within a slice is not known), unless the
    tolerance's floor at a fraction of the thickest slice is set to none."""
    brain, baseline, followup = _noisy_pair(2, (60, 60, 60))
    baseline[25:33, 25:33, 25:33] = 1.0
    followup[25:35, 25:35, 25:35] = 1.0  # the same lesion, 2 mm further at three faces
    lesion = {k: (v - 0.5) / 0.01 / 20 for k, v in (("b", baseline), ("f", followup))}
    cfg = ChangeConfig(threshold=5, lesion=2, min_mm3=10, median_mm=1)
    thin = Visits(baseline, followup, lesion["b"], lesion["f"], brain, brain * 1.0, 1.0)
    assert detect_change(thin, cfg).mask.any()
    thick = replace(thin, slice_mm=6.0)
    assert not detect_change(thick, cfg).mask.any()
    assert detect_change(thick, replace(cfg, tolerance_slice_fraction=0.0)).mask.any()


@pytest.mark.parametrize("setting", ["tolerance", "tolerance_slice_fraction"])
def test_a_negative_tolerance_is_refused(setting):
    with pytest.raises(BrainUADError, match="must not be negative"):
        ChangeConfig(**{setting: -0.5})


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 2.0), (1.0000001, 0.9999999, 2.0)])
def test_on_thick_slices_a_lesion_moved_in_plane_is_none_and_a_new_one_is_counted_in_mm(
        spacing):
    """On 1 x 1 x 2 mm voxels (and a float32 affine's 1.0000001 mm): a lesion moved by one
    in-plane voxel is within the tolerance (1 mm: one voxel in-plane, none across the slices);
    a new one of 6 x 6 x 2 voxels is one change of 144 mm^3."""
    brain, baseline, followup = _noisy_pair(3, (60, 60, 24))
    baseline[20:26, 20:26, 10:13] = 1.0
    followup[21:27, 20:26, 10:13] = 1.0  # the same lesion, one voxel (1 mm) along x
    followup[36:42, 36:42, 10:12] = 1.0  # new
    lesion = {k: (v - 0.5) / 0.01 / 20 for k, v in (("b", baseline), ("f", followup))}
    visits = Visits(baseline, followup, lesion["b"], lesion["f"], brain, brain * 1.0, 1.0,
                    slice_mm=max(spacing), spacing=np.asarray(spacing))
    cfg = ChangeConfig(threshold=5, lesion=2, min_mm3=10, min_seed_mm3=5, median_mm=1,
                       edge_mm=0)
    change = detect_change(visits, cfg)
    assert [c["type"] for c in change.components] == ["new"]
    assert not change.mask[15:30, 15:30].any()
    assert change.components[0]["voxels"] * np.prod(spacing) == pytest.approx(144, rel=1e-3)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    return example_pair(tmp_path_factory.mktemp("pair"), resolution=2)


def test_compare_finds_the_new_lesions_of_a_synthetic_pair(pair, tmp_path):
    rows = compare_scans([pair["baseline"], pair["followup"]], tmp_path,
                         CompareOptions(preprocess=QUICK))
    folder = tmp_path / rows[0]["pair"]
    source = nib.load(pair["followup"])
    mask = np.asarray(nib.load(folder / "change_mask.nii.gz").dataobj)
    assert mask.shape == source.shape
    np.testing.assert_allclose(nib.load(folder / "change_mask.nii.gz").affine, source.affine,
                               atol=1e-5)
    truth = np.asarray(nib.load(pair["new"]).dataobj) > 0
    grown = mask == 1
    voxel_ml = abs(np.linalg.det(source.affine[:3, :3])) / 1000
    assert 2 * (grown & truth).sum() / (grown.sum() + truth.sum()) > 0.5
    # every new lesion of at least 0.2 ml is found, and not much else
    labels, count = ndimage.label(truth, ndimage.generate_binary_structure(3, 3))
    sizes = np.bincount(labels.ravel())[1:] * voxel_ml
    found = set(np.unique(labels[grown])) - {0}
    assert all(i + 1 in found for i in np.flatnonzero(sizes >= 0.2))
    summary = json.loads((folder / "summary.json").read_text())
    grown_ml = summary["changes"]["new"]["ml"] + summary["changes"]["enlarging"]["ml"]
    assert grown_ml == pytest.approx(truth.sum() * voxel_ml, rel=0.5)
    assert summary["changes"]["shrinking or resolving"]["ml"] < 0.5  # nothing shrank
    # the example's new lesions touch none of its baseline lesions: none is "enlarging"
    assert summary["changes"]["enlarging"]["count"] == 0, summary["changes"]
    with open(folder / "changes.csv") as handle:
        table = list(csv.DictReader(handle))
    assert sum(float(r["volume_ml"]) for r in table) == pytest.approx(
        (mask > 0).sum() * voxel_ml, abs=0.05)
    page = (folder / "report.html").read_text()
    assert 'id="viewer"' in page and 'id="change-1"' in page and not fetched_urls(page)


def test_a_dicom_follow_up_gets_the_changes_back_as_a_dicom_seg_on_it(pair, tmp_path):
    """Issue 41: a follow-up given as a DICOM series also gets the change mask as a DICOM
    Segmentation on it: two segments (new or enlarging, shrinking or resolving), frame by
    source slice the NIfTI change mask."""
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk

    series = tmp_path / "followup"
    write_series(sitk.ReadImage(str(pair["followup"])), series)
    rows = compare_scans([pair["baseline"], series], tmp_path / "out",
                         CompareOptions(preprocess=QUICK))
    folder = tmp_path / "out" / rows[0]["pair"]
    mask = np.asarray(nib.load(folder / "change_mask.nii.gz").dataobj)
    assert (mask == 1).any()
    seg = hd.seg.segread(folder / "change_seg.dcm")
    assert [seg.get_segment_description(n).segment_label for n in (1, 2)] == [
        "new or enlarging lesion", "shrinking or resolving lesion"]
    uids = [pydicom.dcmread(f).SOPInstanceUID for f in dicom_series(series)]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                               combine_segments=True, relabel=False)
    np.testing.assert_array_equal(frames.transpose(2, 1, 0), mask)
    assert "change_seg.dcm" in json.loads((folder / "summary.json").read_text())["outputs"]


def test_a_scan_against_its_own_rescan_changes_nothing(pair, tmp_path):
    """The follow-up (with its lesions) against itself moved, with a new bias field and new
    noise: its lesions are blurred once more by the motion, and none of that is a change."""
    scan = load_scan(pair["followup"])
    again = save_volume(tmp_path / "rescan.nii.gz", rescanned(scan, 3).data, scan.affine,
                        np.float32)
    rows = compare_scans([pair["followup"], again], tmp_path, CompareOptions(preprocess=QUICK))
    flagged = sum(rows[0][f"{kind}_ml"] for kind in ("new", "enlarging",
                                                     "shrinking or resolving"))
    assert flagged < 0.1, rows[0]


def test_visits_csv_pairs_consecutive_visits(tmp_path):
    for name in ("a1", "a2", "a10", "b1"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"x")
    table = tmp_path / "visits.csv"
    table.write_text("subject,visit,flair\nA,10,a10.nii.gz\nA,1,a1.nii.gz\nA,2,a2.nii.gz\n"
                     "B,1,b1.nii.gz\n")
    pairs = read_visits(table)
    assert [(name, b.name, f.name) for name, b, f in pairs] == [
        ("A_1-2", "a1.nii.gz", "a2.nii.gz"), ("A_2-10", "a2.nii.gz", "a10.nii.gz")]
    table.write_text("subject,flair\nA,a1.nii.gz\n")
    with pytest.raises(BrainUADError, match="needs the columns subject, visit and flair"):
        read_visits(table)


def test_compare_wants_two_scans_and_checks_them_first(tmp_path):
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "one.nii.gz"), "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "give BASELINE and FOLLOWUP" in result.output
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    result = CliRunner().invoke(app, ["compare", str(empty), str(empty), "--out",
                                      str(tmp_path / "o")])
    assert result.exit_code == 1 and "file is empty" in result.output
    assert not (tmp_path / "o").exists()


def test_two_visits_that_are_not_one_persons_are_refused_or_warned():
    from pathlib import Path

    from brainuad.longitudinal.visits import MIN_SAME_PERSON, same_person

    a, b = Path("a.nii.gz"), Path("b.nii.gz")
    assert same_person(MIN_SAME_PERSON, a, b, "refuse") == []
    with pytest.raises(BrainUADError, match="a.nii.gz and b.nii.gz correlate 0.30 .* not the "
                                            "same person's .--qc warn compares them anyway"):
        same_person(0.3, a, b, "refuse")
    assert "not the same person's" in same_person(0.3, a, b, "warn")[0]


def _pair_with(shape=(60, 60, 60), seed=3, faint=1.5):
    """Two visits of noise (spread 0.01) in a box of white matter, with changes too faint for
    any one voxel: a 5^3 new lesion `faint` spreads brighter at the follow-up, a 5^3 lesion as
    much fainter at the follow-up than at the baseline, where it is a lesion."""
    rng = np.random.default_rng(seed)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    baseline, followup = (0.5 + rng.normal(0, 0.01, shape) for _ in range(2))
    new, gone = (slice(20, 25),) * 3, (slice(35, 40),) * 3
    followup[new] += faint * 0.01
    baseline[gone] += 0.05  # a lesion at the baseline
    followup[gone] += 0.05 - faint * 0.01
    lesion = {k: (v - 0.5) / 0.01 / 2 for k, v in (("b", baseline), ("f", followup))}
    return Visits(baseline, followup, lesion["b"], lesion["f"], brain, brain * 1.0, 1.0), new, gone


def test_blobs_find_changes_too_faint_for_any_voxel():
    """Averaged over a lesion's extent, a change of 1.5 noise spreads a voxel stands out: the
    blob statistic finds the new lesion and the fading one (types and places), which the
    voxel rule does not; the same visits without the changes give nothing."""
    from brainuad.longitudinal.blobs import BlobConfig, detect_blobs, statistic

    visits, new, gone = _pair_with()
    cfg = BlobConfig(edge_mm=0, lesion=0.5, threshold=5.0, tolerance_mm=0)
    change = detect_blobs(visits, cfg)
    assert sorted(c["type"] for c in change.components) == ["new", "shrinking or resolving"]
    assert change.mask[22, 22, 22] == 1 and change.mask[37, 37, 37] == 2
    assert not detect_change(visits, ChangeConfig(threshold=5, lesion=0.5, median_mm=1,
                                                  edge_mm=0)).mask.any()
    quiet, _, _ = _pair_with(faint=0.0)
    quiet.lesion_followup = quiet.lesion_baseline  # no lesion faded either
    stat = statistic(quiet, cfg)
    assert stat.peaks.max(initial=0) < 5.0
    assert 0.3 < np.abs(statistic(visits, cfg).z).max() / 10 < 3  # z in spreads, not raw


def _detector_file(tmp_path, **changes):
    settings = {f.name: f.default for f in fields(ChangeConfig) if f.name != "threshold"}
    data = {"name": "rule", "version": "9", "settings": {**settings, "lesion": 1.0},
            "null": {"thresholds": [3.0, 4.0, 5.0], "mean_false_ml": [0.5, 0.2, 0.05],
                     "max_false_ml": [1.0, 0.4, 0.1], "scans": ["a", "b"]},
            "false_ml": 0.1, "chosen": "by hand"}
    for key, value in changes.items():
        (data["null"] if key in data["null"] else data)[key] = value
    path = tmp_path / f"detector-{len(list(tmp_path.iterdir()))}.json"
    path.write_text(json.dumps(data))
    return path


def test_the_operating_point_picks_the_lowest_threshold_within_the_false_volume(tmp_path):
    from brainuad.longitudinal.calibration import shipped

    detector = shipped(_detector_file(tmp_path))
    assert detector.threshold() == 5.0  # 0.05 ml <= the default 0.1
    assert detector.threshold(0.2) == 4.0 and detector.threshold(1.0) == 3.0
    assert detector.config(0.2) == ChangeConfig(lesion=1.0, threshold=4.0)
    assert detector.describe(0.5)["threshold"] == 3.0
    with pytest.raises(BrainUADError, match="must be >= 0"):
        detector.threshold(-0.1)
    with pytest.raises(BrainUADError, match="below what the detector's strictest threshold"):
        detector.threshold(0.01)
    # the shipped one: every setting written out, its default point 3.0 spreads (0.062 ml)
    default = shipped()
    assert set(default.settings) == {f.name for f in fields(ChangeConfig)} - {"threshold"}
    assert default.threshold() == 3.0 and default.describe()["null_false_ml"] <= 0.1


@pytest.mark.parametrize(("changes", "reason"), [
    ({"mean_false_ml": [0.5, 0.2]}, "differ in number"),
    ({"thresholds": [3.0, 5.0, 4.0]}, "not increasing"),
    ({"settings": {"lesions": 1.0}}, "unknown settings"),
    ({"settings": {"lesion": 1.0}}, "missing"),
    ({"thresholds": ["x", 4.0, 5.0]}, "could not convert"),
])
def test_a_damaged_detector_file_is_one_line_naming_it(tmp_path, changes, reason):
    from brainuad.longitudinal.calibration import shipped

    path = _detector_file(tmp_path, **changes)
    with pytest.raises(BrainUADError, match=f"{path.name}: compare's detector cannot be read"
                                            f".*{reason}"):
        shipped(path)
    path.write_text("{not json")
    with pytest.raises(BrainUADError, match="cannot be read"):
        shipped(path)

"""`brainuad compare`: two visits of one person in, new and enlarging lesions out."""

import csv
import json
from dataclasses import replace

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
from brainuad.io.images import load_scan, save_volume
from brainuad.longitudinal.change import ChangeConfig, detect_change
from brainuad.longitudinal.visits import Visits
from brainuad.preprocessing.pipeline import PreprocessConfig
from brainuad.preprocessing.registration import RegistrationConfig
from conftest import fetched_urls

QUICK = PreprocessConfig(registration=RegistrationConfig(
    shrink=(4, 2), smoothing_mm=(2.0, 1.0), iterations=40, sampling=(0.2, 0.05)))


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
    lesion = {k: (v - 0.5) / 0.01 / 20 for k, v in (("b", baseline), ("f", followup))}
    visits = Visits(baseline, followup, lesion["b"], lesion["f"], brain, brain * 1.0, 1.0)
    # a 36 mm box of "white matter": no part of it lies 8 mm deep enough for the edge rule
    change = detect_change(visits, ChangeConfig(threshold=5, lesion=2, min_voxels=10,
                                                median_size=1, edge_mm=0))
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
    cfg = ChangeConfig(threshold=5, lesion=2, min_voxels=10, median_size=1)
    mask = detect_change(visits, cfg).mask
    assert mask[30, 30, 30] == 1 and not mask[:12].any()
    assert detect_change(visits, replace(cfg, edge_mm=0)).mask[5, 30, 30] == 1


def test_a_lesion_edge_that_moved_within_a_thick_slice_is_no_change():
    """A lesion whose edge moved by 2 mm is grown on 1 mm slices, and is the same lesion where
    one visit has 6 mm slices (where an edge lies within a slice is not known)."""
    rng = np.random.default_rng(2)
    shape = (60, 60, 60)
    brain = np.zeros(shape, bool)
    brain[2:-2, 2:-2, 2:-2] = True
    baseline, followup = (0.5 + rng.normal(0, 0.01, shape) for _ in range(2))
    baseline[25:33, 25:33, 25:33] = 1.0
    followup[25:35, 25:35, 25:35] = 1.0  # the same lesion, 2 mm further at three faces
    lesion = {k: (v - 0.5) / 0.01 / 20 for k, v in (("b", baseline), ("f", followup))}
    cfg = ChangeConfig(threshold=5, lesion=2, min_voxels=10, median_size=1)
    thin = Visits(baseline, followup, lesion["b"], lesion["f"], brain, brain * 1.0, 1.0)
    assert detect_change(thin, cfg).mask.any()
    thick = replace(thin, slice_mm=6.0)
    assert not detect_change(thick, cfg).mask.any()


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
    with open(folder / "changes.csv") as handle:
        table = list(csv.DictReader(handle))
    assert sum(float(r["volume_ml"]) for r in table) == pytest.approx(
        (mask > 0).sum() * voxel_ml, abs=0.05)
    page = (folder / "report.html").read_text()
    assert 'src="data:image/png;base64,' in page and not fetched_urls(page)


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
    cfg = BlobConfig(edge_mm=0, lesion=0.5, threshold=5.0)
    change = detect_blobs(visits, cfg)
    assert sorted(c["type"] for c in change.components) == ["new", "shrinking or resolving"]
    assert change.mask[22, 22, 22] == 1 and change.mask[37, 37, 37] == 2
    assert not detect_change(visits, ChangeConfig(threshold=5, lesion=0.5, median_size=1,
                                                  edge_mm=0)).mask.any()
    quiet, _, _ = _pair_with(faint=0.0)
    quiet.lesion_followup = quiet.lesion_baseline  # no lesion faded either
    stat = statistic(quiet, cfg)
    assert stat.peaks.max(initial=0) < 5.0
    assert 0.3 < np.abs(statistic(visits, cfg).z).max() / 10 < 3  # z in spreads, not raw

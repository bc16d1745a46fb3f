"""`brainuad bids`: a BIDS study in, BIDS derivatives and a cohort table out. segment's and
compare's heavy work is stubbed here (conftest.stub_heavy_work): these tests check names,
sidecars, tables and the validator; the real pipeline through `bids` runs in
test_realdata.py (real raw FLAIRs) and test_interrupted.py (killed and rerun)."""

import csv
import json
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from brainuad.commands.bids_app import BidsOptions, group, participant
from brainuad.commands.cli import app
from brainuad.commands.compare import CompareOptions
from brainuad.commands.segment import SegmentOptions
from brainuad.errors import BrainUADError
from brainuad.preprocessing.pipeline import PreprocessConfig
from brainuad.preprocessing.registration import RegistrationConfig
from conftest import bids_validator, fetched_urls, stub_heavy_work, tiny_scan

QUICK = PreprocessConfig(registration=RegistrationConfig(
    shrink=(4, 2), smoothing_mm=(2.0, 1.0), iterations=40, sampling=(0.2, 0.05)))
OPTIONS = BidsOptions(segment=SegmentOptions(accelerator="cpu", preprocess=QUICK),
                      compare=CompareOptions(preprocess=QUICK))


def _description(root):
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.10.0", "Authors": ["a", "b"]}))
    (root / "README").write_text("A tiny synthetic study.\n")


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """sub-01 with two sessions (a lesion brighter at the second), sub-02 with one."""
    root = tmp_path_factory.mktemp("bids")
    for (sub, ses), lesion in {("01", "01"): 300, ("01", "02"): 700, ("02", "01"): 400}.items():
        anat = root / f"sub-{sub}" / f"ses-{ses}" / "anat"
        tiny_scan(anat / f"sub-{sub}_ses-{ses}_FLAIR.nii.gz", int(sub) * 10 + int(ses), lesion)
        (anat / f"sub-{sub}_ses-{ses}_FLAIR.json").write_text("{}")
    _description(root)
    return root


@pytest.fixture(scope="module")
def stubbed_module():
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield stub_heavy_work(monkeypatch)


@pytest.fixture(scope="module")
def derivatives(study, stubbed_module, tmp_path_factory):
    out = tmp_path_factory.mktemp("derivatives")
    done = participant(study, out, OPTIONS)
    return out, done


def test_participant_writes_bids_derivatives_with_sidecars(study, derivatives):
    out, done = derivatives
    assert len(done) == 4  # three scans, one pair
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "brainuad"
    assert "flair-ms" in description["GeneratedBy"][0]["Description"]
    anat = out / "sub-01" / "ses-02" / "anat"
    prefix = "sub-01_ses-02"
    names = sorted(p.name for p in anat.iterdir())
    assert names == sorted(f"{prefix}_{suffix}" for suffix in (
        "space-orig_desc-lesion_mask.nii.gz", "space-orig_desc-lesion_mask.json",
        "space-orig_desc-brain_mask.nii.gz", "space-orig_desc-brain_mask.json",
        "space-orig_desc-anomaly_score.nii.gz", "space-orig_desc-anomaly_score.json",
        "desc-lesion_lesions.tsv", "desc-lesion_report.html",
        "space-orig_desc-change_dseg.nii.gz", "space-orig_desc-change_dseg.json",
        "space-orig_desc-change_dseg.tsv",
        "space-orig_desc-change_score.nii.gz", "space-orig_desc-change_score.json",
        "desc-change_changes.tsv", "desc-change_report.html"))
    source = study / "sub-01" / "ses-02" / "anat" / f"{prefix}_FLAIR.nii.gz"
    mask = nib.load(anat / f"{prefix}_space-orig_desc-lesion_mask.nii.gz")
    assert mask.shape == nib.load(source).shape
    sidecar = json.loads((anat / f"{prefix}_space-orig_desc-lesion_mask.json").read_text())
    assert sidecar["Sources"] == [f"bids:raw:sub-01/ses-02/anat/{prefix}_FLAIR.nii.gz"]
    assert sidecar["Type"] == "Lesion" and sidecar["lesions"] > 0
    assert "at_normal_variant_sites" in sidecar  # null here: the stub model's grid has no sites
    assert {"threshold", "rule", "registration"} <= set(sidecar)
    change = json.loads((anat / f"{prefix}_space-orig_desc-change_dseg.json").read_text())
    assert change["baseline_session"] == "01" and len(change["Sources"]) == 2
    assert change["changes"]["new"]["count"] > 0
    # the detector and its operating point (the shipped default)
    assert change["detector"]["false_ml"] == 0.1 and change["detector"]["threshold"] > 0
    # the first session and the other subject: no change outputs
    assert not list((out / "sub-01" / "ses-01" / "anat").glob("*change*"))
    assert not list((out / "sub-02").rglob("*change*"))
    assert not (out / ".work").exists() or not any((out / ".work").iterdir())


def test_a_rerun_skips_what_is_done(study, derivatives, stubbed_module):
    out, _ = derivatives
    sidecar = out / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_space-orig_desc-lesion_mask.json"
    before = sidecar.stat().st_mtime_ns
    participant(study, out, BidsOptions(participants=["02"], segment=OPTIONS.segment))
    assert sidecar.stat().st_mtime_ns == before


def test_the_output_passes_the_bids_validator(derivatives):
    """With nothing that has a BIDS name hidden from it: the masks (`_mask`) and the change
    segmentation (`_dseg` and its labels) are validated."""
    from fnmatch import fnmatch

    from brainuad.commands.bids_app import BIDSIGNORE

    out, _ = derivatives
    for path in out.rglob("*"):
        suffix = path.name.split(".")[0].rsplit("_", 1)[-1]
        if any(fnmatch(path.name, p.strip("/")) for p in BIDSIGNORE):
            assert suffix not in {"mask", "dseg", "probseg", "FLAIR", "T1w", "T2w"}, path
    validator = bids_validator()
    result = subprocess.run([validator, str(out), "--json"], capture_output=True, text=True,
                            timeout=120)
    issues = json.loads(result.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]
    assert errors == []


def test_group_writes_the_study_table_and_index(derivatives):
    out, _ = derivatives
    rows = group(out)
    table = list(csv.DictReader((out / "lesions.tsv").read_text().splitlines(),
                                delimiter="\t"))
    assert [(r["subject"], r["session"]) for r in table] == [("01", "01"), ("01", "02"),
                                                            ("02", "01")]
    assert len(rows) == 3
    assert table[1]["baseline_session"] == "01" and int(table[1]["new_count"]) > 0
    assert table[0]["new_count"] == "n/a"
    assert float(table[2]["lesion_volume_ml"]) > 0
    page = (out / "index.html").read_text()
    assert 'href="sub-01/ses-02/anat/sub-01_ses-02_desc-change_report.html"' in page
    assert page.count("data:image/png;base64,") == 2  # volumes over visits; lesions, pairs
    assert all('alt="' in tag for tag in re.findall(r"<img[^>]*>", page))
    assert 'class="sortable"' in page and not fetched_urls(page)


def test_input_errors_name_the_file_and_the_problem(study, stubbed_module, tmp_path):
    with pytest.raises(BrainUADError, match="not a BIDS dataset"):
        participant(tmp_path, tmp_path / "out", OPTIONS)
    with pytest.raises(BrainUADError, match="no FLAIR found for participant 09"):
        participant(study, tmp_path / "out", BidsOptions(participants=["09"]))
    twice = tmp_path / "twice"
    shutil.copytree(study, twice)
    anat = twice / "sub-02" / "ses-01" / "anat"
    shutil.copy(anat / "sub-02_ses-01_FLAIR.nii.gz", anat / "sub-02_ses-01_acq-2d_FLAIR.nii.gz")
    with pytest.raises(BrainUADError, match="no run- entity"):
        participant(twice, tmp_path / "out", OPTIONS)
    with pytest.raises(BrainUADError, match="shard"):
        participant(study, tmp_path / "out", BidsOptions(shard="3/2"))


def test_a_bad_scan_does_not_stop_the_others_with_keep_going(study, stubbed_module, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(study, broken)
    (broken / "sub-02" / "ses-01" / "anat" / "sub-02_ses-01_FLAIR.nii.gz").write_bytes(b"no")
    result = CliRunner().invoke(app, ["bids", str(broken), str(tmp_path / "out"),
                                      "participant", "--session-label", "01",
                                      "--keep-going", "--accelerator", "cpu"])
    assert result.exit_code == 1 and "sub-02_ses-01_FLAIR.nii.gz" in result.output
    assert (tmp_path / "out" / "sub-01" / "ses-01" / "anat" /
            "sub-01_ses-01_space-orig_desc-lesion_mask.nii.gz").is_file()
    result = CliRunner().invoke(app, ["bids", str(broken), str(tmp_path / "out"), "cohort"])
    assert result.exit_code == 1 and "choose participant or group" in result.output


def test_shards_split_by_subject():
    from pathlib import Path

    from brainuad.commands.bids_app import Scan, _shard

    scans = [Scan(Path(f"sub-{s}_ses-{v}_FLAIR.nii.gz"), s, v)
             for s, v in (("01", "1"), ("01", "2"), ("02", "1"), ("03", "1"))]
    first, second = _shard(scans, "1/2"), _shard(scans, "2/2")
    assert {s.subject for s in first} == {"01", "03"} and len(first) == 3
    assert [s.subject for s in second] == ["02"]
    assert np.all([s.prefix.startswith("sub-") for s in scans])

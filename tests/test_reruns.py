"""Issue 37: no silent wrong answers on a rerun. Every output folder records what made it, a
rerun redoes what was made otherwise (and says why) and keeps the rest; a run killed after any
step completes on a rerun to exactly the files of a run that was never killed; BIDS sessions
are paired in time order and stale pairs removed.

The heavy work (registration, scoring, the change detector) is stubbed here by cheap stand-ins
on tiny volumes, so the tests check the bookkeeping in a second each: the steps themselves are
tested in test_segment, test_compare and test_bids, and a real SIGKILL in test_interrupted."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from brainuad.commands import bids_app
from brainuad.commands import segment as segment_command
from brainuad.commands.bids_app import BidsOptions, group, participant
from brainuad.commands.cli import app
from brainuad.commands.compare import CompareOptions, compare_scans
from brainuad.commands.segment import SegmentOptions, segment_scans
from brainuad.io import files
from brainuad.preprocessing.registration import RegistrationConfig
from conftest import tiny_scan


class Killed(BaseException):
    """The process stops here (not an Exception: no `--keep-going` catches it)."""


class _Os:
    """`os` as io/files sees it, killed right after its `kill_at`-th rename; after that no
    clean-up happens either (`shutil.rmtree` in io/files does nothing), as after a SIGKILL."""

    def __init__(self, kill_at: int | None) -> None:
        self.kill_at, self.renames, self.dead = kill_at, 0, False

    def __getattr__(self, name):
        return getattr(os, name)

    def replace(self, source, target):
        os.replace(source, target)
        self.renames += 1
        if self.renames == self.kill_at:
            self.dead = True
            raise Killed


def _run(monkeypatch, fn, kill_at: int | None = None) -> int:
    """`fn()` with renames counted (and killed at `kill_at`): how many renames it made."""
    fake = _Os(kill_at)
    monkeypatch.setattr(files, "os", fake)
    monkeypatch.setattr(files, "shutil", SimpleNamespace(
        rmtree=lambda *a, **k: None if fake.dead else shutil.rmtree(*a, **k)))
    try:
        fn()
    finally:
        monkeypatch.setattr(files, "os", os)
        monkeypatch.setattr(files, "shutil", shutil)
    return fake.renames


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _killed_at_every_step_then_rerun(monkeypatch, tmp_path, run) -> int:
    """`run(out)` killed after each of its renames in turn, then rerun: the files are those of
    a run never killed. Returns the number of steps."""
    steps = _run(monkeypatch, lambda: run(tmp_path / "straight"))
    want = _snapshot(tmp_path / "straight")
    for k in range(1, steps + 1):
        out = tmp_path / f"killed-{k}"
        with pytest.raises(Killed):
            _run(monkeypatch, lambda out=out: run(out), kill_at=k)
        run(out)
        got = _snapshot(out)
        assert got.keys() == want.keys(), f"killed after step {k}"
        assert [name for name in want if got[name] != want[name]] == [], f"after step {k}"
    return steps


def test_segment_killed_after_any_step_completes_on_a_rerun(stubbed, monkeypatch, tmp_path):
    scans = [tiny_scan(tmp_path / "in" / "a.nii.gz", 0, 400),
             tiny_scan(tmp_path / "in" / "b.nii.gz", 1)]
    options = SegmentOptions(accelerator="cpu")
    steps = _killed_at_every_step_then_rerun(
        monkeypatch, tmp_path, lambda out: segment_scans(scans, out, options))
    assert steps >= 12  # per scan: 3 volumes, table, report, summary, folder; summary.csv


def test_compare_killed_after_any_step_completes_on_a_rerun(stubbed, monkeypatch, tmp_path):
    before, after = tiny_scan(tmp_path / "v1.nii.gz"), tiny_scan(tmp_path / "v2.nii.gz", 1, 600)
    steps = _killed_at_every_step_then_rerun(
        monkeypatch, tmp_path,
        lambda out: compare_scans([before, after], out, CompareOptions()))
    assert steps >= 6


def _flag_fraction_threshold(options: SegmentOptions) -> float:
    return segment_command.make_job(options).threshold


def test_a_segment_rerun_follows_the_settings(stubbed, tmp_path):
    scan = tiny_scan(tmp_path / "in" / "visit.nii.gz", 0, 400)
    out = tmp_path / "out"
    summary = out / "visit" / "summary.json"

    def segment(**values) -> dict:
        segment_scans([scan], out, SegmentOptions(accelerator="cpu", **values))
        return json.loads(summary.read_text())

    first = segment()
    made = summary.stat().st_mtime_ns
    assert segment() == first and summary.stat().st_mtime_ns == made  # same: skipped
    assert stubbed.said() == ""
    stricter = segment(flag_fraction=0.001)
    assert stricter["threshold"] == _flag_fraction_threshold(
        SegmentOptions(flag_fraction=0.001)) != first["threshold"]
    said = stubbed.said()
    assert said.startswith("visit: made with something else, redone: rule validation ")
    assert f"threshold {first['threshold']:.4g} -> {stricter['threshold']:.4g}" in said
    assert segment()["threshold"] == first["threshold"]  # and back
    stubbed.said()
    made = segment(qc="warn")["made_by"]
    assert made["settings"]["preprocess"]["registration"]["qc"] == "warn"
    assert "preprocess.registration.qc refuse -> warn" in stubbed.said()
    tiny_scan(scan, 5, 400)  # another scan copied over the same path
    assert segment(qc="warn")["made_by"]["inputs"]["scan"] != made["inputs"]["scan"]
    assert stubbed.said().endswith("redone: the scan's content")
    before = summary.stat().st_mtime_ns
    segment(qc="warn", force=True)
    assert summary.stat().st_mtime_ns > before and "--force" in stubbed.said()


def test_another_model_or_its_files_redo_atiny_scan(stubbed, tmp_path):
    from brainuad.models.bundled import resolve

    scan = tiny_scan(tmp_path / "visit.nii.gz", 0, 400)
    model = tmp_path / "flair-ms-copy"
    shutil.copytree(resolve("flair-ms"), model)
    out = tmp_path / "out"
    segment_scans([scan], out, SegmentOptions(accelerator="cpu"))
    segment_scans([scan], out, SegmentOptions(model=model, accelerator="cpu"))
    assert stubbed.said() == ""  # the same model's files: nothing to redo
    thresholds = json.loads((model / "threshold.json").read_text())
    (shipped,) = [point["threshold"] for point in thresholds["operating_points"].values()]
    for point in thresholds["operating_points"].values():
        point["threshold"] += 0.5
    (model / "threshold.json").write_text(json.dumps(thresholds))
    segment_scans([scan], out, SegmentOptions(model=model, accelerator="cpu"))
    said = stubbed.said()
    assert "model flair-ms's files" in said
    assert f"threshold {shipped:.4g} -> {shipped + 0.5:.4g}" in said


def test_an_older_output_without_a_record_is_redone_and_another_version_is_said(
        stubbed, tmp_path):
    scan = tiny_scan(tmp_path / "visit.nii.gz", 0, 400)
    out = tmp_path / "out"
    segment_scans([scan], out, SegmentOptions(accelerator="cpu"))
    summary = out / "visit" / "summary.json"
    values = json.loads(summary.read_text())
    values["made_by"]["brainuad"] = "0.0.9"
    summary.write_text(json.dumps(values))
    segment_scans([scan], out, SegmentOptions(accelerator="cpu"))
    assert "made by brainuad 0.0.9" in stubbed.said()
    assert json.loads(summary.read_text())["made_by"]["brainuad"] == "0.0.9"  # kept
    del values["made_by"]
    summary.write_text(json.dumps(values))
    segment_scans([scan], out, SegmentOptions(accelerator="cpu"))
    assert "no record of what made it" in stubbed.said()
    assert "made_by" in json.loads(summary.read_text())


def test_a_compare_rerun_follows_its_inputs_and_settings(stubbed, tmp_path):
    before, after = tiny_scan(tmp_path / "v1.nii.gz"), tiny_scan(tmp_path / "v2.nii.gz", 1, 600)
    out = tmp_path / "out"
    summary = out / "v1-v2" / "summary.json"
    compare_scans([before, after], out, CompareOptions())
    made = summary.stat().st_mtime_ns
    compare_scans([before, after], out, CompareOptions())
    assert summary.stat().st_mtime_ns == made and stubbed.said() == ""
    compare_scans([before, after], out, CompareOptions(preprocess=replace_qc("warn")))
    assert "qc refuse -> warn" in stubbed.said()
    tiny_scan(before, 3)
    compare_scans([before, after], out, CompareOptions(preprocess=replace_qc("warn")))
    assert "the baseline's content" in stubbed.said()


def replace_qc(qc: str):
    from brainuad.preprocessing.pipeline import PreprocessConfig

    return PreprocessConfig(registration=RegistrationConfig(qc=qc))


# --- BIDS: sessions in time order, stale pairs, crash safety --------------------------------

def _study(root: Path, sessions: dict[str, float], times: dict[str, str] | None = None,
           where: str = "sessions") -> Path:
    """sub-01 with a FLAIR per session (`sessions`: label -> the lesion's brightness, growing
    over time) and, with `times`, their acq_time in sessions.tsv or scans.tsv."""
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "tiny", "BIDSVersion": "1.10.0", "Authors": ["a", "b"]}))
    (root / "README").write_text("A tiny synthetic study.\n")
    for i, (label, lesion) in enumerate(sessions.items()):
        anat = root / "sub-01" / f"ses-{label}" / "anat"
        tiny_scan(anat / f"sub-01_ses-{label}_FLAIR.nii.gz", i, lesion)
        (anat / f"sub-01_ses-{label}_FLAIR.json").write_text("{}")
        if times and where == "scans":
            (anat.parent / f"sub-01_ses-{label}_scans.tsv").write_text(
                f"filename\tacq_time\nanat/sub-01_ses-{label}_FLAIR.nii.gz\t{times[label]}\n")
    if times and where == "sessions":
        (root / "sub-01" / "sub-01_sessions.tsv").write_text(
            "session_id\tacq_time\n" + "".join(f"ses-{k}\t{v}\n" for k, v in times.items()))
    return root


def _change(out: Path, session: str) -> dict | None:
    path = (out / "sub-01" / f"ses-{session}" / "anat" /
            f"sub-01_ses-{session}_space-orig_desc-change_dseg.json")
    return json.loads(path.read_text()) if path.is_file() else None


BIDS = BidsOptions(segment=SegmentOptions(accelerator="cpu"))


def test_sessions_are_paired_in_time_not_text_order(stubbed, tmp_path):
    study = _study(tmp_path / "numbers", {"2": 300, "10": 600})
    participant(study, tmp_path / "out", BIDS)
    assert _change(tmp_path / "out", "2") is None
    change = _change(tmp_path / "out", "10")
    assert change["baseline_session"] == "2"
    assert change["sessions_ordered_by"] == "numbers in the labels"
    assert change["changes"]["new"]["count"] == 1  # grown, not shrunk
    for where in ("sessions", "scans"):
        study = _study(tmp_path / where, {"pre": 300, "post": 600},
                       {"pre": "2020-01-01T09:00:00", "post": "2021-01-01T09:00:00"}, where)
        participant(study, tmp_path / f"out-{where}", BIDS)
        change = _change(tmp_path / f"out-{where}", "post")
        assert change["baseline_session"] == "pre", where
        assert change["sessions_ordered_by"] == "acquisition times"
    rows = group(tmp_path / "out")
    assert [(r["session"], r["visit"]) for r in rows] == [("2", 1), ("10", 2)]
    assert rows[1]["sessions_ordered_by"] == "numbers in the labels"


def test_sessions_whose_order_cannot_be_told_are_not_paired_unless_stated(stubbed, tmp_path):
    study = _study(tmp_path / "study", {"pre": 300, "post": 600})
    out = tmp_path / "out"
    done = participant(study, out, BIDS)
    assert len(done) == 2 and _change(out, "post") is None and _change(out, "pre") is None
    assert "sub-01: the order of the visits post, pre cannot be told" in stubbed.said()
    assert [r["visit"] for r in group(out)] == ["n/a", "n/a"]
    participant(study, out, BidsOptions(segment=BIDS.segment, session_order=["post", "pre"]))
    assert _change(out, "pre")["baseline_session"] == "post"
    assert _change(out, "pre")["sessions_ordered_by"] == "stated order"
    stubbed.said()
    # stated the other way round: the old pair is removed, the new one made
    participant(study, out, BidsOptions(segment=BIDS.segment, session_order=["pre", "post"]))
    assert _change(out, "pre") is None and _change(out, "post")["baseline_session"] == "pre"
    assert not list((out / "sub-01" / "ses-pre").rglob("*change*"))
    assert "sub-01_ses-pre: no longer a follow-up" in stubbed.said()


def test_a_session_added_later_repairs_the_subject(stubbed, tmp_path):
    study = _study(tmp_path / "study", {"1": 300, "3": 700})
    out = tmp_path / "out"
    participant(study, out, BIDS)
    assert _change(out, "3")["baseline_session"] == "1"
    _study(study, {"1": 300, "2": 500, "3": 700})
    participant(study, out, BIDS)
    assert _change(out, "2")["baseline_session"] == "1"
    assert _change(out, "3")["baseline_session"] == "2"  # replaced, not left beside
    assert [(r["session"], r["visit"]) for r in group(out)] == [("1", 1), ("2", 2), ("3", 3)]


def test_bids_killed_after_any_step_completes_on_a_rerun(stubbed, monkeypatch, tmp_path):
    study = _study(tmp_path / "study", {"1": 300, "2": 600})
    found = bids_app.find_scans(study, "flair", BIDS)  # pybids once, not at every run
    monkeypatch.setattr(bids_app, "find_scans", lambda *args: found)
    steps = _killed_at_every_step_then_rerun(
        monkeypatch, tmp_path, lambda out: participant(study, out, BIDS))
    assert steps >= 20


def test_the_cli_says_force_and_the_session_order(tmp_path):
    for command in ("segment", "compare", "bids"):
        result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert "--force" in result.output, command
    result = CliRunner().invoke(app, ["bids", "--help"], terminal_width=200)
    assert "--session-order" in result.output
    result = CliRunner().invoke(app, ["bids", str(tmp_path), str(tmp_path / "o"),
                                      "participant", "--session-order", "pre"])
    assert result.exit_code == 1 and "two or more different labels" in result.output

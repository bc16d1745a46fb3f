"""Issue 9: hostile input for every command that reads scans, --keep-going, unsafe names,
changed manifests, old run directories.

One small cohort is prepared, trained (tiny AnoVAEGAN) and detected once per module, under a
folder name with spaces and non-ASCII characters (which must simply work); each test copies what
it breaks.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from brainuad.commands.cli import app
from conftest import PicklePayload, make_cohort, write_nifti

runner = CliRunner()
PROGRESS_BAR = re.compile(r"^[\w ]+: +\d+%\|")
TINY = "model: {image_size: 32, width: 4, max_width: 8}\ntrain: {epochs: 1, batch_size: 4}\n"


def invoke(*args) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """raw/ (a toy cohort), prep/ (preprocessed), run/ (tiny AnoVAEGAN), run/pred (detections)."""
    root = tmp_path_factory.mktemp("reliability") / "Kohorte mit Leerzeichen äöü"
    make_cohort(root / "raw")
    (root / "tiny.yaml").write_text(TINY)
    steps = [
        ("preprocess", root / "raw" / "manifest.csv", root / "prep", "--register", "never"),
        ("train", root / "prep" / "manifest.csv", root / "run", "--model", "anovaegan",
         "--config", root / "tiny.yaml"),
        ("detect", root / "run", root / "prep" / "manifest.csv", "--split", "test"),
        ("evaluate", root / "run", root / "prep" / "manifest.csv"),
    ]
    for step in steps:
        code, output = invoke(*step)
        assert code == 0, f"{step[0]} on a path with spaces and umlauts: {output}"
    assert (root / "run" / "eval" / "summary.json").is_file()
    return root


def copy(base: Path, tmp_path: Path, *names: str) -> Path:
    work = tmp_path / "work é"
    for name in names:
        shutil.copytree(base / name, work / name)
    return work


# --- how each kind of bad file is made, and what the error must say ------------------------------

def _valid(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(str(path))
    return np.asarray(image.dataobj), image.affine


def _rewrite(change):
    def make(path: Path) -> None:
        data, affine = _valid(path)
        data, affine = change(np.array(data, dtype=np.float32), affine.copy())
        path.unlink()
        write_nifti(path, data, affine)
    return make


def _truncated(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _nan(data, affine):
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] = np.nan
    return data, affine


def _inf(data, affine):
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] = np.inf
    return data, affine


def _shifted(data, affine):
    affine[:3, 3] += 7.0
    return data, affine


def _non_binary(data, affine):
    data[data.shape[0] // 2, data.shape[1] // 2, data.shape[2] // 2] = 2
    return data, affine


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


KINDS = {
    "truncated": (_truncated, "cannot be read as NIfTI"),
    "not-nifti": (lambda p: p.write_bytes(gzip.compress(b"plain text, not an image\n" * 20)),
                  "cannot be read as NIfTI"),
    "empty-file": (lambda p: p.write_bytes(b""), "file is empty"),
    "2d": (_rewrite(lambda d, a: (d[:, :, d.shape[2] // 2], a)), "expected a 3D image"),
    "4d": (_rewrite(lambda d, a: (np.stack([d, d], axis=-1), a)), "expected a 3D image"),
    "nan": (_rewrite(_nan), "NaN"),
    "inf": (_rewrite(_inf), "infinite"),
    "constant": (_rewrite(lambda d, a: (np.full_like(d, 3.0), a)), "constant"),
    "other-shape": (_rewrite(lambda d, a: (d[:-2], a)), "differs from its image"),
    "other-affine": (_rewrite(_shifted), "affine differs"),
    "not-0-1": (_rewrite(_non_binary), "only 0 and 1"),
    "missing": (lambda p: p.unlink(), "does not exist"),
    "directory": (_directory, "is a directory"),
}

# (stage, kind) -> which file of the subject gets broken. Train reads healthy train subjects
# (sub-h00), detect the test subjects (sub-p04), evaluate the lesion labels; a label's values
# and a mask's geometry are checked against the scan they belong to.
IMAGE_KINDS = ("truncated", "not-nifti", "empty-file", "2d", "4d", "nan", "inf", "constant",
               "missing", "directory")
TARGETS = {
    "preprocess": {**dict.fromkeys(IMAGE_KINDS, "flair"), "other-shape": "mask",
                   "other-affine": "mask", "not-0-1": "label"},
    "train": {**dict.fromkeys(IMAGE_KINDS, "flair"), "other-shape": "mask",
              "other-affine": "mask", "not-0-1": "mask"},
    "detect": {**dict.fromkeys(IMAGE_KINDS, "flair"), "other-shape": "mask",
               "other-affine": "mask", "not-0-1": "mask"},
    # a lesion label may be all 0 (or all 1): "constant" is no error for a label
    "evaluate": {**{k: "label" for k in IMAGE_KINDS if k != "constant"},
                 "other-shape": "label", "other-affine": "label", "not-0-1": "label"},
}
CASES = [(stage, kind) for stage, kinds in TARGETS.items() for kind in kinds]


def _command(stage: str, work: Path, base: Path, out: Path) -> list:
    """The stage's command on the copied data in `work`, writing to `out`."""
    prep = work / "prep" / "manifest.csv"
    return {
        "preprocess": ["preprocess", work / "raw" / "manifest.csv", out, "--register", "never"],
        "train": ["train", prep, out, "--model", "anovaegan", "--config", base / "tiny.yaml"],
        "detect": ["detect", base / "run", prep, "--split", "test", "--out", out],
        "evaluate": ["evaluate", work / "run" / "pred", prep, "--out", out],
    }[stage]


def _stage_copy(stage: str, base: Path, tmp_path: Path) -> Path:
    work = copy(base, tmp_path, "raw", "prep")  # prep's manifest points at raw's labels
    if stage == "evaluate":
        shutil.copytree(base / "run" / "pred", work / "run" / "pred")
    return work


def _file(work: Path, stage: str, subject: str, column: str) -> Path:
    """The subject's file that `stage` reads for `column` (labels stay where the raw data is)."""
    folder = "raw" if stage == "preprocess" or column == "label" else "prep"
    return work / folder / subject / f"{column}.nii.gz"


def _subject(stage: str) -> str:
    return "sub-h00" if stage == "train" else "sub-p04"


def _assert_one_clear_line(code: int, output: str, *names: str) -> str:
    assert code == 1, output
    assert "Traceback" not in output
    # progress bars (on stderr, as in a terminal) aside, the output is the one error line
    lines = [line for line in re.split(r"[\r\n]+", output)
             if line.strip() and not PROGRESS_BAR.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for name in names:
        assert name in lines[0], output
    return lines[0]


def _assert_nothing_partial(stage: str, out: Path, subject: str) -> None:
    assert not list(out.parent.rglob("*.partial-*")), "a temporary file was left behind"
    if stage in ("train", "evaluate"):  # no half-made run directory or evaluation folder
        assert not out.exists()
    else:  # subjects before the broken one are complete; the broken one has no folder
        assert not (out / subject).exists()
        assert not (out / "manifest.csv").exists()


@pytest.mark.parametrize("stage, kind", CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_bad_file_is_one_clear_line_and_leaves_nothing_partial(base, tmp_path, stage, kind):
    work = _stage_copy(stage, base, tmp_path)
    subject = _subject(stage)
    column = TARGETS[stage][kind]
    broken = _file(work, stage, subject, column)
    make, expected = KINDS[kind]
    make(broken)
    out = tmp_path / "out"
    code, output = invoke(*_command(stage, work, base, out))
    line = _assert_one_clear_line(code, output, expected)
    # the file is named: the broken one, or the manifest line whose path is gone
    assert str(broken) in line or (kind in ("missing", "directory") and broken.name in line)
    _assert_nothing_partial(stage, out, subject)


MANIFEST_KINDS = {
    "missing-column": (lambda text: text.replace("health,", "", 1), "missing column(s) health"),
    "empty-manifest": (lambda text: text.splitlines()[0] + "\n", "no subjects"),
    "header-only-no-image": (lambda text: "subject,split,health\n", "no image column"),
    "unsafe-name": (lambda text: text.replace("sub-p04,", "../../escaped,", 1),
                    "cannot be a folder name"),
}
MANIFEST_CASES = [(stage, kind) for stage in TARGETS for kind in MANIFEST_KINDS]


@pytest.mark.parametrize("stage, kind", MANIFEST_CASES,
                         ids=[f"{s}-{k}" for s, k in MANIFEST_CASES])
def test_bad_manifest_is_refused_before_anything_is_written(base, tmp_path, stage, kind):
    work = _stage_copy(stage, base, tmp_path)
    manifest = work / ("raw" if stage == "preprocess" else "prep") / "manifest.csv"
    change, expected = MANIFEST_KINDS[kind]
    manifest.write_text(change(manifest.read_text()))
    out = tmp_path / "out"
    code, output = invoke(*_command(stage, work, base, out))
    _assert_one_clear_line(code, output, expected, str(manifest))
    assert not out.exists()
    assert not (tmp_path / "escaped").exists() and not (work / "escaped").exists()


def test_debug_shows_the_traceback_instead(base, tmp_path):
    work = copy(base, tmp_path, "prep")
    (work / "prep" / "sub-p04" / "flair.nii.gz").write_bytes(b"")
    result = runner.invoke(app, ["--debug", "detect", str(base / "run"),
                                 str(work / "prep" / "manifest.csv"), "--out", str(tmp_path / "o")])
    assert type(result.exception).__name__ == "BrainUADError"


# --- --keep-going ---------------------------------------------------------------------------------

@pytest.mark.parametrize("stage", ["preprocess", "train", "detect", "evaluate"])
def test_keep_going_finishes_the_others_and_names_the_failed(base, tmp_path, stage):
    work = _stage_copy(stage, base, tmp_path)
    subject = _subject(stage)
    _file(work, stage, subject, "label" if stage == "evaluate" else "flair").write_bytes(b"")
    out = tmp_path / "out"
    code, output = invoke(*_command(stage, work, base, out), "--keep-going")
    assert code == 1 and "Traceback" not in output
    assert f"{stage}: 1 of " in output and f"{subject}: " in output and "file is empty" in output
    if stage == "preprocess":
        done = (out / "manifest.csv").read_text()
        assert "sub-p05" in done and subject not in done
        assert (out / "sub-p05" / "mask.nii.gz").is_file() and not (out / subject).exists()
    elif stage == "train":
        provenance = json.loads((out / "provenance.json").read_text())
        assert list(provenance["excluded_subjects"]) == [subject]
        assert (out / "model.pt").is_file() and (out / "threshold.json").is_file()
    elif stage == "detect":
        assert (out / "sub-p05" / "mask.nii.gz").is_file() and not (out / subject).exists()
        assert (out / "sub-p05" / "timing.json").is_file()
    else:
        assert json.loads((out / "summary.json").read_text())["subjects"] == 1


# --- changed manifests, old run directories -------------------------------------------------------

def test_evaluate_warns_when_the_training_manifest_changed(base, tmp_path):
    root = copy(base, tmp_path, "raw", "prep")
    code, output = invoke("train", root / "prep" / "manifest.csv", root / "run", "--model",
                          "threshold")
    assert code == 0, output
    code, output = invoke("detect", root / "run", root / "prep" / "manifest.csv",
                          "--split", "test")
    assert code == 0, output
    code, output = invoke("evaluate", root / "run", root / "prep" / "manifest.csv")
    assert code == 0 and "warning" not in output, output
    manifest = root / "prep" / "manifest.csv"
    manifest.write_text(manifest.read_text().replace("sub-h01,train", "sub-h01,val"))
    code, output = invoke("evaluate", root / "run", manifest)
    assert code == 0, output
    assert f"warning: {manifest}: changed since run" in output
    summary = json.loads((root / "run" / "eval" / "summary.json").read_text())
    assert summary["warnings"] and "changed since run" in summary["warnings"][0]


def test_run_directory_of_an_older_config_version_says_what_to_do(base, tmp_path):
    run = tmp_path / "old run"
    shutil.copytree(base / "run", run)
    config = run / "config.yaml"
    text = config.read_text()
    assert "version:" in text
    config.write_text("\n".join("version: 0" if line.startswith("version:") else line
                                for line in text.splitlines()) + "\n")
    code, output = invoke("detect", run, base / "prep" / "manifest.csv", "--out", tmp_path / "o")
    line = _assert_one_clear_line(code, output, str(config))
    assert "retrain" in line


@pytest.mark.parametrize("missing", ["config.yaml", "model.pt", "threshold.json"])
def test_run_directory_with_a_file_missing_says_what_to_do(base, tmp_path, missing):
    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    (run / missing).unlink()
    code, output = invoke("detect", run, base / "prep" / "manifest.csv", "--out", tmp_path / "o")
    line = _assert_one_clear_line(code, output, missing)
    assert any(word in line for word in ("train", "not found", "missing"))
    assert not (tmp_path / "o").exists()


# --- reproducibility ------------------------------------------------------------------------------

def test_same_seed_and_data_give_identical_metrics_and_provenance(base, tmp_path):
    run = tmp_path / "again"
    manifest = base / "prep" / "manifest.csv"
    for step in (("train", manifest, run, "--model", "anovaegan", "--config", base / "tiny.yaml"),
                 ("detect", run, manifest, "--split", "test"), ("evaluate", run, manifest)):
        code, output = invoke(*step)
        assert code == 0, output

    def metrics(folder: Path) -> dict:
        summary = json.loads((folder / "eval" / "summary.json").read_text())
        summary.pop("seconds_per_slice")  # a timing, not a result
        return summary

    assert metrics(run) == metrics(base / "run")  # floats compared exactly
    assert (run / "eval" / "subjects.csv").read_text() == (
        base / "run" / "eval" / "subjects.csv").read_text()
    assert (run / "config.yaml").read_text() == (base / "run" / "config.yaml").read_text()
    provenance = json.loads((run / "provenance.json").read_text())
    for key in ("brainuad", "git_commit", "python", "torch", "lightning", "numpy", "manifest"):
        assert key in provenance
    assert provenance["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()


# --- untrusted files ------------------------------------------------------------------------------

def test_crafted_resume_checkpoint_is_refused_without_running_code(base, tmp_path):
    import pickle

    run = tmp_path / "run"
    shutil.copytree(base / "run", run)
    marker = tmp_path / "pwned"
    with open(run / "checkpoints" / "last.ckpt", "wb") as handle:
        pickle.dump({"state_dict": PicklePayload(str(marker))}, handle)
    code, output = invoke("train", base / "prep" / "manifest.csv", run, "--resume")
    line = _assert_one_clear_line(code, output, "last.ckpt", "refused to load")
    assert not marker.exists(), line

"""Issue 9: runs killed with SIGKILL (no cleanup code runs) lose nothing finished and resume
exactly. Each kill happens in a child process at a chosen point; marked slow (several fresh
Python processes that import torch)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from brainuad.models import folder as rundir
from conftest import make_cohort

pytestmark = pytest.mark.slow
TINY = "model: {image_size: 32, width: 4, max_width: 8}\ntrain: {epochs: 3, batch_size: 4}\n"

# The brainuad CLI, with a SIGKILL planted by BRAINUAD_KILL_AT: "train" kills at the second batch
# of the second epoch; "detect" kills while sub-p05's mask is half written (its temporary file is
# on disk, the final name is not).
CLI_WITH_KILL = """
import os, signal, sys
where = os.environ.get("BRAINUAD_KILL_AT")
if where == "train":
    from brainuad.models.common.lightning_base import SeededModule
    original = SeededModule.on_train_batch_start
    def on_train_batch_start(self, batch, batch_idx):
        if self.current_epoch == 1 and batch_idx == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, batch, batch_idx)
    SeededModule.on_train_batch_start = on_train_batch_start
elif where == "detect":
    import nibabel
    original = nibabel.save
    def save(image, filename, *args, **kwargs):
        original(image, filename, *args, **kwargs)
        if "sub-p05" in str(filename) and ".mask.nii.gz.partial-" in str(filename):
            os.kill(os.getpid(), signal.SIGKILL)
    nibabel.save = save
from brainuad.commands.cli import app
app(sys.argv[1:])
"""


def brainuad(*args, kill_at: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "BRAINUAD_KILL_AT": kill_at or ""}
    return subprocess.run([sys.executable, "-c", CLI_WITH_KILL, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("killed")
    make_cohort(root / "raw", n_healthy=4, n_patients=3)
    (root / "tiny.yaml").write_text(TINY)
    done = brainuad("preprocess", root / "raw" / "manifest.csv", root / "prep",
                    "--register", "never")
    assert done.returncode == 0, done.stderr
    return root / "prep" / "manifest.csv"


def test_train_killed_mid_epoch_resumes_to_the_same_weights(prepared, tmp_path):
    config = prepared.parent.parent / "tiny.yaml"
    straight = brainuad("train", prepared, tmp_path / "straight", "--model", "anovaegan",
                        "--config", config)
    assert straight.returncode == 0, straight.stderr
    killed = brainuad("train", prepared, tmp_path / "killed", "--model", "anovaegan",
                      "--config", config, kill_at="train")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "killed" / "model.pt").exists()  # it died before the end
    resumed = brainuad("train", prepared, tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = rundir.load_weights(tmp_path / "straight"), rundir.load_weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    thresholds = [rundir.read_threshold_info(tmp_path / run)["threshold"]
                  for run in ("straight", "killed")]
    assert thresholds[0] == thresholds[1]


def test_detect_killed_mid_cohort_skips_the_finished_and_redoes_the_cut(prepared, tmp_path):
    run = tmp_path / "run"
    assert brainuad("train", prepared, run, "--model", "threshold").returncode == 0
    reference, out = tmp_path / "reference", tmp_path / "out"
    done = brainuad("detect", run, prepared, "--split", "test", "--out", reference)
    assert done.returncode == 0, done.stderr
    killed = brainuad("detect", run, prepared, "--split", "test", "--out", out,
                      kill_at="detect")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (out / "sub-p04" / "mask.nii.gz").is_file()
    assert not (out / "sub-p05" / "mask.nii.gz").exists()
    assert list((out / "sub-p05").glob(".mask.nii.gz.partial-*")), "the kill came too late"
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "sub-p04").iterdir()}

    again = brainuad("detect", run, prepared, "--split", "test", "--out", out)
    assert again.returncode == 0, again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "sub-p04").iterdir()} == finished
    assert not list(out.rglob("*.partial-*"))
    for subject in ("sub-p04", "sub-p05", "sub-p06"):
        for name in ("score", "region", "mask"):
            got = np.asarray(nib.load(str(out / subject / f"{name}.nii.gz")).dataobj)
            want = np.asarray(nib.load(str(reference / subject / f"{name}.nii.gz")).dataobj)
            np.testing.assert_array_equal(got, want, err_msg=f"{subject}/{name}")

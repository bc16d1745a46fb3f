"""`brainuad train` started every standard way on two CPU processes (gloo): Lightning's own
`--strategy ddp` launcher (it runs the command line again), `torchrun` (one node, and two
"nodes" on localhost), and SLURM's environment set by hand. Each trains like one process and
leaves exactly one set of run files; a rank that dies ends the job within seconds."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_MODEL

pytestmark = pytest.mark.slow
BRAINUAD = [sys.executable, "-m", "brainuad"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def job(prepared, tmp_path):
    """The command line of a small training (sAE-GAN, 2 epochs) and its config."""
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "saegan", **TINY_MODEL},
                                      "train": {"epochs": 2, "accelerator": "cpu"}}))

    def command(run, batch, *more):
        return ["train", str(prepared), str(run), "--config", str(config), "--batch-size",
                str(batch), *more]

    return command


def _files(run):
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def _weights(run):
    return torch.load(run / "model.pt", weights_only=True)


def _same_training(one, two):
    a, b = _weights(one), _weights(two)
    assert a.keys() == b.keys()
    # conv and linear weights to float rounding (biases before a batch norm only carry noise
    # that Adam scales up; batch norm cancels them: see test_two_process_ddp_on_cpu)
    deltas = {k: float((a[k] - b[k]).abs().max()) for k in a
              if k.endswith("weight") and a[k].is_floating_point()}
    assert max(deltas.values()) < 1e-3, max(deltas.items(), key=lambda kv: kv[1])
    assert _files(two) == _files(one)  # one set of run files, as one process writes


def _run(args, env=None, timeout=300):
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def one_process(job, tmp_path):
    run = tmp_path / "one"
    _run([*BRAINUAD, *job(run, 4)])
    return run


def test_lightning_relaunches_the_command_line(job, one_process, tmp_path):
    run = tmp_path / "ddp"
    result = _run([*BRAINUAD, *job(run, 2, "--devices", "2", "--strategy", "ddp")])
    assert result.stdout.count("run ready") == 1
    _same_training(one_process, run)


def test_torchrun_one_node_and_two_nodes(job, one_process, tmp_path):
    run = tmp_path / "torchrun"
    _run([*TORCHRUN, "--nproc-per-node", "2", "--master-port", str(_port()), "-m", "brainuad",
          *job(run, 2, "--devices", "2", "--strategy", "ddp")])
    _same_training(one_process, run)
    run = tmp_path / "nodes"
    port = _port()
    nodes = [subprocess.Popen(
        [*TORCHRUN, "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
         "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "brainuad",
         *job(run, 2, "--devices", "1", "--num-nodes", "2", "--strategy", "ddp")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:]
    _same_training(one_process, run)


def test_slurm_environment(job, one_process, tmp_path):
    """What `srun --ntasks-per-node 2` sets, by hand: two tasks on this machine."""
    run = tmp_path / "slurm"
    env = {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODEID": "0",
           "SLURM_JOB_NAME": "brainuad", "SLURM_JOB_ID": str(_port()),
           "SLURM_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1"}
    tasks = [subprocess.Popen([*BRAINUAD, *job(run, 2, "--devices", "2", "--strategy", "ddp")],
                              env={**os.environ, **env, "SLURM_PROCID": str(rank),
                                   "SLURM_LOCALID": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outputs = [task.communicate(timeout=300)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-3000:]
    assert outputs[0].count("run ready") == 1 and "run ready" not in outputs[1]
    _same_training(one_process, run)


def _workers(parent: int) -> dict[int, int]:
    """rank -> pid of the processes torchrun started."""
    found = {}
    for pid in subprocess.run(["pgrep", "-P", str(parent)], capture_output=True,
                              text=True).stdout.split():
        try:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        except OSError:
            continue
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(pid)
    return found


@pytest.mark.parametrize("launcher", ["torchrun", "ddp"])
def test_a_rank_that_dies_ends_the_job_within_seconds(job, tmp_path, launcher):
    run = tmp_path / "killed"
    args = job(run, 2, "--devices", "2", "--strategy", "ddp", "--epochs", "500")
    if launcher == "torchrun":
        args = [*TORCHRUN, "--nproc-per-node", "2", "--master-port", str(_port()), "-m",
                "brainuad", *args]
    else:
        args = [*BRAINUAD, *args]
    job_process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
    try:
        deadline = time.time() + 120
        while not (run / "log").exists() and time.time() < deadline:  # training has begun
            time.sleep(0.5)
        time.sleep(2)
        if launcher == "torchrun":
            victim = _workers(job_process.pid)[1]
        else:  # Lightning's launcher: the process it started again for local rank 1
            victim = int(subprocess.run(["pgrep", "-P", str(job_process.pid)],
                                        capture_output=True, text=True).stdout.split()[0])
        os.kill(victim, signal.SIGKILL)
        killed = time.time()
        _, stderr = job_process.communicate(timeout=60)
        assert time.time() - killed < 30
        # torchrun's agent ends the other worker; under Lightning's launcher rank 0 sees the
        # lost peer in its next collective, or its observer thread ends the job 5 s later
        assert job_process.returncode == 1
        if launcher == "ddp":  # (torchrun reports a lost worker in its own format)
            assert "error:" in stderr, stderr[-600:]
    finally:
        if job_process.poll() is None:
            job_process.kill()


SLURM = Path(__file__).resolve().parents[1] / "scripts" / "slurm"


def test_the_sbatch_training_script_under_a_stand_in_srun(job, one_process, tmp_path,
                                                           prepared):
    """scripts/slurm/train.sbatch as SLURM would run it on one node with two tasks: a stand-in
    `srun` starts the tasks with what srun sets (SLURM_PROCID, SLURM_LOCALID)."""
    shim = tmp_path / "bin" / "srun"
    shim.parent.mkdir()
    shim.write_text("#!/bin/bash\n[ \"$1\" = --kill-on-bad-exit=1 ] && shift\n"
                    "for i in $(seq 0 $((SLURM_NTASKS - 1))); do\n"
                    "  SLURM_PROCID=$i SLURM_LOCALID=$i \"$@\" & done\n"
                    "status=0; for job in $(jobs -p); do wait $job || status=1; done\n"
                    "exit $status\n")
    shim.chmod(0o755)
    run = tmp_path / "sbatch"
    config = tmp_path / "tiny.yaml"
    data = yaml.safe_load(config.read_text())
    data["train"]["batch_size"] = 2
    config.write_text(yaml.safe_dump(data))
    env = {"PATH": f"{shim.parent}:{Path(sys.executable).parent}:{os.environ['PATH']}",
           "MANIFEST": str(prepared), "RUN": str(run), "CONFIG": str(config),
           "ACCELERATOR": "cpu", "SLURM_NNODES": "1", "SLURM_NTASKS": "2",
           "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "brainuad",
           "SLURM_JOB_ID": str(_port()), "SLURM_NODELIST": "localhost",
           "SLURM_JOB_NUM_NODES": "1"}
    _run(["bash", str(SLURM / "train.sbatch")], env=env)
    _same_training(one_process, run)


def test_the_job_array_script_splits_preprocess_and_detect(tmp_path):
    """scripts/slurm/shards.sbatch as two array tasks (SLURM_ARRAY_TASK_ID set by hand): the
    shards together give what one process gives."""
    import nibabel as nib
    import numpy as np

    from brainuad.data.synth import SynthConfig, synth_cohort

    cohort = synth_cohort(tmp_path / "cohort", SynthConfig(n_healthy=4, n_lesioned=2)).path
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "RAW": str(cohort),
           "SLURM_ARRAY_TASK_COUNT": "2"}
    for task in ("1", "0"):
        _run(["bash", str(SLURM / "shards.sbatch")],
             env={**env, "PREP": str(tmp_path / "prep"), "SLURM_ARRAY_TASK_ID": task})
    _run([*BRAINUAD, "preprocess", str(cohort), str(tmp_path / "whole")])
    run = tmp_path / "run"
    _run([*BRAINUAD, "train", str(tmp_path / "whole" / "manifest.csv"), str(run), "--model",
          "threshold"])
    for task in ("0", "1"):
        _run(["bash", str(SLURM / "shards.sbatch")],
             env={**env, "STAGE": "detect", "RUN": str(run), "PREP": str(tmp_path / "prep"),
                  "OUT": str(tmp_path / "pred"), "SLURM_ARRAY_TASK_ID": task})
    _run([*BRAINUAD, "detect", str(run), str(tmp_path / "whole" / "manifest.csv"), "--out",
          str(tmp_path / "one")])
    maps = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").glob("*/*.nii.gz"))
    assert len(maps) == 3 * 6
    for path in maps:
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "one" / path).dataobj),
                                      np.asarray(nib.load(tmp_path / "pred" / path).dataobj))

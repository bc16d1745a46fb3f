"""Several processes training one run: which one this is, known before any process group exists,
and a job that ends with one error line when one of them dies.

`brainuad train` may run as several processes started by Lightning's own `--strategy ddp`
launcher (it runs the same command line again with LOCAL_RANK and NODE_RANK set), by `torchrun`
(RANK), or by SLURM's `srun` (SLURM_PROCID). Exactly one of them, rank 0, creates the run
directory and writes its files; the others train beside it.
"""

from __future__ import annotations

import os
import sys


def launch_rank(devices: int | str = 1) -> int:
    """This process's global rank as its launcher set it, known before any process group
    exists (the environments are detected as Lightning detects them): 0 for a single process."""
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    if TorchElasticEnvironment.detect():
        return int(os.environ["RANK"])
    if SLURMEnvironment.detect():
        return int(os.environ["SLURM_PROCID"])
    per_node = int(devices) if str(devices).isdigit() else 1
    return int(os.environ.get("NODE_RANK", 0)) * per_node + int(os.environ.get("LOCAL_RANK", 0))



def end_job_when_a_rank_dies() -> None:
    """Under Lightning's own `ddp` launcher the process the user started is rank 0, and a
    thread of it watches the ranks it started; when one dies, that thread SIGKILLs every
    process, its own included, so the job ends with status 137 and no message (unless rank 0
    saw the lost peer first). Make it end the job with an error line and status 1 instead."""
    from lightning.fabric.strategies.launchers import subprocess_script

    observer = getattr(subprocess_script, "_ChildProcessObserver", None)
    if observer is None or getattr(observer, "_brainuad", False):
        return

    def terminate_all(self) -> None:
        codes = [p.returncode for p in self._child_processes]
        for process in self._child_processes:
            process.send_signal(self._termination_signal)
        dead = next(((rank, code) for rank, code in enumerate(codes, 1) if code), (0, 0))
        print(f"error: training rank {dead[0]} ended with status {dead[1]}; the job ends",
              file=sys.stderr, flush=True)
        os._exit(1)

    observer._terminate_all = terminate_all
    observer._brainuad = True

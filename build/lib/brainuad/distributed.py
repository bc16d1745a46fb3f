"""Several processes training one run: which one this is, and adding up what each counted.

`brainuad train` may run as several processes started by Lightning's own `--strategy ddp`
launcher (it runs the same command line again with LOCAL_RANK and NODE_RANK set), by `torchrun`
(RANK), or by SLURM's `srun` (SLURM_PROCID). Exactly one of them, rank 0, creates the run
directory and writes its files; the others train beside it and count their share of the
calibration scans, and the counts are added up over the process group (gloo on CPUs, NCCL on
GPUs) before rank 0 writes the thresholds.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.distributed as dist


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


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def shard() -> tuple[int, int]:
    """(rank, world size) of the process group; (0, 1) without one."""
    return (dist.get_rank(), dist.get_world_size()) if active() else (0, 1)


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_arrays(*arrays: np.ndarray) -> list[np.ndarray]:
    """Each array summed over the process group (the arrays themselves without one)."""
    if not active():
        return list(arrays)
    out = []
    for array in arrays:
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        out.append(tensor.cpu().numpy())
    return out


def extreme(value: float, largest: bool) -> float:
    """The largest (or smallest) of every process's `value`."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX if largest else dist.ReduceOp.MIN)
    return float(tensor.item())


def from_rank0(value):
    """Rank 0's `value` in every process (a picklable object, e.g. a state_dict)."""
    if not active():
        return value
    box = [value if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def merge_histogram(histogram) -> None:
    """A `thresholds.ScoreHistogram` made the sum of every process's, in place."""
    histogram.counts = sum_arrays(histogram.counts)[0]
    histogram.min = extreme(histogram.min, largest=False)
    histogram.max = extreme(histogram.max, largest=True)


def barrier() -> None:
    """Every process waits here for the others (so none exits while another still counts)."""
    if active():
        dist.barrier()


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

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

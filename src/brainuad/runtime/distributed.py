"""Several processes of one job adding up what each counted: each takes its share of the
calibration scans, and the counts are added up over the process group (gloo on CPUs, NCCL on
GPUs) before rank 0 writes the thresholds (how the processes start: `training/launch.py`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


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

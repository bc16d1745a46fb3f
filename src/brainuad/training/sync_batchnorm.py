"""Batch norm over the whole batch when several CPU processes train together (DDP with gloo).

torch's SyncBatchNorm runs on GPUs only; without it each CPU process normalises its own share of
the batch and a two-process run drifts from a one-process run. Here the per-channel sums, sums of
squares and counts are all-reduced (differentiably, so gradients flow through the shared
statistics as in SyncBatchNorm), which makes N processes train like one up to float rounding.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
from lightning.pytorch.plugins import LayerSync
from torch import nn
from torch.distributed.nn.functional import all_reduce


class _GlooSyncBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size() > 1):
            return super().forward(x)
        channels = x.shape[1]
        count = torch.full((1,), x.numel() / channels, dtype=x.dtype, device=x.device)
        local = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count])
        with warnings.catch_warnings():  # deprecated for a private successor; still the
            warnings.simplefilter("ignore", FutureWarning)  # public autograd all-reduce
            totals = all_reduce(local)
        n = totals[-1]
        mean = totals[:channels] / n
        var = (totals[channels:2 * channels] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * n / (n - 1))
        y = (x - mean[:, None, None]) * torch.rsqrt(var[:, None, None] + self.eps)
        return y * self.weight[:, None, None] + self.bias[:, None, None] if self.affine else y


class GlooSyncBatchNorm(LayerSync):
    """Lightning plugin: every `BatchNorm2d` normalises over all processes' batches while
    fitting (the class is swapped in place, so weights and buffers stay the same tensors)."""

    def apply(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if type(module) is nn.BatchNorm2d:
                module.__class__ = _GlooSyncBatchNorm2d
        return model

    def revert(self, model: nn.Module) -> nn.Module:
        for module in model.modules():
            if type(module) is _GlooSyncBatchNorm2d:
                module.__class__ = nn.BatchNorm2d
        return model

"""What every trained kind's Lightning module shares: manual optimisation, channels-last, an
optional cosine schedule in closed form, and noise seeded from (seed, epoch, batch), so a run
resumed from its last checkpoint takes the same batches and the same noise as one that was
never interrupted. A kind's module only adds its networks, optimisers and steps.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from brainuad.config import RunConfig, from_dict


class SeededModule(L.LightningModule):
    #: A checkpoint per epoch (any epoch can become the model: `use_epoch`) instead of the best
    #: by validation loss.
    keeps_every_epoch = False
    #: Whether it has a validation loss (`val/l1`) to pick the best epoch by.
    validates = True

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})  # plain dicts: loadable with weights_only
        self.cfg: RunConfig = from_dict(config)
        self.automatic_optimization = False

    def channels_last(self) -> None:
        """oneDNN's fast layout, 1.4x per training step on a 2-core CPU (call once built)."""
        self.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        return batch.contiguous(memory_format=torch.channels_last)

    def scheduled(self, optimisers: list) -> list | tuple:
        """`optimisers`, with the run's learning-rate schedule."""
        t = self.cfg.train
        if t.lr_schedule == "constant":
            return optimisers

        # closed form of the epoch, over the epochs of this run: a resume that raises `epochs`
        # follows the schedule of a run asked for that many from the start. (CosineAnnealingLR
        # restores its old T_max from the checkpoint and, past it, raises the rates again.) A
        # plain function: LambdaLR does not store it in the checkpoint.
        def cosine(epoch: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * min(epoch, t.epochs) / t.epochs))

        return optimisers, [torch.optim.lr_scheduler.LambdaLR(o, cosine) for o in optimisers]

    def _schedulers(self) -> list:
        schedulers = self.lr_schedulers()
        return [s for s in (schedulers if isinstance(schedulers, list) else [schedulers]) if s]

    def on_train_start(self) -> None:
        # a resumed run restored the rates its last run had set for this epoch: take them from
        # this run's schedule instead (the same unless `epochs` was raised)
        for scheduler in self._schedulers():
            for group, base, rate in zip(scheduler.optimizer.param_groups, scheduler.base_lrs,
                                         scheduler.lr_lambdas, strict=True):
                group["lr"] = base * rate(scheduler.last_epoch)

    def on_train_epoch_end(self) -> None:
        for scheduler in self._schedulers():  # manual optimisation: stepped here, once per epoch
            scheduler.step()

    def on_train_batch_start(self, batch: torch.Tensor, batch_idx: int) -> None:
        # Sampling noise comes from (seed, epoch, batch) alone: data-loader iterators also draw
        # from the global generator, in an order that differs after a resume.
        step = self.current_epoch * 1_000_003 + batch_idx
        torch.manual_seed(self.cfg.train.seed * 7_919 + step)

    def step(self, optimiser, loss: torch.Tensor) -> None:
        optimiser.zero_grad()
        self.manual_backward(loss)
        optimiser.step()

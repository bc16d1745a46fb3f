"""Training: the Lightning module (wiring only: optimisers, steps, logging) and `train`.

Every model trains with manual optimisation, so the adversarial models alternate exactly as the
paper says (generator step, then discriminator step on the same batch) and the plain ones take one
step. Shuffling is seeded from (seed, epoch) and sampling noise from (seed, epoch, batch), so a
run resumed from its last checkpoint takes the same batches and the same noise as one that was
never interrupted.
"""

from __future__ import annotations

import logging
import math
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from brainuad import distributed, normative, rundir, thresholds
from brainuad.config import DetectConfig, RunConfig, from_dict
from brainuad.detector import Detector
from brainuad.errors import BrainUADError, Failed, SubjectsFailed, attempt
from brainuad.manifest import read_manifest
from brainuad.models import losses
from brainuad.models.registry import build_discriminator, build_model
from brainuad.slices import SliceDataset, load_subject_slices

#: Folder beside a manifest where training keeps its memory-mapped slices.
SLICE_CACHE = ".brainuad-cache"


class EpochShuffle(Sampler[int]):
    """A permutation drawn from (seed, epoch): the same order whether or not the run resumed.

    Under DDP each process takes every N-th index of that same permutation (padded to a multiple
    of N as torch's DistributedSampler does), so N processes with batch B/N see exactly the
    batches of one process with batch B. (Lightning's own wrapper would shuffle it once more.)
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by Lightning before each epoch
        self.epoch = epoch

    @staticmethod
    def _shards() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        rank, world = self._shards()
        order += order[:len(self) * world - self.n]
        return iter(order[rank::world])

    def __len__(self) -> int:
        return -(-self.n // self._shards()[1])


class UADModule(L.LightningModule):
    #: Where AnoGAN writes a grid of samples per epoch (set by `train`), to pick an epoch by eye.
    samples_dir: Path | None = None

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})  # plain dicts: loadable with weights_only
        self.cfg: RunConfig = from_dict(config)
        self.model = build_model(self.cfg.model)
        self.discriminator = build_discriminator(self.cfg.model)
        self.automatic_optimization = False
        # channels-last: oneDNN's fast layout, 1.4x per training step on a 2-core CPU.
        self.to(memory_format=torch.channels_last)

    def on_after_batch_transfer(self, batch: torch.Tensor, dataloader_idx: int) -> torch.Tensor:
        return batch.contiguous(memory_format=torch.channels_last)

    @property
    def is_gan(self) -> bool:
        """AnoGAN: a generator of codes, no encoder; trained as a DCGAN."""
        return self.cfg.model.name == "anogan"

    def configure_optimizers(self):
        t = self.cfg.train
        if self.is_gan:  # DCGAN's Adam (beta1 = 0.5)
            optimisers = [torch.optim.Adam(self.model.generator.parameters(), lr=t.lr,
                                           betas=(0.5, 0.999)),
                          torch.optim.Adam(self.model.discriminator.parameters(),
                                           lr=t.lr_adversarial, betas=(0.5, 0.999))]
        else:
            optimisers = [torch.optim.Adam(self.model.parameters(), lr=t.lr)]
        if self.discriminator is not None:
            optimisers.append(torch.optim.Adam(self.discriminator.parameters(),
                                               lr=t.lr_adversarial))
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
        if self.is_gan and self.samples_dir is not None and self.global_rank == 0:
            self._save_samples()

    @torch.no_grad()
    def _save_samples(self, n: int = 16) -> None:
        from brainuad.report import figure_samples

        z = torch.randn(n, self.cfg.model.latent_dim,
                        generator=torch.Generator().manual_seed(self.cfg.train.seed))
        was_training = self.model.training
        self.model.eval()
        images = self.model.sample(z.to(self.device))[:, 0].float().cpu().numpy()
        self.model.train(was_training)
        figure_samples(images, self.samples_dir / f"epoch-{self.current_epoch:03d}.png",
                       f"AnoGAN samples, epoch {self.current_epoch}")

    def on_train_batch_start(self, batch: torch.Tensor, batch_idx: int) -> None:
        # The VAE's sampling noise comes from (seed, epoch, batch) alone: data-loader iterators
        # also draw from the global generator, in an order that differs after a resume.
        step = self.current_epoch * 1_000_003 + batch_idx
        torch.manual_seed(self.cfg.train.seed * 7_919 + step)

    def _gan_step(self, x: torch.Tensor) -> None:
        """DCGAN: generator step (-log D(G(z))), then discriminator step on real vs G(z)."""
        opt_g, opt_d = self.optimizers()
        fake = self.model.sample(torch.randn(len(x), self.cfg.model.latent_dim, device=x.device))
        g_loss = losses.generator_adversarial(self.model.discriminator(fake))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        d_loss = losses.discriminator(self.model.discriminator(x),
                                      self.model.discriminator(fake.detach()))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        self.log_dict({"train/gen": g_loss, "train/disc": d_loss}, on_step=True, on_epoch=True,
                      batch_size=len(x))
        self.log("loss", d_loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def training_step(self, x: torch.Tensor, batch_idx: int) -> None:
        if self.is_gan:
            return self._gan_step(x)
        t = self.cfg.train
        optimisers = self.optimizers()
        opt_g = optimisers[0] if isinstance(optimisers, list) else optimisers
        x_in = coarse_noise(x, t.noise_std, t.noise_resolution) if t.noise == "coarse" else x
        x_hat, mu, logvar, _ = self.model(x_in)
        rec = losses.reconstruction(x, x_hat, t.reconstruction, t.trim)
        loss = t.w_rec * rec
        logs = {f"train/{t.reconstruction}": rec}
        if logvar is not None:
            kl = losses.kl_normal(mu, logvar)
            loss = loss + t.w_kl * kl
            logs["train/kl"] = kl
        if self.discriminator is not None:
            adv = losses.generator_adversarial(self.discriminator(x_hat))
            loss = loss + t.w_adv * adv
            logs["train/adv"] = adv
        opt_g.zero_grad()
        self.manual_backward(loss)
        opt_g.step()
        if self.discriminator is not None:
            opt_d = optimisers[1]
            d_loss = losses.discriminator(self.discriminator(x), self.discriminator(x_hat.detach()))
            opt_d.zero_grad()
            self.manual_backward(d_loss)
            opt_d.step()
            logs["train/disc"] = d_loss
        logs["train/loss"] = loss
        self.log_dict(logs, on_step=True, on_epoch=True, prog_bar=False, batch_size=len(x))
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False, logger=False)

    def validation_step(self, x: torch.Tensor, batch_idx: int) -> None:
        self.log("val/l1", losses.l1(x, self.model.reconstruct(x)), prog_bar=True,
                 on_epoch=True, batch_size=len(x), sync_dist=True)


def coarse_noise(x: torch.Tensor, std: float, resolution: int) -> torch.Tensor:
    """x plus Gaussian noise drawn on a coarse `resolution`^2 grid, upsampled to the slice and
    shifted by a random offset, inside the brain (x > 0) only: blobs of lesion size that the
    denoising autoencoder learns to remove (Kascenas et al. 2022). `(B, 1, S, S)`."""
    noise = torch.randn(len(x), 1, resolution, resolution, device=x.device) * std
    noise = torch.nn.functional.interpolate(noise, size=x.shape[-2:], mode="bilinear",
                                            align_corners=False)
    shifts = [int(torch.randint(n, ())) for n in x.shape[-2:]]
    noise = torch.roll(noise, shifts, dims=(-2, -1))
    return x + noise * (x > 0)


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")


def train(manifest_path: str | Path, run: str | Path, cfg: RunConfig | None = None,
          resume: bool = False, epochs: int | None = None, progress_bar: bool = True,
          progress: Callable | None = None, keep_going: bool = False) -> Path:
    """Train on the healthy `train` subjects (validating on healthy `val`; on all of them with
    `train.subjects: all`), keep the best weights by validation L1, and store them with the
    config and the detection thresholds in `run` (`calibrate`: on the `val` scans).

    With `resume`, the run's own config is used (only `epochs` may be raised) and training goes on
    from `checkpoints/last.ckpt`. With `keep_going`, subjects whose scans fail to load are left
    out (and recorded in provenance.json) and `SubjectsFailed` names them once the run is ready.
    """
    run, manifest_path = Path(run), Path(manifest_path)
    manifest = read_manifest(manifest_path)
    if resume:
        cfg = rundir.read_config(run)
        if not (run / rundir.LAST).is_file() and cfg.model.name != "threshold":
            raise BrainUADError(f"{run}: nothing to resume (no checkpoints/last.ckpt)")
    if cfg is None:
        raise ValueError("train needs a config unless it resumes")
    # Several processes (Lightning's ddp launcher, torchrun, srun) run this same call: only
    # rank 0 creates the run directory and writes into it, the others train beside it.
    first = distributed.launch_rank(cfg.train.devices) == 0
    if first and not resume and (run / rundir.CONFIG).exists():
        raise BrainUADError(f"{run}: already holds a run; use --resume or another folder")
    if epochs is not None:
        cfg.train.epochs = epochs
    train_subjects = manifest.select(split="train", health=cfg.train.health)
    val_subjects = manifest.select(split="val", health=cfg.train.health)
    if not train_subjects:
        raise BrainUADError(f"{manifest_path}: no {cfg.train.health or ''} subjects in the train "
                            "split" + (" (train.subjects: all trains on every subject)"
                                       if cfg.train.health else ""))
    failures: dict[str, str] = {}
    if keep_going:
        train_subjects = _loadable(train_subjects, cfg, manifest_path, failures)
        val_subjects = _loadable(val_subjects, cfg, manifest_path, failures)
        if not train_subjects:
            raise SubjectsFailed(failures, len(failures), "train")
    existed = run.exists()
    try:
        if first:
            run.mkdir(parents=True, exist_ok=True)
            rundir.write_config(run, cfg)
            rundir.write_provenance(run, manifest_path, excluded=failures,
                                    subjects=[s.subject for s in train_subjects])
        if cfg.model.name == "threshold":
            model = build_model(cfg.model)
        else:
            model = _fit(manifest_path, run, cfg, train_subjects, val_subjects, resume,
                         progress_bar)
        if first:
            rundir.save_weights(run, model.state_dict())
        calibrate(run, manifest_path, model=model, progress=progress, cfg=cfg)
        distributed.barrier()
    except BrainUADError:
        # bad input found before anything was learnt: leave no half-made run behind
        if first and not resume and not (run / rundir.LAST).exists():
            if not existed:
                shutil.rmtree(run, ignore_errors=True)
            else:  # a folder the user made: only what this run wrote
                for name in (rundir.CONFIG, rundir.PROVENANCE, rundir.MODEL, rundir.THRESHOLD,
                             normative.FILE):
                    (run / name).unlink(missing_ok=True)
        raise
    if failures:
        raise SubjectsFailed(failures, len(train_subjects) + len(val_subjects) + len(failures),
                             "train")
    return run


def _loadable(subjects: list, cfg: RunConfig, manifest: Path, failures: dict[str, str]) -> list:
    """The subjects whose slices load (each is read once more for this check); the others'
    reasons go into `failures` (`--keep-going`)."""
    kept = []
    for subject in subjects:
        outcome = attempt(True, load_subject_slices, subject, cfg.train.modality,
                          cfg.model.image_size, cfg.train.slices, manifest)
        if isinstance(outcome, Failed):
            failures[subject.subject] = outcome.reason
        else:
            kept.append(subject)
    return kept


def _log_version(run: Path, resume: bool) -> str:
    """`log/metrics.csv` for a first run; `log/resume-N/metrics.csv` for the N-th resume, so
    resuming never overwrites the losses logged before."""
    if not resume:
        return ""
    count = len(list((run / "log").glob("resume-*"))) if (run / "log").is_dir() else 0
    return f"resume-{count + 1}"


def _strategy(name: str, adversarial: bool) -> str:
    """An adversarial model's discriminator step leaves the generator's parameters without a
    gradient, which DDP must be told about."""
    if adversarial and name in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        return f"{name}_find_unused_parameters_true"
    return name


def _several_processes(t) -> bool:
    return t.num_nodes > 1 or t.devices not in (1, "1", "auto")


def _layer_sync(t) -> list:
    """Several processes: batch-norm statistics over the whole batch, as in one process; on
    GPUs torch's SyncBatchNorm (Lightning's `sync_batchnorm`), on CPUs (gloo) our own."""
    if not _several_processes(t) or (t.accelerator != "cpu" and torch.cuda.is_available()):
        return []
    from brainuad.models.sync_batchnorm import GlooSyncBatchNorm

    return [GlooSyncBatchNorm()]


def _fit(manifest_path, run, cfg, train_subjects, val_subjects, resume, progress_bar):
    _quiet_lightning()
    t, size = cfg.train, cfg.model.image_size
    L.seed_everything(t.seed, workers=True, verbose=False)
    # slices cached beside the manifest, memory-mapped: every later run on these scans skips
    # reading NIfTI, and a cohort larger than memory trains from disk pages
    cache = manifest_path.parent / SLICE_CACHE
    train_set = SliceDataset(train_subjects, t.modality, size, t.slices, manifest_path, cache)
    train_loader = DataLoader(train_set, batch_size=t.batch_size,
                              sampler=EpochShuffle(len(train_set), t.seed),
                              generator=torch.Generator().manual_seed(t.seed))
    val_loader = None
    gan = cfg.model.name == "anogan"
    if val_subjects and not gan:  # AnoGAN has no encoder: its epoch is picked by its samples
        val_set = SliceDataset(val_subjects, t.modality, size, t.slices, manifest_path, cache)
        val_loader = DataLoader(val_set, batch_size=max(t.batch_size, 32),
                                generator=torch.Generator().manual_seed(t.seed))
    if gan:  # one checkpoint per epoch, so any epoch can become the model (`use_epoch`)
        checkpoint = L.pytorch.callbacks.ModelCheckpoint(
            dirpath=run / rundir.CHECKPOINTS, filename="epoch-{epoch:03d}",
            auto_insert_metric_name=False, save_last=True, save_top_k=-1,
            enable_version_counter=False)
    else:
        checkpoint = L.pytorch.callbacks.ModelCheckpoint(
            dirpath=run / rundir.CHECKPOINTS, filename="best", save_last=True, save_top_k=1,
            monitor="val/l1" if val_loader is not None else None, mode="min",
            enable_version_counter=False)
    cpu_sync = _layer_sync(t)
    distributed.end_job_when_a_rank_dies()
    trainer = L.Trainer(
        max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=_strategy(t.strategy, cfg.model.adversarial), precision=t.precision,
        sync_batchnorm=_several_processes(t) and not cpu_sync, plugins=cpu_sync,
        deterministic=t.deterministic,
        default_root_dir=run,
        callbacks=[checkpoint, L.pytorch.callbacks.LearningRateMonitor("epoch")],
        logger=L.pytorch.loggers.CSVLogger(run, name="log", version=_log_version(run, resume)),
        enable_progress_bar=progress_bar, enable_model_summary=False, log_every_n_steps=10,
        num_sanity_val_steps=0, use_distributed_sampler=False,  # EpochShuffle shards itself
    )
    module = UADModule(cfg.to_dict())
    module.samples_dir = run / "samples"
    last = run / rundir.LAST
    if resume:
        rundir.safe_torch_load(last)  # a clear refusal of a checkpoint that is not plain data
    try:
        trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume else None,
                    weights_only=True)
    except RuntimeError as err:
        if not distributed.active():
            raise
        # gloo/NCCL: another process died or hung; say so on one line, not from inside torch
        raise BrainUADError(f"{run}: training process {trainer.global_rank} lost another "
                            f"process of the job: {str(err).splitlines()[0][:300]}") from err
    weights = None
    if trainer.global_rank == 0:  # the checkpoints are rank 0's: it sends the best to the others
        best = (checkpoint.best_model_path if not gan else "") or str(last)
        state = rundir.safe_torch_load(Path(best))["state_dict"]
        weights = {k.removeprefix("model."): v for k, v in state.items()
                   if k.startswith("model.")}
    module.model.load_state_dict(distributed.from_rank0(weights))
    return module.model


def use_epoch(run: str | Path, epoch: int, progress: Callable | None = None) -> Path:
    """Make the checkpoint of `epoch` (0-based, as the progress bar and `samples/` count) the
    run's model, and calibrate its thresholds anew: how an AnoGAN user picks the epoch whose
    samples still look realistic (the paper took 82 of 150)."""
    run = Path(run)
    cfg = rundir.read_config(run)
    path = run / rundir.CHECKPOINTS / f"epoch-{epoch:03d}.ckpt"
    if not path.is_file():
        kept = sorted(p.stem for p in (run / rundir.CHECKPOINTS).glob("epoch-*.ckpt"))
        raise BrainUADError(f"{path}: no checkpoint of epoch {epoch} (kept: "
                            f"{', '.join(kept) or 'none; only AnoGAN keeps one per epoch'})")
    manifest = rundir.training_manifest(run, "a new threshold")
    state = rundir.safe_torch_load(path)["state_dict"]
    model = build_model(cfg.model)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()
                           if k.startswith("model.")})
    model.eval()
    rundir.save_weights(run, model.state_dict())
    info = calibrate(run, manifest, model=model, progress=progress)
    rundir.write_threshold(run, {**info, "epoch": epoch})
    return run


def calibrate(run: str | Path, manifest_path: str | Path | None = None,
              settings: list[DetectConfig] | None = None, model: torch.nn.Module | None = None,
              progress: Callable | None = None, cfg: RunConfig | None = None) -> dict:
    """Take a run's thresholds on its held-out scans (`thresholds.calibration_subjects` of the
    manifest it was trained on) and write `threshold.json`: for the run's own scoring when
    `model` (just trained, with its `cfg`) is given, else the run's saved model with
    `settings` added to the scorings it has (other slices, residuals, scores), each in every
    precision detection may use. A new run also gets its normative maps (`normative.py`, from
    its training scans). Under several processes each counts its share of the scans and rank 0
    writes the sums. The only place thresholds are made: detection only reads them."""
    run = Path(run)
    manifest_path = Path(manifest_path or rundir.training_manifest(run, "calibration"))
    manifest = read_manifest(manifest_path)
    rank, world = distributed.shard()
    if model is None:
        detector = Detector.load(run, accelerator="cpu")
        cfg, previous = detector.cfg, detector.info
    else:
        cfg = cfg or rundir.read_config(run)
        device = next(model.parameters(), torch.empty(0)).device
        detector, previous = Detector(cfg, model, folder=run, device=device), None
    excluded = rundir.read_provenance(run).get("excluded_subjects", {}) if rank == 0 else {}
    excluded = distributed.from_rank0(excluded)
    wanted = [cfg.detect, *(settings or [])] if previous is None else (settings or [])
    needed = any(d.score != "residual" for d in wanted)
    training = [s for s in manifest.select(split="train", health=cfg.train.health)
                if s.subject not in excluded]
    if detector.normative is None and (needed or (previous is None and len(training) > 1)):
        sums = normative.accumulate(training, cfg.train.modality, manifest_path,
                                    shard=(rank, world))
        sums.sums = distributed.sum_arrays(sums.sums)[0]
        detector.normative = sums.finish()
        if rank == 0:
            detector.normative.save(run)
    split, subjects = thresholds.calibration_subjects(manifest, cfg.train.health, excluded,
                                                      cfg.detect.threshold_subjects)
    names = [s.subject for s in subjects]
    histograms = {}
    for key, pair in detector.histograms(subjects, wanted, progress if rank == 0 else None,
                                         manifest_path, shard=(rank, world),
                                         skip=(previous or {}).get("scorings", {})).items():
        distributed.merge_histogram(pair[0])
        histograms[key] = pair[0]
    if previous is None:
        info = thresholds.new_info(histograms, split, names, cfg.detect.percentile,
                                   detector.scoring_key(cfg.detect, "32"))
    else:
        info = thresholds.add_scorings(previous, histograms, names)
    if rank == 0:
        rundir.write_threshold(run, info)
    return info


def choose_operating_point(run: str | Path, labelled: str | Path,
                           settings: list[DetectConfig] | None = None, split: str = "val",
                           progress: Callable | None = None) -> dict:
    """For each scoring (the run's own, or `settings`), the threshold with the best Dice over
    all lesion and normal voxels of a labelled validation set (`brainuad synth --from`: lesions
    drawn into held-out scans), in every precision; kept in threshold.json's
    `operating_points`, which detection then uses instead of the label-free percentile. Test
    subjects and subjects the run trained on are refused: an operating point chosen on them
    would flatter every figure measured with it."""
    run = Path(run)
    if split == "test":
        raise BrainUADError("an operating point is never chosen on the test split")
    detector = Detector.load(run, accelerator="cpu")
    manifest = read_manifest(labelled)
    subjects = [s for s in manifest.select(split=split) if s.label is not None]
    if not subjects:
        raise BrainUADError(f"{manifest.path}: no labelled subjects in split {split!r}")
    trained = set(rundir.read_provenance(run).get("training_subjects", []))
    overlap = sorted(trained & {s.subject for s in subjects})
    if overlap:
        raise BrainUADError(f"{manifest.path}: {', '.join(overlap)} trained {run}: choose the "
                            "operating point on scans the model has not seen")
    histograms = detector.histograms(subjects, settings or [detector.cfg.detect], progress,
                                     manifest.path, labelled=True)
    names = [s.subject for s in subjects]
    points = {}
    for key, (normal, lesion) in histograms.items():
        dice, threshold = thresholds.best_dice(lesion, normal)
        points[key] = {"threshold": threshold, "dice": dice,
                       "manifest": str(manifest.path.resolve()), "subjects": names}
    info = {**detector.info,
            "operating_points": {**detector.info.get("operating_points", {}), **points}}
    rundir.write_threshold(run, info)
    return info

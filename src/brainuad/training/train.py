"""`brainuad train`: fit a model kind on the healthy `train` subjects of a manifest, keep the
best weights, and store them with the config, the model's description and its thresholds in a
run directory (a model folder, `models/folder.py`).

A network kind trains under Lightning (its own module: `Kind.lightning`), with manual
optimisation so the adversarial models alternate exactly as the paper says. Shuffling is seeded
from (seed, epoch) and sampling noise from (seed, epoch, batch), so a run resumed from its last
checkpoint takes the same batches and the same noise as one that was never interrupted. A kind
without a network (normative maps, the threshold) is fitted by its calibration alone.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from brainuad.config import RunConfig
from brainuad.data.dataset import SliceDataset
from brainuad.data.slices import load_subject_slices
from brainuad.detection.calibration import calibrate
from brainuad.errors import BrainUADError, Failed, SubjectsFailed, attempt
from brainuad.io.manifest import read_manifest
from brainuad.io.weights import safe_torch_load
from brainuad.models import folder as model_folder
from brainuad.models.registry import build_network, kind_of
from brainuad.runtime import distributed, progress
from brainuad.training import launch

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


def train(manifest_path: str | Path, run: str | Path, cfg: RunConfig | None = None,
          resume: bool = False, epochs: int | None = None, keep_going: bool = False) -> Path:
    """Train on the healthy `train` subjects (validating on healthy `val`; on all of them with
    `train.subjects: all`), keep the best weights by validation L1, and store them with the
    config, model.json and the detection thresholds in `run` (`calibrate`: on the `val` scans).

    With `resume`, the run's own config is used (only `epochs` may be raised) and training goes
    on from `checkpoints/last.ckpt`. With `keep_going`,
    subjects whose scans fail to load are left out (and recorded in provenance.json) and
    `SubjectsFailed` names them once the run is ready.
    """
    run, manifest_path = Path(run), Path(manifest_path)
    manifest = read_manifest(manifest_path)
    if resume:
        cfg = model_folder.read_config(run)
        if not (run / model_folder.LAST).is_file() and kind_of(cfg.model.name).lightning:
            raise BrainUADError(f"{run}: nothing to resume (no checkpoints/last.ckpt)")
    if cfg is None:
        raise ValueError("train needs a config unless it resumes")
    if epochs is not None:
        cfg.train.epochs = epochs
    kind = kind_of(cfg.model.name)
    # Several processes (Lightning's ddp launcher, torchrun, srun) run this same call: only
    # rank 0 creates the run directory and writes into it, the others train beside it.
    first = launch.launch_rank(cfg.train.devices) == 0
    if first and not resume and (run / model_folder.CONFIG).exists():
        raise BrainUADError(f"{run}: already holds a run; use --resume or another folder")
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
            model_folder.write_config(run, cfg)
            model_folder.write_provenance(run, manifest_path, excluded=failures,
                                          subjects=[s.subject for s in train_subjects])
        network = None
        if kind.lightning:
            network = _fit(manifest_path, run, cfg, train_subjects, val_subjects, resume)
            if first:
                model_folder.save_weights(run, network.state_dict())
        calibrate(run, manifest_path, network=network, cfg=cfg)
        if first:
            model_folder.describe_run(run, cfg).write(run)
        distributed.barrier()
    except BrainUADError:
        # bad input found before anything was learnt: leave no half-made run behind
        if first and not resume and not (run / model_folder.LAST).exists():
            if not existed:
                shutil.rmtree(run, ignore_errors=True)
            else:  # a folder the user made: only what this run wrote
                for name in (model_folder.CONFIG, model_folder.PROVENANCE, model_folder.MODEL,
                             model_folder.THRESHOLD, model_folder.MAPS, model_folder.INFO):
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
    from brainuad.training.sync_batchnorm import GlooSyncBatchNorm

    return [GlooSyncBatchNorm()]


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")


def _fit(manifest_path: Path, run: Path, cfg: RunConfig, train_subjects: list,
         val_subjects: list, resume: bool) -> torch.nn.Module:
    """The network of `cfg`'s kind trained under Lightning; the best (or, for a kind that
    keeps every epoch, the last) weights, the same on every process."""
    import lightning as L

    _quiet_lightning()
    module_class = kind_of(cfg.model.name).module()
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
    if val_subjects and module_class.validates:
        val_set = SliceDataset(val_subjects, t.modality, size, t.slices, manifest_path, cache)
        val_loader = DataLoader(val_set, batch_size=max(t.batch_size, 32),
                                generator=torch.Generator().manual_seed(t.seed))
    if module_class.keeps_every_epoch:  # any epoch can become the model (`use_epoch`)
        checkpoint = L.pytorch.callbacks.ModelCheckpoint(
            dirpath=run / model_folder.CHECKPOINTS, filename="epoch-{epoch:03d}",
            auto_insert_metric_name=False, save_last=True, save_top_k=-1,
            enable_version_counter=False)
    else:
        checkpoint = L.pytorch.callbacks.ModelCheckpoint(
            dirpath=run / model_folder.CHECKPOINTS, filename="best", save_last=True,
            save_top_k=1, monitor="val/l1" if val_loader is not None else None, mode="min",
            enable_version_counter=False)
    cpu_sync = _layer_sync(t)
    launch.end_job_when_a_rank_dies()
    trainer = L.Trainer(
        max_epochs=t.epochs, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
        strategy=_strategy(t.strategy, cfg.model.adversarial), precision=t.precision,
        sync_batchnorm=_several_processes(t) and not cpu_sync, plugins=cpu_sync,
        deterministic=t.deterministic,
        default_root_dir=run,
        callbacks=[checkpoint, L.pytorch.callbacks.LearningRateMonitor("epoch")],
        logger=L.pytorch.loggers.CSVLogger(run, name="log", version=_log_version(run, resume)),
        enable_progress_bar=progress.bars(), enable_model_summary=False, log_every_n_steps=10,
        num_sanity_val_steps=0, use_distributed_sampler=False,  # EpochShuffle shards itself
    )
    module = module_class(cfg.to_dict())
    module.samples_dir = run / "samples"
    last = run / model_folder.LAST
    if resume:
        safe_torch_load(last)  # a clear refusal of a checkpoint not plain data
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
        best = ("" if module_class.keeps_every_epoch else checkpoint.best_model_path) or str(last)
        weights = _network_state(Path(best))
    module.model.load_state_dict(distributed.from_rank0(weights))
    return module.model


def _network_state(checkpoint: Path) -> dict:
    """The network's weights of a Lightning checkpoint (its `model.` entries)."""
    state = safe_torch_load(checkpoint)["state_dict"]
    return {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}


def use_epoch(run: str | Path, epoch: int) -> Path:
    """Make the checkpoint of `epoch` (0-based, as the progress bar and `samples/` count) the
    run's model, and calibrate its thresholds anew: how an AnoGAN user picks the epoch whose
    samples still look realistic (the paper took 82 of 150)."""
    run = Path(run)
    cfg = model_folder.read_config(run)
    path = run / model_folder.CHECKPOINTS / f"epoch-{epoch:03d}.ckpt"
    if not path.is_file():
        kept = sorted(p.stem for p in (run / model_folder.CHECKPOINTS).glob("epoch-*.ckpt"))
        raise BrainUADError(f"{path}: no checkpoint of epoch {epoch} (kept: "
                            f"{', '.join(kept) or 'none; only AnoGAN keeps one per epoch'})")
    manifest = model_folder.training_manifest(run, "a new threshold")
    network = build_network(cfg.model)
    network.load_state_dict(_network_state(path))
    network.eval()
    model_folder.save_weights(run, network.state_dict())
    info = calibrate(run, manifest, network=network, cfg=cfg)
    model_folder.write_threshold(run, {**info, "epoch": epoch})
    return run

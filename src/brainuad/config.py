"""Typed configuration of a run, every default in one place, read from and written to YAML.

A run directory's `config.yaml` holds the full `RunConfig`; detection rebuilds the model from it
and the weights alone. YAML is read with `yaml.safe_load` (no object construction), and unknown
keys are an error so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from brainuad.errors import BrainUADError

#: Bumped when a run directory's layout or config changes incompatibly.
CONFIG_VERSION = 1
#: Which fields of each section a config file holds (None: every field of that section).
Fields = dict[str, "tuple[str, ...] | None"]


@dataclass
class ModelConfig:
    """Which model, and its shape (networks only). `name` is a preset of a model kind
    (`models/registry.py`): the names of the paper's Table 1, `denoising`, `anogan`,
    `normative`, `threshold`, `tissue`."""

    name: str = "anovaegan"  # what `brainuad train` trains unless told otherwise
    image_size: int = 256  # slices are S x S; 256 in the paper, 128 or 64 for quick CPU runs
    levels: int = 4  # stride-2 levels: bottleneck side = image_size / 2**levels (16 at 256)
    width: int = 64  # channels of the first level, doubling per level up to max_width
    max_width: int = 256
    bottleneck: str = "spatial"  # "spatial" (1x1 conv to latent_channels) or "dense" (vector)
    latent_channels: int = 64
    latent_dim: int = 512
    variational: bool = True
    adversarial: bool = True
    skip: bool = False  # U-Net skips from every encoder level to the decoder (`denoising`)
    # AnoGAN's latent search at test time (Schlegl et al. 2017): Adam steps, step size, and the
    # weight of the discriminator-feature term against the residual term.
    search_steps: int = 100
    search_lr: float = 0.05
    search_feature_weight: float = 0.1

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(min(self.width * 2**i, self.max_width) for i in range(self.levels))

    @property
    def bottleneck_side(self) -> int:
        return self.image_size // 2**self.levels

    @property
    def z_description(self) -> str:
        """The bottleneck as Table 1 writes it (a network's)."""
        if self.skip:
            return "U-Net"
        if self.bottleneck == "dense":
            return str(self.latent_dim)
        side = self.bottleneck_side
        return f"{side}x{side}x{self.latent_channels}"

    def validate(self) -> None:
        if self.bottleneck not in ("spatial", "dense"):
            raise BrainUADError(f"model.bottleneck {self.bottleneck!r}: spatial or dense")
        if self.image_size % 2**self.levels or self.bottleneck_side < 1:
            raise BrainUADError(f"model.image_size {self.image_size} is not divisible by "
                                f"2**levels = {2**self.levels}")


@dataclass
class TrainConfig:
    """Optimisation. Paper: 190 epochs, batch 8, lr 1e-3 (reconstruction), 1e-4 (adversarial)."""

    modality: str = "flair"
    slices: str = "brain"  # which slices to train on: "brain" (all with brain) or "paper" (20)
    # Which subjects of the train/val splits to learn from: "healthy" (the manifest's health
    # column), or "all" for an unlabelled cohort that the method must tolerate lesions in
    # (e.g. raw MS FLAIRs when no healthy FLAIR exists).
    subjects: str = "healthy"
    epochs: int = 190
    batch_size: int = 8
    lr: float = 1e-3
    lr_adversarial: float = 1e-4
    # "constant" as in the paper; "cosine" anneals both rates to zero over `epochs`: with few
    # epochs the adversarial models' detection quality swings from epoch to epoch at a constant
    # rate (docs/pipeline.md, the demo), annealing settles it.
    lr_schedule: str = "constant"
    # Loss weights, with mean reductions. w_kl = 0.01 corresponds to a Laplace likelihood with a
    # scale of about 0.04 on [0, 1] images (the noise level) when the latent has a quarter as many
    # elements as the image: strong enough to regularise the latent space, weak enough not to blur
    # the spatial VAE. w_adv = 0.01 keeps the adversarial gradient a refinement of the L1 one
    # (-log D is ~0.7 while L1 is a few hundredths), as in VAEGAN-style training.
    w_rec: float = 1.0
    w_kl: float = 0.01
    w_adv: float = 0.01
    # "l1" (the paper) or "l2" (the denoising autoencoder of Kascenas et al. 2022).
    reconstruction: str = "l1"
    # Lesion-tolerant training on unlabelled patient scans: the largest `trim` fraction of
    # each batch's brain residuals is left out of the reconstruction loss (0: none).
    trim: float = 0.0
    # Denoising training (Kascenas et al. 2022): the input gets "coarse" noise, Gaussian of
    # `noise_std` drawn on a `noise_resolution`^2 grid, upsampled, shifted at random and added
    # inside the brain; the target is the clean slice. "none": plain autoencoding.
    noise: str = "none"
    noise_std: float = 0.2
    noise_resolution: int = 16
    seed: int = 0
    precision: str = "32-true"  # Lightning precision; "bf16-mixed" on CPUs/GPUs that have it
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    deterministic: bool = True

    def __post_init__(self) -> None:
        if self.lr_schedule not in ("constant", "cosine"):
            raise BrainUADError(f"train.lr_schedule {self.lr_schedule!r}: choose constant or "
                                "cosine")
        if self.subjects not in ("healthy", "all"):
            raise BrainUADError(f"train.subjects {self.subjects!r}: choose healthy or all")
        if self.reconstruction not in ("l1", "l2"):
            raise BrainUADError(f"train.reconstruction {self.reconstruction!r}: choose l1 or l2")
        if self.noise not in ("none", "coarse"):
            raise BrainUADError(f"train.noise {self.noise!r}: choose none or coarse")
        if not 0 <= self.trim < 1:
            raise BrainUADError(f"train.trim {self.trim}: must be in [0, 1)")

    @property
    def health(self) -> str | None:
        """The manifest health value training selects on (None: every subject)."""
        return "healthy" if self.subjects == "healthy" else None


RESIDUALS = ("abs", "positive", "hyperintense", "negative")
#: Which lesions each residual can see.
POLARITY = {"abs": "both", "positive": "bright", "hyperintense": "bright", "negative": "dark"}


@dataclass(frozen=True)
class Score:
    """What a detector can score, in one place: its name (`DetectConfig.score`), where its
    values lie (the calibration histograms' range: a residual of [0, 1] images in [0, 1];
    z-scores above 50 are counted at 50, far beyond any threshold) and whether it is computed
    against the normative maps (`normative.pt` in the model folder). Which kinds compute it:
    each kind's `scores`."""

    name: str
    range: tuple[float, float]
    needs_maps: bool = False


#: What is scored: the network's residual (the paper); the normative model's z-score; their
#: product, the residual where the voxel is also unusually bright; or the z-score against the
#: scan's own grey matter (`tissue`).
SCORES: dict[str, Score] = {s.name: s for s in (
    Score("residual", (0.0, 1.0)), Score("normative", (0.0, 50.0), needs_maps=True),
    Score("product", (0.0, 50.0), needs_maps=True), Score("tissue", (0.0, 50.0)))}


@dataclass
class DetectConfig:
    """Post-processing of the paper: 5x5x5 median, eroded brain mask, threshold, small parts."""

    median_size: int = 5
    # "residual" (the paper), "normative", "product" or "tissue" (see SCORES). The normative and
    # tissue scores are computed, median filtered and thresholded on the scan's own voxels; the
    # paper's residual is median filtered on the stack of network-sized slices, as before.
    score: str = "residual"
    normative_floor: float = 0.05  # lower bound of the normative spread, in [0, 1] units
    # "abs": |x - x_hat| as in the paper; "positive": max(x - x_hat, 0), only what is brighter
    # than the reconstruction (FLAIR lesions are hyperintense); "hyperintense": positive, and 0
    # where the input is below its `hyper_quantile` brain quantile (Baur et al. 2021's prior);
    # "negative": only what is darker (lesions dark in their contrast).
    residual: str = "abs"
    hyper_quantile: float = 0.9
    erosion_mm: float = 3.0  # "slightly eroded" brain mask
    # threshold without an operating point: this percentile of the scores of the held-out
    # healthy scans (the training manifest's `val` split; `train` where it has none)
    percentile: float = 98.0
    min_component: int = 6  # 3D components smaller than this many voxels are removed
    # Seeded components: a component above the threshold is kept only where some voxel of it
    # scores at least `seed_margin` above the threshold (0: every component), so a lesion's dim
    # rim is outlined with it while dim specks alone are not.
    seed_margin: float = 0.0
    # The tissue score's grey-matter reference: 0 one level for the whole brain; > 0 a level that
    # varies over the brain, the grey matter's Gaussian-weighted mean with this sigma in mm.
    reference_mm: float = 0.0
    # Passes of that local level: the first trims the grey matter (lesions out) around the scan's
    # level, each further one around the previous pass's local level (see models/tissue).
    reference_passes: int = 1
    # Components lying mostly at a healthy FLAIR's normal bright places (ependymal caps, septum,
    # periaqueductal grey, floor of the fourth ventricle; `preprocessing.normal_sites`): "flag"
    # keeps them in the mask and names their site in lesions.csv; "remove" takes them out of the
    # mask and the totals (on the template's grid only: elsewhere there are no sites to look at).
    normal_sites: str = "flag"
    slices: str = "brain"  # "brain" (every slice with brain) or "paper" (the 20 middle slices)
    batch_size: int = 32
    # Calibration subjects the threshold is taken on (0: all; else that many, evenly spread): for
    # AnoGAN, whose latent search makes every slice cost 100 passes through both networks.
    threshold_subjects: int = 0
    # Reconstruction precision: "32", "bf16" (autocast), or "auto": bf16 where the device has it
    # natively (about 2x faster at 256 px on a CPU with AVX-512 bf16; docs/speed.md), else 32.
    # Thresholds are calibrated for both, so either may run on any machine.
    precision: str = "auto"

    def __post_init__(self) -> None:
        if self.precision not in ("auto", "32", "bf16"):
            raise BrainUADError(f"detect.precision {self.precision!r}: choose auto, 32 or bf16")
        if self.score not in SCORES:
            raise BrainUADError(f"detect.score {self.score!r}: choose one of {', '.join(SCORES)}")
        if self.residual not in RESIDUALS:
            raise BrainUADError(f"detect.residual {self.residual!r}: choose one of "
                                f"{', '.join(RESIDUALS)}")
        if self.normal_sites not in ("flag", "remove"):
            raise BrainUADError(f"detect.normal_sites {self.normal_sites!r}: choose flag or "
                                "remove")
        if self.reference_passes < 1:
            raise BrainUADError(f"detect.reference_passes {self.reference_passes}: must be >= 1")
        if not 0 < self.hyper_quantile < 1:
            raise BrainUADError(f"detect.hyper_quantile {self.hyper_quantile}: must be in (0, 1)")

    def replaced(self, **values: Any) -> DetectConfig:
        """A copy with the values given (None: keep this one's), checked."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v is not None})

    def scoring_key(self, precision: str) -> str:
        """Everything that changes the score map, with the precision it is computed in (see
        `Detector.precision`): thresholds are kept per key."""
        key = f"slices={self.slices},residual={self.residual},median={self.median_size}," \
              f"erosion_mm={self.erosion_mm}"
        key += f",q={self.hyper_quantile}" if self.residual == "hyperintense" else ""
        if self.score in ("normative", "product"):
            key = f"score={self.score},floor={self.normative_floor}," + key
        elif self.score != "residual":
            key = f"score={self.score}," + key
        key += f",reference_mm={self.reference_mm}" if self.reference_mm else ""
        key += f",passes={self.reference_passes}" if self.reference_passes != 1 else ""
        return key + (f",precision={precision}" if precision != "32" else "")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    version: int = CONFIG_VERSION

    def to_dict(self, fields: Fields | None = None) -> dict[str, Any]:
        """Every setting, or with `fields` only those (per section: names, or None for all):
        what a model kind uses, so a folder's config says nothing that means nothing for it."""
        data = dataclasses.asdict(self)
        if fields is None:
            return data
        out: dict[str, Any] = {}
        for section, names in fields.items():
            out[section] = (data[section] if names is None
                            else {k: data[section][k] for k in names})
        return {**out, "version": self.version}

    def to_yaml(self, fields: Fields | None = None) -> str:
        return yaml.safe_dump(self.to_dict(fields), sort_keys=False)


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise BrainUADError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                            f"known: {', '.join(known)}")
    return cls(**values)


def from_dict(data: dict[str, Any], where: str = "config") -> RunConfig:
    """Build a RunConfig from nested dicts, each section optional."""
    if not isinstance(data, dict):
        raise BrainUADError(f"{where}: expected a mapping with model/train/detect sections")
    version = data.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise BrainUADError(f"{where}: config version {version} is not supported by this brainuad "
                            f"(version {CONFIG_VERSION}); retrain with this version")
    sections = {"model": ModelConfig, "train": TrainConfig, "detect": DetectConfig}
    unknown = sorted(set(data) - set(sections) - {"version"})
    if unknown:
        raise BrainUADError(f"{where}: unknown section(s) {', '.join(unknown)}")
    parts = {}
    for name, cls in sections.items():
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise BrainUADError(f"{where}: section {name!r} must be a mapping")
        parts[name] = _build(cls, section, f"{where} [{name}]")
    cfg = RunConfig(**parts)
    cfg.model.validate()
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BrainUADError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise BrainUADError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    return data or {}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Nested dict update: sections of `override` replace keys of `base`'s sections."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out

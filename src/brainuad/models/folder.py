"""A model folder: a run directory that `brainuad train` wrote, or a bundled model. Everything
detection needs, nothing that can run code when loaded, and a `model.json` that says what it is.

    model.json          what the model is (`ModelInfo`): kind, modality, lesion polarity, the
                        files it holds, version, training data, licence, card
    config.yaml         the settings its kind uses (yaml.safe_load to read)
    model.pt            a network's weights as a plain state_dict (network kinds only)
    normative.pt        normative maps (the normative kind; a network's `product` scoring)
    threshold.json      label-free quantiles per scoring, validation operating points
    provenance.json     versions, git commit, training manifest and its checksum (runs only)
    checkpoints/        Lightning checkpoints (last.ckpt, best.ckpt) for --resume (runs only)
    log/metrics.csv     losses per step and epoch (runs only)
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brainuad.config import SCORES, RunConfig, from_dict, load_yaml
from brainuad.errors import BrainUADError
from brainuad.io.files import atomic_path, file_checksum, write_text
from brainuad.io.manifest import MODALITIES
from brainuad.io.provenance import git_commit
from brainuad.io.weights import safe_torch_load
from brainuad.models.kind import POLARITIES, polarity
from brainuad.models.registry import KINDS, kind_of

if TYPE_CHECKING:
    import torch

INFO, CONFIG, MODEL, MAPS, THRESHOLD, PROVENANCE = (
    "model.json", "config.yaml", "model.pt", "normative.pt", "threshold.json", "provenance.json")
CHECKPOINTS = "checkpoints"
LAST = f"{CHECKPOINTS}/last.ckpt"  # what --resume continues from
SCHEMA = 1


@dataclass(frozen=True)
class ModelInfo:
    """model.json: read by the detector, `brainuad models`, `segment` and the release script."""

    name: str
    version: str
    kind: str  # a key of `registry.KINDS`
    modality: str  # the manifest column (and scan) it reads
    polarity: str  # which lesions it can see: bright, dark or both
    description: str
    files: list[str]  # what the folder holds besides model.json
    training_data: str  # what it learned from, in words
    trained_on: list[str]  # the subjects
    licence: str  # of the training data, which a model derived from it inherits
    card: str | None  # its model card (docs/models/NAME.md); None for a run directory
    extra: dict[str, Any] = field(default_factory=dict)  # recipe, commit, release date

    @classmethod
    def read(cls, folder: Path) -> ModelInfo:
        path = folder / INFO
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise BrainUADError(f"{path}: not readable JSON ({err})") from err
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise BrainUADError(f"{path}: not a model.json of schema {SCHEMA}")
        required = [f.name for f in fields(cls) if f.name != "extra"]
        missing = [k for k in required if k not in data]
        if missing:
            raise BrainUADError(f"{path}: lacks {', '.join(missing)} (a model.json holds "
                                f"{', '.join(required)})")
        info = cls(**{k: data[k] for k in required},
                   extra={k: v for k, v in data.items() if k not in required and k != "schema"})
        info.check(path)
        return info

    def check(self, path: Path) -> None:
        """Values a reader can rely on, and the files it names present and not empty."""
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.modality not in MODALITIES:
            problems.append(f"modality {self.modality!r} is not one of {', '.join(MODALITIES)}")
        if self.polarity not in POLARITIES:
            problems.append(f"polarity {self.polarity!r} is not one of {', '.join(POLARITIES)}")
        if not isinstance(self.files, list) or CONFIG not in self.files \
                or THRESHOLD not in self.files:
            problems.append(f"files must list {CONFIG} and {THRESHOLD}")
        else:
            for name in self.files:
                file = path.parent / name
                if not file.is_file() or file.stat().st_size == 0:
                    problems.append(f"{name} is missing or empty")
        if problems:
            raise BrainUADError(f"{path}: {'; '.join(problems)}")

    def write(self, folder: Path) -> None:
        data = {"schema": SCHEMA, **{k: v for k, v in asdict(self).items() if k != "extra"},
                **self.extra}
        write_text(folder / INFO, json.dumps(data, indent=2) + "\n")


def describe_run(run: Path, cfg: RunConfig) -> ModelInfo:
    """The model.json of a run directory (`brainuad train`), from its config and provenance."""
    record = read_provenance(run)
    kind = kind_of(cfg.model.name)
    return ModelInfo(
        name=run.name, version="run", kind=kind.name, modality=cfg.train.modality,
        polarity=polarity(cfg.detect),
        description=f"{cfg.model.name} ({kind.summary}), trained by brainuad train",
        files=kind.files(cfg, (run / MAPS).is_file()),
        training_data=f"the {cfg.train.health or 'train'} subjects of "
                      f"{record.get('manifest', 'its manifest')}",
        trained_on=record.get("training_subjects", []),
        licence="that of its training data", card=None,
        extra={"brainuad": record.get("brainuad"), "git_commit": record.get("git_commit")})


def read_info(folder: Path) -> ModelInfo:
    """A folder's model.json; a run directory that a brainuad before model.json wrote is
    described from its config."""
    if (folder / INFO).is_file():
        return ModelInfo.read(folder)
    return describe_run(folder, read_config(folder))


def write_config(run: Path, cfg: RunConfig) -> None:
    """config.yaml with the settings the model's kind uses."""
    write_text(run / CONFIG, cfg.to_yaml(kind_of(cfg.model.name).fields))


def read_config(run: Path) -> RunConfig:
    if not (run / CONFIG).is_file():
        raise BrainUADError(f"{run}: not a model folder (no {CONFIG}); train one first")
    return from_dict(load_yaml(run / CONFIG), str(run / CONFIG))


def needs_maps(cfg: RunConfig) -> bool:
    return SCORES[cfg.detect.score].needs_maps


def save_weights(run: Path, state_dict: dict[str, torch.Tensor]) -> None:
    import torch

    with atomic_path(run / MODEL) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)


def load_weights(run: Path) -> dict[str, torch.Tensor]:
    import torch

    state = safe_torch_load(run / MODEL)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BrainUADError(f"{run / MODEL}: expected a state_dict of tensors")
    return state


def write_threshold(run: Path, info: dict[str, Any]) -> None:
    write_text(run / THRESHOLD, json.dumps(info, indent=2) + "\n")


def read_threshold_info(run: Path) -> dict[str, Any]:
    """threshold.json: the quantiles per scoring and the operating points."""
    path = run / THRESHOLD
    if not path.is_file():
        raise BrainUADError(f"{path}: missing; the run did not finish training")
    try:
        info = json.loads(path.read_text())
        if not isinstance(info["scorings"], dict) or not info["scorings"]:
            raise ValueError("no scoring")
    except (ValueError, KeyError, TypeError) as err:
        raise BrainUADError(f"{path}: damaged ({err})") from err
    return info


def training_manifest(run: Path, why: str) -> Path:
    """The manifest a run was trained on (provenance.json), for work that needs its scans
    (`why`, e.g. calibration)."""
    source = Path(read_provenance(run).get("manifest", ""))
    if not source.is_file():
        raise BrainUADError(f"{run}: {why} needs the scans the run was trained on, but its "
                            f"manifest {source} is gone")
    return source


def read_provenance(run: Path) -> dict[str, Any]:
    path = run / PROVENANCE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as err:
        raise BrainUADError(f"{path}: damaged ({err})") from err


def provenance(manifest: Path, excluded: dict[str, str] | None = None,
               subjects: list[str] | None = None) -> dict[str, Any]:
    """What produced this run: versions, git commit (if any), the training manifest's checksum,
    the subjects it trained on, and those left out under --keep-going (with why)."""
    from importlib.metadata import version

    import numpy
    import torch

    import brainuad

    return {
        "brainuad": brainuad.__version__, "git_commit": git_commit(),
        "python": platform.python_version(), "torch": torch.__version__,
        "lightning": version("lightning"), "numpy": numpy.__version__,
        "manifest": str(Path(manifest).resolve()), "manifest_sha256": file_checksum(manifest),
        "training_subjects": subjects or [], "excluded_subjects": excluded or {},
    }


def write_provenance(run: Path, manifest: Path, excluded: dict[str, str] | None = None,
                     subjects: list[str] | None = None) -> None:
    write_text(run / PROVENANCE, json.dumps(provenance(manifest, excluded, subjects), indent=2)
               + "\n")

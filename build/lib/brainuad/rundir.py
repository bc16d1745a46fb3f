"""The run directory: everything `detect` needs, and nothing that can run code when loaded.

    run/config.yaml       the full RunConfig (yaml.safe_load to read)
    run/model.pt          the chosen weights as a plain state_dict (torch.load weights_only=True)
    run/threshold.json    the detection threshold and how it was computed
    run/provenance.json   brainuad/library versions, git commit, training manifest checksum
    run/checkpoints/      Lightning checkpoints (last.ckpt, best.ckpt) for --resume
    run/log/metrics.csv   losses per step and epoch, learning rates per epoch
"""

from __future__ import annotations

import json
import pickle
import platform
import subprocess
import warnings
from pathlib import Path
from typing import Any

import torch

from brainuad.config import RunConfig, from_dict, load_yaml
from brainuad.errors import BrainUADError
from brainuad.io import atomic_path, file_checksum, write_text

CONFIG, MODEL, THRESHOLD, PROVENANCE = "config.yaml", "model.pt", "threshold.json", \
    "provenance.json"
CHECKPOINTS = "checkpoints"
LAST = f"{CHECKPOINTS}/last.ckpt"  # what --resume continues from


def safe_torch_load(path: Path) -> Any:
    """torch.load that never unpickles arbitrary objects: refuse anything but tensors/containers."""
    if not path.is_file():
        raise BrainUADError(f"{path}: file not found")
    try:
        with warnings.catch_warnings():  # torch's remarks on pickle protocols are not for users
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise BrainUADError(f"{path}: refused to load: it holds Python objects other than "
                            "tensors and plain values, which could run code when loaded") from err
    except (RuntimeError, EOFError, AttributeError, ValueError) as err:
        raise BrainUADError(f"{path}: refused to load: not a plain weights file, or damaged "
                            f"({str(err).splitlines()[0][:160]})") from err


def write_config(run: Path, cfg: RunConfig) -> None:
    write_text(run / CONFIG, cfg.to_yaml())


def read_config(run: Path) -> RunConfig:
    if not (run / CONFIG).is_file():
        raise BrainUADError(f"{run}: not a run directory (no {CONFIG}); train one first")
    return from_dict(load_yaml(run / CONFIG), str(run / CONFIG))


def save_weights(run: Path, state_dict: dict[str, torch.Tensor]) -> None:
    with atomic_path(run / MODEL) as tmp:
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)


def load_weights(run: Path) -> dict[str, torch.Tensor]:
    state = safe_torch_load(run / MODEL)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BrainUADError(f"{run / MODEL}: expected a state_dict of tensors")
    return state


def write_threshold(run: Path, info: dict[str, Any]) -> None:
    write_text(run / THRESHOLD, json.dumps(info, indent=2) + "\n")


def read_threshold_info(run: Path) -> dict[str, Any]:
    """threshold.json: the run's threshold and its training-residual quantiles per scoring."""
    path = run / THRESHOLD
    if not path.is_file():
        raise BrainUADError(f"{path}: missing; the run did not finish training")
    try:
        info = json.loads(path.read_text())
        float(info["threshold"])
    except (ValueError, KeyError, TypeError) as err:
        raise BrainUADError(f"{path}: damaged ({err})") from err
    return info


def read_threshold(run: Path) -> float:
    return float(read_threshold_info(run)["threshold"])


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
    import lightning
    import numpy

    import brainuad

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(brainuad.__file__).parent, timeout=5,
                                check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "brainuad": brainuad.__version__, "git_commit": commit,
        "python": platform.python_version(), "torch": torch.__version__,
        "lightning": lightning.__version__, "numpy": numpy.__version__,
        "manifest": str(Path(manifest).resolve()), "manifest_sha256": file_checksum(manifest),
        "training_subjects": subjects or [], "excluded_subjects": excluded or {},
    }


def write_provenance(run: Path, manifest: Path, excluded: dict[str, str] | None = None,
                     subjects: list[str] | None = None) -> None:
    write_text(run / PROVENANCE, json.dumps(provenance(manifest, excluded, subjects), indent=2)
               + "\n")

"""Models that ship inside the package, so a user with one scan needs no training and no
download: `src/brainuad/weights/<name>/` is a complete, read-only model folder (config.yaml,
model.pt, threshold.json) plus `model.json` (version, what it is for, what it was trained on;
the model card in docs/models/ says the rest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from brainuad.errors import BrainUADError

WEIGHTS = Path(__file__).parent / "weights"
INFO = "model.json"
#: What `brainuad segment` uses unless told otherwise.
DEFAULT = "flair-ms"


@dataclass
class BundledModel:
    name: str
    folder: Path
    info: dict

    @property
    def version(self) -> str:
        return str(self.info.get("version", "?"))

    @property
    def megabytes(self) -> float:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file()) / 1e6


def available() -> list[BundledModel]:
    """Every bundled model, by name."""
    models = []
    for folder in sorted(WEIGHTS.iterdir()) if WEIGHTS.is_dir() else []:
        if (folder / INFO).is_file():
            models.append(BundledModel(folder.name, folder,
                                       json.loads((folder / INFO).read_text())))
    return models


def resolve(source: str | Path) -> Path:
    """The folder of a model: a run directory as given, or a bundled model's name."""
    path = Path(source)
    if path.is_dir():
        return path
    for model in available():
        if model.name == str(source):
            return model.folder
    names = ", ".join(m.name for m in available()) or "none"
    raise BrainUADError(f"{source}: neither a run directory nor a bundled model "
                        f"(bundled: {names})")


def describe(folder: Path) -> dict:
    """Name and version of the model in `folder` (a run directory: its folder name)."""
    if (folder / INFO).is_file():
        info = json.loads((folder / INFO).read_text())
        return {"name": info.get("name", folder.name), "version": str(info.get("version", "?"))}
    return {"name": folder.name, "version": "run directory"}

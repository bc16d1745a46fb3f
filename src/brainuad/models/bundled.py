"""Models that ship inside the package, so a user with one scan needs no training and no
download: `src/brainuad/weights/<name>/` is a complete, read-only model folder whose model.json
says what it is (`folder.ModelInfo`; its model card in docs/models/ says the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from brainuad.errors import BrainUADError
from brainuad.models.folder import INFO, ModelInfo, read_info

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
#: What `brainuad segment` uses unless told otherwise.
DEFAULT = "flair-ms"


@dataclass
class BundledModel:
    folder: Path
    info: ModelInfo

    @property
    def megabytes(self) -> float:
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file()) / 1e6


def available() -> list[BundledModel]:
    """Every bundled model, by name (each model.json validated)."""
    folders = sorted(WEIGHTS.iterdir()) if WEIGHTS.is_dir() else []
    return [BundledModel(f, ModelInfo.read(f)) for f in folders if (f / INFO).is_file()]


def resolve(source: str | Path) -> Path:
    """The folder of a model: a run directory as given, or a bundled model's name."""
    path = Path(source)
    if path.is_dir():
        return path
    folder = WEIGHTS / str(source)
    if str(source) and "/" not in str(source) and (folder / INFO).is_file():
        return folder
    names = ", ".join(m.info.name for m in available()) or "none"
    raise BrainUADError(f"{source}: neither a model folder nor a bundled model "
                        f"(bundled: {names})")


def describe(folder: Path) -> dict:
    """Name and version of the model in `folder`."""
    info = read_info(folder)
    return {"name": info.name, "version": info.version}

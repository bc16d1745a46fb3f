"""Cohort manifests: a CSV with one row per subject, the contract between every stage.

Columns: `subject`, `split` (train/val/test), `health` (healthy/patient), one column per modality
(`flair`, `t1`, `t2`, ...) holding a path, and optional `mask` (brain mask) and `label` (lesion
mask) paths. A manifest that `preprocess` wrote for registered scans also has `native` (the raw
reference scan) and `transform` (atlas -> scan, ITK text), so `detect` can write its maps back on
the scan's own grid, where the `label` of such a subject lies. Paths are relative to the
manifest's folder (absolute paths are allowed too). Any other column is kept as metadata.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from brainuad.errors import BrainUADError
from brainuad.io.files import write_csv

REQUIRED_COLUMNS = ("subject", "split", "health")
MODALITIES = ("flair", "t1", "t2", "t1post", "pd")
OPTIONAL_PATHS = ("mask", "label", "native", "transform")
PATH_COLUMNS = (*MODALITIES, *OPTIONAL_PATHS)
SPLITS = ("train", "val", "test")
HEALTH = ("healthy", "patient")
#: A subject name is a folder name under every stage's output: never a path that leaves it.
SAFE_NAME = re.compile(r"^[^/\\\x00-\x1f]+$")

T = TypeVar("T")


@dataclass
class Subject:
    """One manifest row with its paths resolved to absolute paths (None where the cell is empty)."""

    subject: str
    split: str
    health: str
    images: dict[str, Path]
    mask: Path | None = None
    label: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)
    native: Path | None = None
    transform: Path | None = None

    def image(self, modality: str, manifest: Path | None = None) -> Path:
        if modality not in self.images:
            where = f"{manifest}: " if manifest else ""
            raise BrainUADError(f"{where}subject {self.subject!r} has no {modality!r} image")
        return self.images[modality]


@dataclass
class Manifest:
    path: Path
    subjects: list[Subject]

    @property
    def root(self) -> Path:
        return self.path.parent

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if any(m in s.images for s in self.subjects)]

    def select(self, split: str | None = None, health: str | None = None) -> list[Subject]:
        return [
            s
            for s in self.subjects
            if (split is None or s.split == split) and (health is None or s.health == health)
        ]


def read_manifest(path: str | os.PathLike, check_files: bool = True) -> Manifest:
    """Read and validate a manifest; every problem is one `BrainUADError` naming the file."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "not found"
        raise BrainUADError(f"{path}: manifest {what}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise BrainUADError(f"{path}: manifest cannot be read ({err})") from err
    lines = text.splitlines()
    rows = list(csv.DictReader(lines))
    header = next(csv.reader(lines), [])
    columns = [c.strip() for c in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise BrainUADError(f"{path}: manifest is missing column(s) {', '.join(missing)}")
    if not any(c in MODALITIES for c in columns):
        raise BrainUADError(
            f"{path}: manifest has no image column (one of {', '.join(MODALITIES)})"
        )
    if not rows:
        raise BrainUADError(f"{path}: manifest has no subjects")

    subjects: list[Subject] = []
    seen: set[str] = set()
    for line, raw in enumerate(rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        where = f"{path}, line {line}"
        name = row["subject"]
        if not name:
            raise BrainUADError(f"{where}: empty subject name")
        if not SAFE_NAME.match(name) or name in (".", ".."):
            raise BrainUADError(f"{where}: subject name {name!r} cannot be a folder name (every "
                                "stage writes out/<subject>/): no '/', '\\', control characters,"
                                " '.' or '..'")
        if name.lower() in seen:  # folders differing only in case collide on macOS, Windows
            raise BrainUADError(f"{where}: duplicate subject {name!r} (names must differ by "
                                "more than case)")
        seen.add(name.lower())
        if row["split"] not in SPLITS:
            raise BrainUADError(f"{where}: split {row['split']!r} is not one of {SPLITS}")
        if row["health"] not in HEALTH:
            raise BrainUADError(f"{where}: health {row['health']!r} is not one of {HEALTH}")
        paths: dict[str, Path] = {}
        for column in PATH_COLUMNS:
            if row.get(column):
                resolved = (path.parent / row[column]).resolve()
                if check_files and not resolved.is_file():
                    problem = "is a directory" if resolved.is_dir() else "does not exist"
                    raise BrainUADError(
                        f"{where}: {column} path {row[column]!r} of subject {name!r} {problem}"
                    )
                paths[column] = resolved
        images = {m: paths[m] for m in MODALITIES if m in paths}
        if not images:
            raise BrainUADError(f"{where}: subject {name!r} has no image path")
        extra = {k: v for k, v in row.items() if k not in (*REQUIRED_COLUMNS, *PATH_COLUMNS)}
        subjects.append(
            Subject(name, row["split"], row["health"], images, paths.get("mask"),
                    paths.get("label"), extra, paths.get("native"), paths.get("transform"))
        )
    return Manifest(path, subjects)


def write_manifest(path: str | os.PathLike, subjects: list[Subject]) -> Manifest:
    """Write `subjects` as a manifest at `path` (atomically), with paths relative to its folder."""
    path = Path(path)
    root = path.parent.resolve()
    extras = sorted({k for s in subjects for k in s.extra})
    modalities = [m for m in MODALITIES if any(m in s.images for s in subjects)]
    optional = [c for c in OPTIONAL_PATHS if any(getattr(s, c) for s in subjects)]
    columns = [*REQUIRED_COLUMNS, *modalities, *optional, *extras]

    def rel(p: Path | None) -> str:
        return "" if p is None else os.path.relpath(Path(p).resolve(), root)

    rows = []
    for s in subjects:
        row = {"subject": s.subject, "split": s.split, "health": s.health}
        row |= {m: rel(s.images.get(m)) for m in modalities}
        row |= {c: rel(getattr(s, c)) for c in optional}
        row |= {k: s.extra.get(k, "") for k in extras}
        rows.append(row)
    write_csv(path, rows, columns)
    return Manifest(path, subjects)


def shard(subjects: list[T], spec: str | None, where: Path | str = "") -> list[T]:
    """The subjects (or any items) of shard `"i/n"` (1 <= i <= n): every n-th one starting at
    the i-th, so the n shards are disjoint and together the whole list. None means all."""
    if spec is None:
        return subjects
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        i = n = 0
    if not 1 <= i <= n:
        raise BrainUADError(f"--shard {spec!r}: expected i/n with 1 <= i <= n, e.g. 1/4")
    chosen = subjects[i - 1::n]
    if not chosen:
        raise BrainUADError(f"{where}: shard {spec} has no subjects ({len(subjects)} in all)")
    return chosen

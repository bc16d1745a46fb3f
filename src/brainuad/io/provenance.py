"""What made an output folder, recorded beside it, so that a rerun redoes exactly what changed
(as make and Snakemake redo a target whose recipe changed, and nnU-Net's outputs carry the plans
that made them).

A record holds the inputs' content hashes (not their paths or times: a dataset moved or copied
anew is not redone, a different scan copied over the same path is), the model (name, version,
each of its files' hashes), every setting that changes a result, and brainuad's version. Two
records that differ in anything but the version mean the output must be redone; a different
version alone is said, not acted on (`--force` redoes everything).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from brainuad import __version__
from brainuad.io.files import file_checksum

#: the key of the record in a summary or sidecar
KEY = "made_by"


def git_commit() -> str | None:
    """The git commit of brainuad's source tree, where it runs from a clone (None from a
    wheel): what benchmark results and trained runs record."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5,
                              check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def content_hash(path: Path) -> str:
    """SHA-256 of a file's content, or of a folder's files (a DICOM series: each file's name
    and content, in name order)."""
    path = Path(path)
    if not path.is_dir():
        return file_checksum(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path)}\0{file_checksum(item)}\0".encode())
    return digest.hexdigest()


def record(inputs: dict[str, Path], settings: dict, model: dict | None = None) -> dict:
    """The record of an output made from `inputs` (name -> file or folder) with `settings`
    (plain JSON values) and `model` (`model_record`)."""
    made = {"inputs": {name: content_hash(path) for name, path in inputs.items()},
            "settings": settings, "brainuad": __version__}
    if model is not None:
        made["model"] = model
    return made


def model_record(name: str, version: str, folder: Path, files: list[str]) -> dict:
    """A model as a record names it: its name, version and each file's hash."""
    return {"name": name, "version": version,
            "files": {f: file_checksum(Path(folder) / f) for f in sorted(files)}}


def _flat(value: object, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for key, item in value.items():
            out |= _flat(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return {prefix: value}


def _said(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def changed(old: dict | None, new: dict) -> str | None:
    """What differs between the record an output was made with (`old`; None: none, made by an
    older brainuad) and the one a rerun would make, in one line; None where nothing does
    (brainuad's version left out: `version_note`)."""
    if not old:
        return "no record of what made it (an older brainuad)"
    said = []
    for name in new["inputs"]:
        if old.get("inputs", {}).get(name) != new["inputs"][name]:
            said.append(f"the {name}'s content")
    said += [f"no {name} now" for name in old.get("inputs", {}) if name not in new["inputs"]]
    old_model, new_model = old.get("model") or {}, new.get("model") or {}
    if (old_model.get("name"), old_model.get("version")) != (new_model.get("name"),
                                                              new_model.get("version")):
        said.append(f"model {old_model.get('name')} {old_model.get('version')} -> "
                    f"{new_model.get('name')} {new_model.get('version')}")
    elif old_model.get("files") != new_model.get("files"):
        said.append(f"model {new_model.get('name')}'s files")
    before, after = _flat(old.get("settings", {})), _flat(new["settings"])
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            said.append(f"{key} {_said(before.get(key))} -> {_said(after.get(key))}")
    return "; ".join(said) or None


def version_note(old: dict | None) -> str | None:
    """Where an output kept as it was came from another brainuad version: the words."""
    if old and old.get("brainuad") != __version__:
        return f"made by brainuad {old.get('brainuad')} (this is {__version__}); --force redoes it"
    return None


def reuse(path: Path, made: dict, force: bool = False) -> tuple[dict | None, str | None]:
    """The summary or sidecar at `path` (holding its record under `KEY`) where what made it
    is what would make it now, else None: the output is to be redone; and what to say of it
    (why it is redone, or that another brainuad made what is kept)."""
    try:
        old = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None, "its record cannot be read: redone"
    if old is None:
        return None, None
    if force:
        return None, "redone (--force)"
    why = changed(old.get(KEY), made)
    if why is not None:
        return None, f"made with something else, redone: {why}"
    return old, version_note(old.get(KEY))

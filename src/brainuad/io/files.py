"""Output files written atomically, and the checksums inputs are recognised by.

Writing goes to a temporary name in the same folder and is renamed at the end, so an interrupted
run never leaves a half-written file under its final name.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds.

    The temporary name keeps the final suffixes (`.nii.gz`, `.csv`, ...) so libraries that pick the
    format from the name still work, and starts with a dot so globbing for outputs does not see it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.partial-", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; outputs are shared
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside `folder`; it replaces `folder` (whatever that held)
    only if the block succeeds, so `folder` is always either the old complete output or the new
    one. Leftovers of a run killed before the swap are removed by `remove_partial_folders`."""
    folder = Path(folder)
    remove_partial_folders(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only; outputs are shared
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old-{tmp.name.rsplit('-', 1)[1]}")
            os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old)
        else:
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_partial_folders(folder: Path) -> None:
    """The temporary folders a killed `atomic_folder` left beside `folder` (only that output's:
    other processes may be writing their own beside it)."""
    folder = Path(folder)
    if folder.parent.is_dir():
        for stale in (*folder.parent.glob(f".{folder.name}.partial-*"),
                      *folder.parent.glob(f".{folder.name}.old-*")):
            shutil.rmtree(stale, ignore_errors=True)


def file_checksum(path: Path) -> str:
    """SHA-256 of a file's content (what a manifest or an input file is recognised by)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def remove_partials(folder: Path) -> None:
    """Delete temporary files that a killed writer left in `folder` (see `atomic_path`), before
    its outputs are written again: one subject's folder, which only one process writes."""
    if folder.is_dir():
        for stale in folder.glob(".*.partial-*"):
            stale.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Rows as a CSV table (atomically); columns in first-seen order unless given."""
    buffer = io.StringIO()
    fields = columns or list(dict.fromkeys(k for row in rows for k in row))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())

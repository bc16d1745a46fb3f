"""The scans a user hands over: NIfTI files, folders holding one DICOM series, folders of
such scans, manifests; named for the output folders they get."""

from __future__ import annotations

import re
from pathlib import Path

from brainuad.errors import BrainUADError
from brainuad.io.manifest import read_manifest

NIFTI = (".nii.gz", ".nii")
#: The last name part that says a scan's modality (BIDS suffixes and common names).
NAMED = {"flair": "flair", "t1w": "t1", "t1": "t1", "t2w": "t2", "t2": "t2", "pd": "pd",
         "pdw": "pd", "t1post": "t1post", "t1ce": "t1post", "t1gd": "t1post"}


def named_modality(name: str) -> str | None:
    """The modality a scan's file name says (`sub-01_ses-1_FLAIR` -> flair), if it says one."""
    last = re.split(r"[_\-. ]", name.lower())[-1]
    return NAMED.get(last)


def scan_name(path: Path) -> str:
    name = path.name
    for suffix in NIFTI:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def find_scans(sources: list[str | Path], modality: str) -> list[tuple[str, Path]]:
    """(name, path) of every scan given: NIfTI files, folders holding one DICOM series, folders
    of NIfTI files, and manifests (their `modality` column). A scan is named by its file (or
    manifest subject); files of the same name by their folder and file. A manifest without
    that column, or a file whose name says another modality (`sub-01_T1w.nii.gz` for a FLAIR
    model), is refused."""
    found: list[tuple[str, Path]] = []
    for source in map(Path, sources):
        if source.suffix == ".csv":
            manifest = read_manifest(source)
            if modality not in manifest.modalities:
                raise BrainUADError(f"{source}: no {modality} column, and the model reads "
                                    f"{modality} (the manifest has "
                                    f"{', '.join(manifest.modalities)})")
            found += [(s.subject, s.images[modality]) for s in manifest.subjects
                      if modality in s.images]
        elif source.is_dir() and not has_dicom(source):
            inside = sorted(p for p in source.iterdir() if p.name.endswith(NIFTI))
            inside += sorted(p for p in source.iterdir() if p.is_dir() and has_dicom(p))
            if not inside:
                raise BrainUADError(f"{source}: no NIfTI file and no DICOM series in it")
            found += [_named(p, modality) for p in inside]
        elif source.exists():
            found.append(_named(source, modality))
        else:
            raise BrainUADError(f"{source}: no such file or folder")
    stems = [name.lower() for name, _ in found]
    found = [(f"{path.parent.name}_{name}" if stems.count(name.lower()) > 1 else name, path)
             for name, path in found]  # patient1/FLAIR.nii.gz, patient2/FLAIR.nii.gz
    seen: dict[str, Path] = {}
    for name, path in found:
        # names are folder names under OUT: ones that differ only in case collide on macOS
        # and Windows file systems
        if name.lower() in seen:
            raise BrainUADError(f"{path}: its name {name!r} is also that of {seen[name.lower()]}"
                                " (folder names must differ by more than case)")
        seen[name.lower()] = path
    return found


def _named(path: Path, modality: str) -> tuple[str, Path]:
    name = scan_name(path)
    named = named_modality(name)
    if named is not None and named != modality:
        raise BrainUADError(f"{path}: its name says {named}, and the model reads {modality}")
    return name, path


def has_dicom(folder: Path) -> bool:
    import SimpleITK as sitk

    return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))



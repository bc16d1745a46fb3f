"""Scans in (NIfTI, or a folder with DICOM series: its FLAIR, or the one asked for) and out
(NIfTI), validated.

Reading returns the voxels together with the affine, so whatever is written later can reuse the
input's geometry. Every problem with a file is raised as a one-line `BrainUADError` that names the
file; every NIfTI is written atomically (`files.atomic_path`).
"""

from __future__ import annotations

import functools
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from brainuad.errors import BrainUADError, first_line
from brainuad.io.files import atomic_path

#: Affines that differ by less than this (mm) are taken to be the same geometry.
AFFINE_TOLERANCE = 1e-3
#: The most voxels a scan's header may promise (512^3: generous for MRI), checked before any
#: data is read, so a few-kB file whose header claims billions of voxels is refused instead of
#: allocating tens of GB. `BRAINUAD_MAX_VOXELS` sets another limit.
MAX_VOXELS = 512**3


def max_voxels() -> int:
    value = os.environ.get("BRAINUAD_MAX_VOXELS")
    try:
        return int(value) if value else MAX_VOXELS
    except ValueError as err:
        raise BrainUADError(f"BRAINUAD_MAX_VOXELS={value!r}: expected a whole number") from err


def check_header(path: Path, shape: tuple[int, ...]) -> None:
    """Refuse, from the header alone, more than 4 dimensions, a 4th that is not 1, or more
    voxels than `max_voxels()`."""
    if len(shape) > 4 or (len(shape) == 4 and shape[3] != 1):
        raise BrainUADError(f"{path}: expected a 3D image, got shape {tuple(shape)}")
    count = int(np.prod(np.asarray(shape, dtype=np.float64)))
    if count > max_voxels():
        raise BrainUADError(f"{path}: header promises {tuple(shape)} = {count:,} voxels, more "
                            f"than the limit of {max_voxels():,} (BRAINUAD_MAX_VOXELS)")


@dataclass
class Volume:
    """A 3D image: voxels `(X, Y, Z)` as float32 and the voxel-to-world affine `(4, 4)`."""

    data: np.ndarray
    affine: np.ndarray
    path: Path | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))


def _open(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """A NIfTI file's image object, its header checked (`check_header`); no data read yet."""
    if not path.exists():
        raise BrainUADError(f"{path}: file not found")
    if path.is_dir():
        raise BrainUADError(f"{path}: is a directory, expected a NIfTI file")
    if path.stat().st_size == 0:
        raise BrainUADError(f"{path}: file is empty")
    try:
        image = nib.load(str(path))  # the header only
    except (OSError, EOFError, zlib.error, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise BrainUADError(f"{path}: cannot be read as NIfTI ({first_line(err)})") from err
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise BrainUADError(f"{path}: is a {type(image).__name__}, expected NIfTI")
    check_header(path, image.shape)
    return image


def _read(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, Path]:
    path = Path(path)
    image = _open(path)
    try:
        data = np.asanyarray(image.dataobj)
    except (OSError, EOFError, zlib.error, ValueError) as err:
        raise BrainUADError(f"{path}: cannot be read as NIfTI ({first_line(err)})") from err
    except MemoryError as err:
        raise BrainUADError(f"{path}: too large to load into memory "
                            f"(shape {tuple(image.shape)})") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BrainUADError(f"{path}: expected a 3D image, got shape {data.shape}")
    if min(data.shape) < 1:
        raise BrainUADError(f"{path}: image has an empty dimension, shape {data.shape}")
    return data, np.asarray(image.affine, dtype=np.float64), path


def load_image(path: str | os.PathLike, allow_blank: bool = False) -> Volume:
    """Read an intensity image; it must be 3D, finite and (unless `allow_blank`, as for score
    maps where nothing is anomalous) neither all zero nor constant."""
    data, affine, path = _read(path)
    return _intensities(data, affine, path, allow_blank)


def _intensities(data: np.ndarray, affine: np.ndarray, path: Path,
                 allow_blank: bool = False) -> Volume:
    """The checks every intensity image passes, whatever its format."""
    try:
        data = data.astype(np.float32, copy=False)
    except MemoryError as err:
        raise BrainUADError(f"{path}: too large to load into memory ({data.shape})") from err
    bad = ~np.isfinite(data)
    if bad.any():
        raise BrainUADError(f"{path}: {int(bad.sum())} voxels are NaN or infinite")
    if allow_blank:
        return Volume(data, affine, path)
    if not data.any():
        raise BrainUADError(f"{path}: image is all zero")
    if data.max() == data.min():
        raise BrainUADError(f"{path}: image is constant ({float(data.flat[0])})")
    return Volume(data, affine, path)


def check_scan(path: str | os.PathLike, series: str | None = None) -> None:
    """What can be checked of a scan without reading its voxels (`load_scan`'s input): a NIfTI
    header, or a folder's DICOM series (`checked_series`) and its size."""
    path = Path(path)
    if path.is_dir():
        checked_series(path, series)
    else:
        _open(path)


#: words of a series' description or protocol name that say FLAIR
FLAIR_WORDS = ("FLAIR", "DARK FLUID", "DARK-FLUID", "DARKFLUID")


@dataclass(frozen=True)
class Series:
    """One DICOM series in a folder, as its first file's tags describe it."""

    uid: str
    description: str  # SeriesDescription, else ProtocolName
    files: tuple[str, ...]
    inversion_ms: float | None
    echo_ms: float | None
    frames: int = 1  # of its one file, for an enhanced (multi-frame) series
    size: tuple[int, int] = (0, 0)  # columns and rows of its first file

    @property
    def enhanced(self) -> bool:
        """One multi-frame file (an enhanced or legacy-converted enhanced MR image)."""
        return len(self.files) == 1 and self.frames > 1

    def is_flair(self) -> bool:
        """Named FLAIR, or an inversion recovery whose long inversion time nulls CSF (>= 1500
        ms) read at a long echo time (>= 60 ms, T2 weighting): what a FLAIR is."""
        if any(word in self.description.upper() for word in FLAIR_WORDS):
            return True
        return (self.inversion_ms or 0) >= 1500 and (self.echo_ms or 0) >= 60

    def __str__(self) -> str:
        size = f"{self.frames} frames" if self.enhanced else f"{len(self.files)} files"
        return f"{self.uid} ({self.description or 'no description'}, {size})"


def series_in(path: Path) -> list[Series]:
    """Every DICOM series in the folder `path` (SimpleITK/GDCM's grouping of its files, which
    reads every file's header): read once per folder and state of it (a file added or removed
    changes the folder's time), however many steps of a run ask (the check, the reading, the
    DICOM SEG, the summary)."""
    folder = Path(path).resolve()
    return list(_series_in(str(folder), folder.stat().st_mtime_ns))


@functools.lru_cache(maxsize=8)
def _series_in(folder: str, _changed: int) -> tuple[Series, ...]:
    import SimpleITK as sitk

    from brainuad.io.sitk import itk_reason

    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
        header = sitk.ImageFileReader()
        header.SetFileName(files[0])
        try:
            header.ReadImageInformation()
        except RuntimeError as err:
            raise BrainUADError(f"{files[0]}: cannot be read as DICOM ({itk_reason(err)})"
                                ) from err

        tags = {key: header.GetMetaData(key).strip() for key in header.GetMetaDataKeys()}
        frames = int(_number(tags.get("0028|0008")) or 1)
        timing = (_number(tags.get("0018|0082")), _number(tags.get("0018|0081")))
        if len(files) == 1 and frames > 1:
            timing = _enhanced_timing(files[0])
        found.append(Series(uid, tags.get("0008|103e") or tags.get("0018|1030", ""), files,
                            *timing, frames, tuple(header.GetSize()[:2])))
    return tuple(found)


def _enhanced_timing(file: str) -> tuple[float | None, float | None]:
    """Inversion and echo time of a multi-frame file: in its functional groups (enhanced MR),
    or in its converted attributes (legacy converted), wherever they are nested."""
    import pydicom

    try:
        dataset = pydicom.dcmread(file, stop_before_pixels=True)
    except (OSError, pydicom.errors.InvalidDicomError) as err:
        raise BrainUADError(f"{file}: cannot be read as DICOM ({first_line(err)})") from err
    found: dict[str, float] = {}
    for element in dataset.iterall():
        if element.keyword in ("InversionTime", "InversionTimes", "EchoTime",
                               "EffectiveEchoTime") and element.value not in (None, ""):
            value = _number(str(element.value[0] if element.VM > 1 else element.value))
            if value is not None:
                found.setdefault("echo" if "Echo" in element.keyword else "inversion", value)
    return found.get("inversion"), found.get("echo")


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def chosen_series(path: Path, series: str | None = None) -> Series:
    """The series of the folder `path` to read: `series` (a SeriesInstanceUID) where given,
    the only one, or the only FLAIR among several (a study export); else a one-line refusal
    that lists them."""
    found = series_in(path)
    if not found:
        raise BrainUADError(f"{path}: a folder with no DICOM series (and not a NIfTI file)")
    listed = "; ".join(map(str, found))
    if series is not None:
        picked = [s for s in found if s.uid == series]
        if not picked:
            raise BrainUADError(f"{path}: no series {series} in it (it holds: {listed})")
        return picked[0]
    if len(found) == 1:
        return found[0]
    flair = [s for s in found if s.is_flair()]
    if len(flair) == 1:
        return flair[0]
    said = "no FLAIR" if not flair else f"{len(flair)} FLAIRs"
    raise BrainUADError(f"{path}: holds {len(found)} DICOM series, {said} among them by their "
                        f"tags ({listed}); pick one with --series UID")


def checked_series(path: Path, series: str | None = None) -> Series:
    """The DICOM series to read in `path` (`chosen_series`), its size checked from the first
    header."""
    chosen = chosen_series(Path(path), series)
    if chosen.frames > 1 and not chosen.enhanced:
        raise BrainUADError(f"{path}: the series {chosen.uid} is {len(chosen.files)} multi-frame "
                            "files: only one multi-frame file per series, or one file per "
                            "slice, is read")
    check_header(path, (*chosen.size, chosen.frames if chosen.enhanced else len(chosen.files)))
    return chosen


def dicom_series(path: Path, series: str | None = None) -> list[str]:
    """The files of the DICOM series to read in `path` (`checked_series`), in the order of
    their slices (one file for an enhanced series)."""
    return list(checked_series(path, series).files)


#: (slice, row, column) voxel indices -> (column, row, slice): highdicom's volume axes -> ours
SWAP = np.eye(4)[[2, 1, 0, 3]]
#: LPS (DICOM's patient coordinates) <-> RAS (nibabel's)
LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slices_reversed(affine: np.ndarray) -> bool:
    """Whether the slice axis of an (X column, Y row, Z slice) grid with RAS `affine` runs
    against the normal of its slices (row direction x column direction, in DICOM's patient
    coordinates): the order highdicom stacks an enhanced image's frames in, where ITK's
    series reader stacks slices along the normal."""
    lps = LPS_RAS[:3, :3] @ affine[:3, :3]
    return float(np.dot(np.cross(lps[:, 0], lps[:, 1]), lps[:, 2])) < 0


def reversed_slices(affine: np.ndarray, depth: int) -> np.ndarray:
    """The affine of the same grid with its `depth` slices in the other order."""
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1.0, depth - 1
    return affine @ flip


def _read_enhanced(path: Path, file: str) -> tuple[np.ndarray, np.ndarray]:
    """An enhanced (multi-frame) MR image as one volume, its slices in the order ITK's series
    reader gives a single-frame series (so the two forms of a scan are the same voxels):
    highdicom places the frames by their own positions (ITK's reader of such files does not
    follow the per-frame geometry)."""
    import highdicom as hd
    import pydicom

    try:
        volume = hd.imread(file).get_volume(dtype=np.float32)
    except (ValueError, RuntimeError, KeyError, OSError,
            pydicom.errors.InvalidDicomError) as err:
        raise BrainUADError(f"{path}: its multi-frame DICOM cannot be read as one volume "
                            f"({first_line(err)})") from err
    except MemoryError as err:
        raise BrainUADError(f"{path}: too large to load into memory") from err
    if volume.array.ndim != 3:
        raise BrainUADError(f"{path}: expected one 3D grey-level volume, got frames of shape "
                            f"{volume.array.shape}")
    data, affine = volume.array.transpose(2, 1, 0), LPS_RAS @ volume.affine @ SWAP
    if slices_reversed(affine):
        return data[:, :, ::-1], reversed_slices(affine, data.shape[2])
    return data, affine


def load_scan(path: str | os.PathLike, series: str | None = None) -> Volume:
    """A scan as it leaves the scanner: a NIfTI file, or a folder holding a DICOM series
    (`series`, or the one `chosen_series` takes; read with SimpleITK: slice positions and
    orientation from the DICOM tags; an enhanced multi-frame file with highdicom)."""
    path = Path(path)
    if not path.is_dir():
        return load_image(path)
    import SimpleITK as sitk

    from brainuad.io.sitk import from_sitk, itk_reason

    chosen = checked_series(path, series)
    if chosen.enhanced:
        return _intensities(*_read_enhanced(path, chosen.files[0]), path)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise BrainUADError(f"{path}: cannot be read as a DICOM series ({itk_reason(err)})"
                            ) from err
    except MemoryError as err:
        raise BrainUADError(f"{path}: too large to load into memory") from err
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise BrainUADError(f"{path}: expected one 3D grey-level series")
    data, affine = from_sitk(image)
    return _intensities(data, affine, path)


def load_binary(path: str | os.PathLike, like: Volume, what: str = "mask") -> Volume:
    """Read a mask or label map that must be binary and share `like`'s grid.

    `what` ("mask" or "label") only changes the wording of errors. The result holds 0/1 as uint8.
    """
    data, affine, path = _read(path)
    if not np.isfinite(data).all():
        raise BrainUADError(f"{path}: {what} has NaN or infinite values")
    check_same_grid(path, data.shape, affine, like, what)
    values = np.unique(data)
    if not np.isin(values, (0, 1)).all():
        shown = ", ".join(f"{v:g}" for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise BrainUADError(f"{path}: {what} must hold only 0 and 1, found values {shown}")
    return Volume(data.astype(np.uint8), affine, path)


def check_same_grid(
    path: Path, shape: tuple[int, ...], affine: np.ndarray, like: Volume, what: str
) -> None:
    """Raise if `shape`/`affine` are not those of `like` (the image this file belongs to)."""
    if tuple(shape) != like.shape:
        raise BrainUADError(
            f"{path}: {what} shape {tuple(shape)} differs from its image {like.path} {like.shape}"
        )
    diff = float(np.abs(affine - like.affine).max())
    if diff > AFFINE_TOLERANCE:
        raise BrainUADError(
            f"{path}: {what} affine differs from its image {like.path} "
            f"(largest difference {diff:.3g} mm): they are not on the same grid"
        )


def save_volume(
    path: str | os.PathLike, data: np.ndarray, affine: np.ndarray, dtype: type | None = None
) -> Path:
    """Write `data` with `affine` as NIfTI, atomically. `dtype` defaults to the array's own."""
    array = np.asarray(data, dtype=dtype) if dtype is not None else np.asarray(data)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)

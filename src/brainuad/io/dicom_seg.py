"""Masks back to DICOM: a DICOM Segmentation object (highdicom) on the source series' own
geometry, one frame per source slice, referencing its instances, so that a PACS, OHIF or 3D
Slicer overlays it on the series the scan came from (a NIfTI mask they do not).

The mask is on the grid SimpleITK read the series onto (`io.images.load_scan`): its (X, Y, Z)
array holds column, row and slice, the slices in the order `dicom_series` sorted the files, so
frame k is `mask[:, :, k].T` over the k-th file. An enhanced (multi-frame) source was read with
highdicom (`io.images._read_enhanced`): the mask goes back through the same axes as a highdicom
volume, which finds each frame's source frame."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from brainuad.errors import BrainUADError
from brainuad.io.files import atomic_path
from brainuad.io.images import LPS_RAS, dicom_series

#: the attributes highdicom copies from the source as they are: a de-identified series may lack
#: them, and then they go in empty (DICOM type 2: present, may be empty)
_COPIED = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "AccessionNumber",
           "StudyID", "StudyDate", "StudyTime", "ReferringPhysicianName")


@dataclass(frozen=True)
class Segment:
    value: int  # in the label map
    label: str  # what a viewer lists, e.g. "new or enlarging lesion"
    rgb: tuple[int, int, int] = (255, 40, 40)  # its recommended display colour


def _lo(text: str) -> str:
    """A DICOM LO value: at most 64 characters, no backslash (highdicom does not check)."""
    return text.replace("\\", "/")[:64]


def _check_geometry(sources: list, affine: np.ndarray, folder: Path) -> None:
    """Each source slice k must lie where the mask's voxel (0, 0, k) and its axes lie (the
    mask's RAS affine against the files' LPS position and orientation, within 0.01 mm)."""
    lps = LPS_RAS[:3, :3]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    axes = lps @ affine[:3, :3] / spacing  # its columns: the row and column directions, LPS
    for k, source in enumerate(sources):
        position = lps @ (affine @ [0.0, 0.0, k, 1.0])[:3]
        orientation = np.asarray(source.ImageOrientationPatient, float)
        if (np.abs(np.asarray(source.ImagePositionPatient, float) - position).max() > 0.01
                or np.abs(orientation - np.r_[axes[:, 0], axes[:, 1]]).max() > 1e-3):
            raise BrainUADError(f"{folder}: the mask's slice {k} does not lie where the "
                                f"series' file {k} does (another grid or slice order)")


def _on_enhanced(file: str, labels: np.ndarray, affine: np.ndarray, segments: list[Segment],
                 folder: Path):
    """The mask as a highdicom volume of segment numbers on an enhanced (multi-frame) source's
    own geometry (highdicom then finds each frame's source frame and position): the mask's
    grid is that geometry, or it with its slices in ITK's order (`io.images._read_enhanced`);
    anything else is refused (0.01 mm)."""
    import highdicom as hd

    from brainuad.io.images import SWAP, reversed_slices

    try:
        source = hd.imread(file, lazy_frame_retrieval=True).get_volume_geometry()
    except (ValueError, RuntimeError, KeyError, OSError) as err:
        raise BrainUADError(f"{folder}: its multi-frame DICOM has no volume geometry to place "
                            f"a DICOM SEG on ({err})") from err
    if source is None:
        raise BrainUADError(f"{folder}: its multi-frame DICOM's frames do not form one volume "
                            "to place a DICOM SEG on")
    numbers = np.zeros(labels.shape, np.uint8)
    for number, segment in enumerate(segments, start=1):
        numbers[labels == segment.value] = number
    shape_ok = tuple(labels.shape[::-1]) == tuple(source.spatial_shape)
    if shape_ok and np.abs(LPS_RAS @ affine @ SWAP - source.affine).max() <= 0.01:
        frames = numbers
    elif shape_ok and np.abs(LPS_RAS @ reversed_slices(affine, labels.shape[2]) @ SWAP
                             - source.affine).max() <= 0.01:
        frames = numbers[:, :, ::-1]
    else:
        raise BrainUADError(f"{folder}: the mask's grid {labels.shape} is not the multi-frame "
                            f"series' geometry")
    return hd.Volume(np.ascontiguousarray(frames.transpose(2, 1, 0)), source.affine,
                     coordinate_system="PATIENT",
                     frame_of_reference_uid=source.frame_of_reference_uid)


def write_segmentation(target: str | os.PathLike, series_files: list[str], labels: np.ndarray,
                       affine: np.ndarray, segments: list[Segment], algorithm: tuple[str, str],
                       family: str, description: str, series_offset: int = 1000) -> Path:
    """`labels` (X, Y, Z on the series' grid, RAS `affine`) as a binary DICOM SEG of
    `segments` at `target` (atomically); `algorithm`: its name and version, `family` the name of its
    algorithm family in DICOM CID 7162 (e.g. "NeighborhoodAnalysis"), both in every segment's
    algorithm identification; `description`: the SEG series' description; its series number
    is the source's plus `series_offset`."""
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from brainuad import __version__

    folder = Path(series_files[0]).parent
    try:
        sources = [pydicom.dcmread(f, stop_before_pixels=True) for f in series_files]
    except (OSError, pydicom.errors.InvalidDicomError) as err:
        raise BrainUADError(f"{folder}: its DICOM files cannot be read back for the "
                            f"segmentation ({err})") from err
    if not all("FrameOfReferenceUID" in s for s in sources):
        raise BrainUADError(f"{folder}: the series has no Frame of Reference UID, so no DICOM "
                            "SEG can be placed on it")
    enhanced = len(sources) == 1 and int(getattr(sources[0], "NumberOfFrames", 1) or 1) > 1
    if enhanced:
        pixels = _on_enhanced(series_files[0], labels, affine, segments, folder)
    else:
        shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
        if labels.T.shape != shape:
            raise BrainUADError(f"{folder}: the mask's grid {labels.shape} is not the series' "
                                f"({shape[2]}, {shape[1]}, {shape[0]})")
        _check_geometry(sources, affine, folder)
        frames = np.asarray(labels).transpose(2, 1, 0)  # (slices, rows, columns)
        # one binary plane per segment, in segment number order
        pixels = np.stack([frames == s.value for s in segments], axis=-1).astype(np.uint8)
    for source in sources:
        for keyword in _COPIED:
            if keyword not in source:
                setattr(source, keyword, "")
    identification = hd.AlgorithmIdentificationSequence(
        name=_lo(algorithm[0]), version=_lo(algorithm[1]), family=getattr(codes.cid7162, family))
    descriptions = [hd.seg.SegmentDescription(
        segment_number=number, segment_label=_lo(segment.label),
        segmented_property_category=codes.cid7150.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.cid7151.LesionOfBrain,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=identification,
        display_color=hd.color.CIELabColor.from_rgb(*segment.rgb))
        for number, segment in enumerate(segments, start=1)]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=int(getattr(sources[0], "SeriesNumber", 0) or 0) + series_offset,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="brainuad",
            manufacturer_model_name="brainuad", software_versions=__version__,
            device_serial_number="none", series_description=_lo(description),
            content_label="BRAINUAD", content_description=_lo(description),
            omit_empty_frames=False)
    except (ValueError, TypeError, AttributeError) as err:
        raise BrainUADError(f"{folder}: no DICOM SEG could be made on this series ({err})"
                            ) from err
    with atomic_path(target) as tmp:
        seg.save_as(tmp)
    return Path(target)


def dicom_outputs(source: str | os.PathLike, target: Path, labels: np.ndarray,
                  affine: np.ndarray, segments: list[Segment], algorithm: tuple[str, str],
                  family: str, description: str, series_offset: int = 1000,
                  series: str | None = None) -> dict[str, list[str]]:
    """For a scan read from a DICOM series (a folder; `series` as `io.images.chosen_series`
    takes it), `labels` also as a DICOM SEG at `target` on that series; where none can be
    made (a series with no frame of reference), a warning saying why, the NIfTI outputs
    stand. The file names written and the warnings."""
    if not Path(source).is_dir():
        return {"outputs": [], "warnings": []}
    try:
        write_segmentation(target, dicom_series(Path(source), series), labels, affine, segments,
                           algorithm, family, description, series_offset)
    except (BrainUADError, ValueError, TypeError, AttributeError, KeyError) as err:
        return {"outputs": [], "warnings": [f"no DICOM SEG: {err}"]}
    return {"outputs": [target.name], "warnings": []}

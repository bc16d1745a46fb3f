"""DICOM Segmentation objects on the source series (issue 41): read back with highdicom, the
frames and positions are the NIfTI mask's voxel for voxel; dciodvfy (dicom3tools) finds no
error where it is installed."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from brainuad.errors import BrainUADError
from brainuad.io.dicom_seg import Segment, write_segmentation
from brainuad.io.images import LPS_RAS, SWAP, dicom_series, load_scan, slices_reversed
from conftest import write_enhanced, write_series


def _tilted_series(tmp_path, frame_of_reference: bool = True):
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(0, 500, (7, 30, 26)).astype(np.int16))
    image.SetSpacing((0.9, 0.8, 3.0))
    turn = sitk.VersorRigid3DTransform()
    turn.SetRotation((0.2, 0.0, 1.0), 0.3)
    image.SetDirection(np.asarray(turn.GetMatrix()).tolist())
    image.SetOrigin((-12.0, 30.0, 5.0))
    series = tmp_path / "series"
    write_series(image, series, frame_of_reference)
    return series


def _lesion_seg(series, target):
    """A SEG of one box-shaped lesion on `series`."""
    scan = load_scan(series)
    labels = np.zeros(scan.shape, np.uint8)
    labels[3:9, 5:20, 2:4] = 1
    return write_segmentation(target, dicom_series(series), labels, scan.affine,
                              [Segment(1, "lesion")], ("brainuad flair-ms", "4"),
                              "NeighborhoodAnalysis", "lesions")


def test_a_seg_holds_the_mask_voxel_for_voxel_on_the_source_instances(tmp_path):
    import highdicom as hd

    series = _tilted_series(tmp_path)
    scan = load_scan(series)
    labels, affine = np.zeros(scan.shape, np.uint8), scan.affine
    labels[3:9, 5:20, 2:4] = 1
    labels[20:24, 1:4, 0] = 2
    target = write_segmentation(tmp_path / "seg.dcm", dicom_series(series), labels, affine,
                                [Segment(1, "new or enlarging lesion"),
                                 Segment(2, "shrinking or resolving lesion", (60, 130, 255))],
                                ("brainuad compare", "3"), "NeighborhoodAnalysis",
                                "brainuad changes")
    seg = hd.seg.segread(target)
    assert seg.number_of_segments == 2
    assert seg.get_segment_description(1).segment_label == "new or enlarging lesion"
    algorithm = seg.get_segment_description(2).algorithm_identification[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("brainuad compare", "3")
    assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Neighborhood Analysis"
    # each segment with its own display colour (OHIF needs one), and the brain's lesion code
    colours = [tuple(seg.SegmentSequence[n].RecommendedDisplayCIELabValue) for n in (0, 1)]
    assert colours[0] != colours[1]
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "301766008"
    files = dicom_series(series)
    sources = [pydicom.dcmread(f) for f in files]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.SOPInstanceUID for s in sources], combine_segments=True,
        relabel=False)
    np.testing.assert_array_equal(frames.transpose(2, 1, 0), labels)
    # each frame lies where its source slice lies
    positions = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID:
                 [float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient]
                 for f in seg.PerFrameFunctionalGroupsSequence}
    for source in sources:
        np.testing.assert_allclose(positions[source.SOPInstanceUID],
                                   [float(v) for v in source.ImagePositionPatient], atol=1e-4)


def test_dciodvfy_finds_no_error_in_a_seg(tmp_path):
    """The reference validator of DICOM objects (dicom3tools) on a SEG of the tilted series."""
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    target = _lesion_seg(_tilted_series(tmp_path), tmp_path / "seg.dcm")
    said = subprocess.run([dciodvfy, str(target)], capture_output=True, text=True,
                          timeout=60)
    report = said.stdout + said.stderr
    assert "Error" not in report and "Segmentation" in report, report


def test_a_series_without_a_frame_of_reference_is_one_line(tmp_path):
    series = _tilted_series(tmp_path, frame_of_reference=False)
    scan = load_scan(series)
    labels, affine = np.zeros(scan.shape, np.uint8), scan.affine
    with pytest.raises(BrainUADError, match="no Frame of Reference UID"):
        write_segmentation(tmp_path / "seg.dcm", dicom_series(series), labels, affine,
                           [Segment(1, "lesion")], ("brainuad flair-ms", "4"),
                           "NeighborhoodAnalysis", "lesions")
    other = dicom_series(_tilted_series(tmp_path / "b"))
    with pytest.raises(BrainUADError, match="not the series'"):
        write_segmentation(tmp_path / "seg.dcm", other, labels[:, :, :3], affine,
                           [Segment(1, "lesion")], ("a", "1"), "NeighborhoodAnalysis", "lesions")
    # the right shape on another grid: its slices reversed, or moved by a millimetre
    flipped = affine @ np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, -1, labels.shape[2] - 1],
                                 [0, 0, 0, 1]])
    moved = affine.copy()
    moved[:3, 3] += [1.0, 0, 0]
    for wrong in (flipped, moved):
        with pytest.raises(BrainUADError, match="does not lie where the series' file"):
            write_segmentation(tmp_path / "seg.dcm", other, labels, wrong,
                               [Segment(1, "lesion")], ("a", "1"), "NeighborhoodAnalysis",
                               "lesions")
    assert not list(tmp_path.glob("seg.dcm*"))


def test_a_de_identified_series_still_gets_its_seg(tmp_path):
    """A series whose patient and study attributes were removed (de-identified) gets a SEG
    with them empty, as DICOM allows."""
    import highdicom as hd

    series = _tilted_series(tmp_path)
    for path in series.glob("*.dcm"):
        dataset = pydicom.dcmread(path)
        for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                        "StudyDate", "StudyTime", "AccessionNumber", "StudyID"):
            if keyword in dataset:
                delattr(dataset, keyword)
        dataset.save_as(path)
    target = _lesion_seg(series, tmp_path / "seg.dcm")
    assert hd.seg.segread(target).PatientID == ""


def _small(value: int) -> sitk.Image:
    """A small series whose brightest voxel is `value` (which series was read)."""
    image = sitk.GetImageFromArray(np.arange(480).reshape(4, 12, 10).astype(np.int16)
                                   % value)
    image[0, 0, 0] = value
    image.SetSpacing((1.0, 1.0, 3.0))
    return image


def test_a_study_folder_gives_its_flair_by_its_tags_or_the_series_asked_for(tmp_path):
    """A study export (a localizer, a T1, a FLAIR in one folder): the FLAIR is taken by its
    description; an inversion recovery with a long TI and TE is a FLAIR by its timing; two
    FLAIRs, or none, are refused in one line listing the series; `series` picks one."""
    from brainuad.io.images import chosen_series

    study = tmp_path / "study"
    write_series(_small(10), study, number=1, description="LOCALIZER")
    write_series(_small(20), study, number=2, description="T1 MPRAGE SAG",
                 tags={"0018|0082": "900", "0018|0081": "3"})
    flair = write_series(_small(30), study, number=3, description="AX FLAIR")
    assert chosen_series(study).uid == flair
    assert dicom_series(study) == list(chosen_series(study).files)
    assert load_scan(study).data.max() == 30
    timing = tmp_path / "timing"
    write_series(_small(20), timing, number=2, description="T1 MPRAGE SAG",
                 tags={"0018|0082": "900", "0018|0081": "3"})
    dark = write_series(_small(40), timing, number=4, description="AX T2 IR",
                        tags={"0018|0082": "2500", "0018|0081": "120"})
    assert chosen_series(timing).uid == dark
    write_series(_small(50), study, number=5, description="COR FLAIR")
    with pytest.raises(BrainUADError, match=r"holds 4 DICOM series, 2 FLAIRs .*AX FLAIR.*"
                                            r"COR FLAIR.*--series UID"):
        chosen_series(study)
    assert load_scan(study, flair).data.max() == 30
    with pytest.raises(BrainUADError, match="no series 1.2.3 in it"):
        load_scan(study, "1.2.3")
    none = tmp_path / "none"
    write_series(_small(10), none, number=1, description="LOCALIZER")
    write_series(_small(20), none, number=2, description="T1 MPRAGE SAG")
    with pytest.raises(BrainUADError, match="holds 2 DICOM series, no FLAIR"):
        load_scan(none)


def test_an_enhanced_multi_frame_series_reads_as_its_single_frame_twin(tmp_path):
    """One multi-frame file (legacy-converted enhanced MR) gives the voxels and geometry of the
    single-frame series it was made from; a study folder holding it beside a T1 takes it as
    its FLAIR, by its description or by the inversion and echo times nested in it."""
    from brainuad.io.images import chosen_series

    series = _tilted_series(tmp_path)
    enhanced = tmp_path / "enhanced"
    uid = write_enhanced(series, enhanced)
    assert chosen_series(enhanced).enhanced and "7 frames" in str(chosen_series(enhanced))
    # the same voxels on the same grid, slices in the same order
    single, multi = load_scan(series), load_scan(enhanced)
    np.testing.assert_allclose(multi.affine, single.affine, atol=1e-3)
    np.testing.assert_array_equal(multi.data, single.data)
    write_series(_small(20), enhanced, number=2, description="T1 MPRAGE SAG",
                 tags={"0018|0082": "900", "0018|0081": "3"})
    assert chosen_series(enhanced).uid == uid
    timing = tmp_path / "timing"
    write_series(_small(20), timing, number=2, description="T1 MPRAGE SAG",
                 tags={"0018|0082": "900", "0018|0081": "3"})
    plain = tmp_path / "plain"
    write_series(_small(30), plain, number=3, description="AX T2 IR",
                 tags={"0018|0082": "2500", "0018|0081": "120"})
    dark = write_enhanced(plain, timing, number=8)
    found = chosen_series(timing)
    assert found.uid == dark and (found.inversion_ms, found.echo_ms) == (2500, 120)


def test_a_seg_on_an_enhanced_series_holds_the_mask_on_its_frames(tmp_path):
    """The SEG of a multi-frame source: each frame references the source's frame and lies
    where it does; read back as a volume, the NIfTI mask voxel for voxel; dciodvfy finds no
    error where it is installed."""
    import highdicom as hd

    enhanced = tmp_path / "enhanced"
    write_enhanced(_tilted_series(tmp_path), enhanced)
    scan = load_scan(enhanced)
    labels = np.zeros(scan.shape, np.uint8)
    labels[3:9, 5:20, 2:4] = 1
    labels[20:24, 1:4, 0] = 2
    target = write_segmentation(tmp_path / "seg.dcm", dicom_series(enhanced), labels,
                                scan.affine, [Segment(1, "new"), Segment(2, "shrinking")],
                                ("brainuad compare", "3"), "NeighborhoodAnalysis", "changes")
    seg = hd.seg.segread(target)
    source = pydicom.dcmread(dicom_series(enhanced)[0], stop_before_pixels=True)
    referenced = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                  for f in seg.PerFrameFunctionalGroupsSequence}
    assert referenced == {source.SOPInstanceUID}
    volume = seg.get_volume(combine_segments=True)
    np.testing.assert_allclose(volume.affine, hd.imread(dicom_series(enhanced)[0])
                               .get_volume_geometry().affine, atol=1e-6)
    # back on the scan's grid: (slice, row, column) -> ours, slices in ITK's order
    back = volume.array.transpose(2, 1, 0)
    if slices_reversed(LPS_RAS @ volume.affine @ SWAP):
        back = back[:, :, ::-1]
    np.testing.assert_array_equal(back, labels)
    # a segment's number is its place in the list, whatever its value in the mask
    only = write_segmentation(tmp_path / "only.dcm", dicom_series(enhanced), labels,
                              scan.affine, [Segment(2, "shrinking")], ("a", "1"),
                              "NeighborhoodAnalysis", "x")
    single = hd.seg.segread(only).get_volume(combine_segments=True).array
    assert single.max() == 1 and (single > 0).sum() == (labels == 2).sum()
    with pytest.raises(BrainUADError, match="not the multi-frame series' geometry"):
        moved = scan.affine.copy()
        moved[:3, 3] += [1.0, 0, 0]
        write_segmentation(tmp_path / "bad.dcm", dicom_series(enhanced), labels, moved,
                           [Segment(1, "new")], ("a", "1"), "NeighborhoodAnalysis", "x")
    dciodvfy = shutil.which("dciodvfy")
    if dciodvfy is None:
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    said = subprocess.run([dciodvfy, str(target)], capture_output=True, text=True, timeout=60)
    assert "Error" not in said.stdout + said.stderr, said.stdout + said.stderr


def test_a_series_of_several_multi_frame_files_is_one_line(tmp_path):
    import highdicom as hd

    enhanced = tmp_path / "enhanced"
    write_enhanced(_tilted_series(tmp_path), enhanced)
    second = pydicom.dcmread(next(enhanced.glob("*.dcm")))
    second.SOPInstanceUID = hd.UID()
    second.save_as(enhanced / "second.dcm")
    with pytest.raises(BrainUADError, match="2 multi-frame files"):
        load_scan(enhanced)

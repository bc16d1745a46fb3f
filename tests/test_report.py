"""The reports (issue 40): a slice viewer of the scan as acquired in the one HTML file, every
lesion in a table and a panel (`id="lesion-N"`), the head cropped to the brain by default, alt
text, nothing fetched; and, where Chromium is installed, a real browser that draws it."""

from __future__ import annotations

import base64
import gzip
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from brainuad.io.images import Volume
from brainuad.reporting.html import PANELS, compare_report, segment_report
from brainuad.reporting.viewer import finding_voxels, to_bytes, viewer
from brainuad.scoring.postprocess import numbered_lesions
from conftest import fetched_urls

QUALITY = {"brain_dice": 0.95, "coverage": 1.0, "scale": 1.0, "rotation": 2.0, "metric": -0.6}


def _scan(lesions: int = 3, shape=(100, 104, 30)):
    """A head (a bright shell: skull and face) around a brain, `lesions` 2^3 lesions in it, on
    a tilted grid of 1 x 1 x 3 mm voxels."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = np.sqrt((grid ** 2).sum(0))
    brain = radius < 0.5
    data = np.where(brain, 300.0, np.where(radius < 0.95, 600.0, 0.0)) + rng.normal(0, 5, shape)
    lesion = np.zeros(shape, bool)
    for n in range(lesions):
        i, j = 35 + 3 * (n % 8), 35 + 3 * (n // 8)
        lesion[i:i + 2, j:j + 2, 14:16] = True
    data[lesion] = 700
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    affine[:3, :3] = affine[:3, :3] @ np.array([[1, 0, 0], [0, np.cos(0.2), -np.sin(0.2)],
                                                [0, np.sin(0.2), np.cos(0.2)]])
    affine[:3, 3] = [-30, -32, -45]
    return Volume(data.astype(np.float32), affine), brain, lesion


def _lesions(lesions: int = 3):
    raw, _, lesion = _scan(lesions)
    return lesion, np.where(lesion, 5.0, 0.0).astype(np.float32), raw.affine


def _segment_page(tmp_path, lesions: int = 3, full_fov: bool = False,
                  removed: dict | None = None) -> str:
    raw, brain, lesion = _scan(lesions)
    score = np.where(lesion, 5.0, 0.0).astype(np.float32)
    table, numbered = numbered_lesions(lesion, score, raw.affine)
    for row in table:  # as segment marks them: the first at a normal-variant site
        row["site"] = "ependymal cap" if row["lesion"] == 1 else ""
    summary = {"scan": "visit", "input": "visit.nii.gz", "brainuad": "0", "lesions": len(table),
               "at_normal_variant_sites": {"lesions": 1, "volume_ml": table[0]["volume_ml"],
                                           "removed": removed}
               if table else {"lesions": 0, "volume_ml": 0.0, "removed": removed},
               "lesion_volume_ml": 1.0, "brain_volume_ml": 1000.0, "threshold": 1.6,
               "rule": "a rule", "model": {"name": "m", "version": "1"},
               "brain_mask": {"source": "scan"}, "registration": QUALITY, "warnings": ["w"],
               "grid": {"shape": list(raw.shape), "spacing_mm": [1, 1, 3]}}
    registered = np.zeros((197, 233, 189), np.float32)  # the template's grid
    segment_report(tmp_path / "report.html", summary, raw,
                   {"lesions": lesion, "brain": brain, "score": score}, registered, table,
                   numbered, full_fov)
    return (tmp_path / "report.html").read_text()


def _viewer_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="viewer-data">(.*?)</script>',
                      page, re.S)
    return json.loads(found.group(1).replace("<\\/", "</"))


def _volume(packed: str, shape, dtype=np.uint8) -> np.ndarray:
    raw = gzip.decompress(base64.b64decode(packed))
    return np.frombuffer(raw, dtype).reshape(shape[::-1]).transpose(2, 1, 0)


def test_every_lesion_is_a_row_and_a_panel_of_the_viewers_page(tmp_path):
    page = _segment_page(tmp_path, lesions=3)
    data = _viewer_data(page)
    assert data["name"] == "lesion" and len(data["findings"]) == 3
    scan = _volume(data["volumes"]["scan"], data["shape"])
    labels = _volume(data["labels"], data["shape"], np.uint16)
    assert scan.shape == labels.shape == tuple(data["shape"]) and scan.max() == 255
    # the scored brain, whole inside the cropped view (its outline is drawn)
    _, brain, _ = _scan()
    assert _volume(data["brain"], data["shape"]).sum() == brain.sum()
    affine = np.asarray(data["affine"]).reshape(4, 4)
    centres = {row["lesion"]: row for row in numbered_lesions(*_lesions())[0]}
    for finding in data["findings"]:  # each finding's voxel is one of its own
        assert labels[tuple(finding["voxel"])] == finding["label"]
        # and the viewer's scanner mm are lesions.csv's, within the voxel of the 2^3 lesion
        mm = (affine @ [*finding["voxel"], 1])[:3]
        row = centres[finding["label"]]
        centre = [row["centroid_x_mm"], row["centroid_y_mm"], row["centroid_z_mm"]]
        assert np.abs(mm - centre).max() < 2.5
        assert f'id="lesion-{finding["label"]}"' in page
        assert f'href="#lesion-{finding["label"]}"' in page
    assert page.count('<div class="panel"') == 3
    # the lesion at a normal-variant site says so in its row, its panel and the figures
    assert page.count("<td>ependymal cap</td>") == 1
    assert page.count("at a normal-variant site: ependymal cap") == 1
    assert "at normal-variant sites</th><td>1 of the lesions (" in page
    left_out = _segment_page(tmp_path, removed={"lesions": 2, "volume_ml": 0.25})
    assert "<td>2 left out of the mask and the totals (0.25 ml, in normal_sites" in left_out
    assert 'id="viewer"' in page and "DecompressionStream" in page
    assert not fetched_urls(page)
    assert all('alt="' in tag for tag in re.findall(r"<img[^>]*>", page))
    assert all("aria-label=" in tag for tag in re.findall(r"<canvas[^>]*>", page))


def test_beyond_fifty_lesions_a_row_moves_the_viewer(tmp_path):
    page = _segment_page(tmp_path, lesions=55)
    assert page.count('<div class="panel"') == PANELS
    assert 'href="#lesion-50"' in page and 'id="lesion-51"' not in page
    assert 'data-goto="51"' in page and 'data-goto="55"' in page


def test_the_viewer_shows_the_brain_not_the_face_unless_asked(tmp_path):
    cropped = _viewer_data(_segment_page(tmp_path))
    whole = _viewer_data(_segment_page(tmp_path, full_fov=True))
    assert whole["shape"] == [100, 104, 30]
    # the brain (50 voxels across in-plane, 15 slices) and 10 mm around it: 70 x 70 x 22
    assert cropped["shape"] == [70, 70, 22]
    # its scanner mm stay those of the scan: the crop starts 10 mm before the brain (in
    # whole voxels of each axis's spacing)
    raw, brain, _ = _scan()
    margin = np.ceil(10 / np.linalg.norm(raw.affine[:3, :3], axis=0))
    start = np.asarray(whole["affine"]).reshape(4, 4) @ [*(np.argwhere(brain).min(0)
                                                           - margin), 1]
    np.testing.assert_allclose(np.asarray(cropped["affine"]).reshape(4, 4)[:, 3], start,
                               atol=1e-3)


@pytest.mark.parametrize("flips", [(1, 1, 1), (-1, 1, 1), (-1, -1, 1), (1, -1, -1)])
def test_the_viewer_turns_any_orientation_to_ras_and_keeps_the_files_voxels(flips):
    """LAS, LPS, RPI scans as well as RAS: the view's axes point to +x, +y, +z (so the labels
    R/L, A/P are right), its scanner mm are the file's, and the voxel it names is the file's."""
    raw, brain, lesion = _scan(3)
    affine = raw.affine.copy()
    for axis, sign in enumerate(flips):
        if sign < 0:  # the same head, the file's axis stored the other way
            affine[:3, axis] *= -1
            affine[:3, 3] -= affine[:3, axis] * (raw.shape[axis] - 1)
    table, numbered = numbered_lesions(lesion, lesion.astype(np.float32), affine)
    voxels = finding_voxels(numbered, len(table))
    page = viewer({"scan": to_bytes(raw.data, brain)}, numbered, {1: "lesion", 2: "lesion",
                                                                 3: "lesion"},
                  affine, brain, [{"label": r["lesion"], "voxel": v}
                                  for r, v in zip(table, voxels, strict=True)], "lesion")
    data = _viewer_data(page)
    shown = np.asarray(data["affine"]).reshape(4, 4)
    assert all(shown[axis, axis] > 0 for axis in range(3))  # tilted about x only
    to_file = np.asarray(data["to_file"]).reshape(4, 4)
    for finding, voxel in zip(data["findings"], voxels, strict=True):
        back = (to_file @ [*finding["voxel"], 1])[:3].round().astype(int)
        assert back.tolist() == list(voxel)
        np.testing.assert_allclose((shown @ [*finding["voxel"], 1])[:3],
                                   (affine @ [*voxel, 1])[:3], atol=1e-3)


def test_finding_voxels_are_inside_and_nearest_the_centre():
    labels = np.zeros((20, 20, 20), np.int64)
    labels[2:7, 2:7, 2:7] = 1
    labels[10:12, 10:18, 10] = 2  # an elongated one
    voxels = finding_voxels(labels, 2)
    assert voxels[0] == [4, 4, 4]
    assert labels[tuple(voxels[1])] == 2 and voxels[1][1] in (13, 14)


def test_the_compare_report_shows_both_visits_and_a_panel_per_change(tmp_path):
    raw, brain, lesion = _scan(2)
    numbered = np.zeros(raw.shape, np.int64)
    numbered[lesion] = 1
    table = [{"change": 1, "type": "new", "volume_ml": 0.024, "baseline_lesion_ml": 0.0,
              "followup_lesion_ml": 0.024, "centroid_x_mm": 1.0, "centroid_y_mm": 2.0,
              "centroid_z_mm": 3.0, "mean_score": 6.0, "max_abs_score": 8.0}]
    summary = {"pair": "a-b", "baseline": "a", "followup": "b", "brainuad": "0",
               "changes": {"new": {"count": 1, "ml": 0.02}}, "noise": 0.01,
               "detector": {"name": "rule", "version": "2", "false_ml": 0.1},
               "registration": {**QUALITY, "visit_correlation": 0.9}, "warnings": []}
    compare_report(tmp_path / "report.html", summary, table,
                   {"baseline": raw.data * 0.9, "followup": raw.data}, numbered, brain,
                   raw.affine)
    page = (tmp_path / "report.html").read_text()
    data = _viewer_data(page)
    assert set(data["volumes"]) == {"follow-up", "baseline"}
    assert data["difference"] == ["baseline", "follow-up"]
    assert 'id="change-1"' in page and 'href="#change-1"' in page
    assert page.count("<canvas") == 3 + 3  # the viewer's planes, the panel's three visits
    assert not fetched_urls(page)


@pytest.mark.slow
def test_a_real_browser_draws_the_report_offline(tmp_path):
    """Headless Chromium (Debian's package), the network off: the viewer ran (the page marks
    itself drawn) and its views are not blank."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _segment_page(tmp_path, lesions=3)
    flags = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=8000"]
    page = (tmp_path / "report.html").as_uri()
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-drawn="yes"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, "--window-size=1200,1000", f"--screenshot={shot}", page],
                   capture_output=True, timeout=120)
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    views = image[300:700]  # the three views lie under the figures' table
    assert (views > 100).mean() > 0.02, "the viewer drew nothing"

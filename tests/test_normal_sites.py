"""The normal bright places of a healthy FLAIR (issue 43): where the template puts them, and
which lesions are said to lie there."""

from __future__ import annotations

import numpy as np

from brainuad.preprocessing.atlas import atlas
from brainuad.preprocessing.normal_sites import SITES, lesion_sites, normal_sites


def _world(code: int) -> np.ndarray:
    """MNI millimetres of the voxels of one site."""
    maps = atlas(1)
    voxels = np.argwhere(normal_sites(1) == code)
    return voxels @ maps["affine"][:3, :3].T + maps["affine"][:3, 3]


def test_the_sites_lie_where_the_anatomy_puts_them():
    """Caps at both ends of both lateral ventricles, alike in the two hemispheres, in tissue
    that touches their fluid, nothing along the ventricles' bodies; the septum at the midline
    between the ventricles; a periaqueductal rim of a few ml at most in the midbrain, in
    tissue, not the cistern behind it; the fourth ventricle's floor in the brainstem. Each in
    tissue (no fluid), none larger than a normal variant can be."""
    from scipy import ndimage

    maps = atlas(1)
    sites = normal_sites(1)
    fluid_mm = ndimage.distance_transform_edt(maps["csf"] <= 0.5)  # 1 mm voxels
    assert not ((sites > 0) & (maps["csf"] > 0.5)).any()
    assert fluid_mm[sites > 0].max() <= 6  # every site lines fluid
    caps = _world(1)
    left, right = caps[caps[:, 0] < 0], caps[caps[:, 0] > 0]
    assert 0.8 < len(left) / len(right) < 1.25 and len(caps) < 20_000  # ml at 1 mm
    for side in (left, right):
        assert (side[:, 1] > 10).sum() > 1000  # frontal horn tips
        assert (side[:, 1] < -25).sum() > 1000  # occipital horn tips (atria)
    assert np.abs(caps[:, 1]).min() > 5  # nothing along the ventricles' bodies
    septum = _world(2)
    assert np.abs(septum[:, 0]).max() <= 3 and len(septum) < 3000
    grey = _world(3)
    assert 200 < len(grey) < 1500 and np.abs(grey[:, 0]).max() <= 5
    assert np.abs(grey.mean(0) - [0, -32, -8]).max() < 5
    floor = _world(4)
    assert len(floor) < 5000 and np.abs(floor[:, 0]).max() <= 15
    assert -60 < floor[:, 1].mean() < -30 and -48 < floor[:, 2].mean() < -18
    two = normal_sites(2)
    assert set(np.unique(two)) == {0, *SITES}


def test_a_lesion_is_at_a_site_when_most_of_it_lies_there():
    sites = np.zeros((20, 20, 20), np.uint8)
    sites[:10] = 1
    sites[15:, :, :10] = 3
    numbered = np.zeros_like(sites, np.int64)
    numbered[2:5, 2:5, 2:5] = 1  # inside the caps
    numbered[8:13, 5:8, 5:8] = 2  # 2 of 5 slices inside: mostly outside
    numbered[14:18, 10:14, 6:10] = 3  # 3 of 4 slices in the periaqueductal rim
    numbered[12, 18, 18] = 4  # nowhere
    assert lesion_sites(numbered, sites, 4) == ["ependymal cap", "", "periaqueductal grey", ""]
    assert lesion_sites(np.zeros_like(numbered), sites, 0) == []


def test_remove_takes_out_only_the_components_at_the_sites():
    """`detect.normal_sites` "remove": a component at a cap leaves the mask, one in the deep
    white matter and one reaching out of the cap band stay; "flag" keeps all three; on a grid
    that is not the template's nothing is looked at."""
    from brainuad.config import DetectConfig
    from brainuad.detection.detector import Detector
    from brainuad.scoring.postprocess import Scored

    maps = atlas(2)
    sites = normal_sites(2)
    cap = np.argwhere(sites == 1)[len(np.argwhere(sites == 1)) // 2]
    wm = np.argwhere((maps["wm"] > 0.9) & (sites == 0))
    deep = wm[len(wm) // 2]
    score = np.zeros(sites.shape, np.float32)
    score[tuple(slice(c - 1, c + 1) for c in cap)] = 5.0  # 8 voxels, most at the cap
    score[tuple(slice(c - 1, c + 2) for c in deep)] = 5.0
    # a third: a line of 8 voxels from another cap voxel, mostly outside the band: stays
    caps = np.argwhere(sites == 1)
    start = caps[np.argmax(np.abs(caps - cap).sum(1))]  # the farthest from the first
    lines = [[start + k * np.array(step) for k in range(8)]
             for step in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]
    line = next(v for v in lines if 0 < sum(sites[tuple(p)] > 0 for p in v) < 4)
    for voxel in line:
        score[tuple(voxel)] = 5.0
    kept = np.ones(sites.shape, bool)
    scored = Scored(score, kept, kept, 0.0, 1)
    segment = Detector.segment  # needs nothing of a loaded model
    flag = DetectConfig(min_component=1, normal_sites="flag")
    lesions, removed = segment(None, scored, 1.0, flag, maps["affine"])
    assert removed is None and lesions.sum() == 8 + 27 + 8
    lesions, removed = segment(None, scored, 1.0, flag.replaced(normal_sites="remove"),
                               maps["affine"])
    assert lesions.sum() == 27 + 8 and removed.sum() == 8 and not (lesions & removed).any()
    shifted = maps["affine"].copy()
    shifted[0, 3] += 7
    lesions, removed = segment(None, scored, 1.0, flag.replaced(normal_sites="remove"), shifted)
    assert removed is None and lesions.sum() == 43

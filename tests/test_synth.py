import hashlib

import numpy as np
import pytest

from brainuad.data.synth import CONTRASTS, SynthConfig, make_subject, synth_cohort
from brainuad.io.images import load_binary, load_image
from brainuad.io.manifest import read_manifest


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(n_healthy=1, n_lesioned=2, seed=3)
    synth_cohort(root / "a", cfg)
    synth_cohort(root / "b", cfg)
    synth_cohort(root / "c", SynthConfig(n_healthy=1, n_lesioned=2, seed=4))
    return root


def test_same_seed_same_bytes(cohorts):
    a, b, c = (_digest(cohorts / x) for x in "abc")
    assert a == b
    assert a["sub-p001/flair.nii.gz"] != c["sub-p001/flair.nii.gz"]


def test_synth_leaves_the_callers_threads_alone(tmp_path):
    import torch

    before = torch.get_num_threads()
    synth_cohort(tmp_path, SynthConfig(n_healthy=1, n_lesioned=0))
    assert torch.get_num_threads() == before  # the demo trains right after synth, in-process


def test_manifest_and_label_consistency(cohorts):
    manifest = read_manifest(cohorts / "a" / "manifest.csv")
    assert [(s.split, s.health) for s in manifest.subjects] == [
        ("train", "healthy"), ("test", "patient"), ("test", "patient")]
    for subject in manifest.subjects:
        image = load_image(subject.images["flair"])
        mask = load_binary(subject.mask, image, "mask").data
        label = load_binary(subject.label, image, "label").data
        assert image.shape == (99, 117, 95)
        assert not image.data[mask == 0].any()  # skull stripped
        assert not label[mask == 0].any()  # lesions are inside the brain
        if subject.health == "healthy":
            assert not label.any()
        else:
            assert label.sum() > 0
            # FLAIR lesions are hyperintense against the white matter around them
            assert np.median(image.data[label > 0]) > np.median(image.data[mask > 0])


def test_lesions_count_size_and_contrast_ranges():
    cfg = SynthConfig(seed=11)
    counts, levels = [], []
    for i in range(4):
        volumes = make_subject(cfg, i, lesioned=True)
        from scipy import ndimage

        _, n = ndimage.label(volumes["label"])
        counts.append(n)
        levels.append(volumes["image"][volumes["label"] > 0].mean())
    assert all(1 <= n <= 15 for n in counts)
    lo, hi = CONTRASTS["flair"]["lesion"]
    assert lo < hi


def test_contrasts_order_tissues():
    from brainuad.preprocessing.atlas import atlas

    maps = atlas(2)
    # warps are small, so the template's core white and grey matter stay mostly where they were
    wm, gm = maps["wm"] > 0.95, maps["gm"] > 0.95
    flair = make_subject(SynthConfig(contrast="flair"), 0, lesioned=False)["image"]
    t1 = make_subject(SynthConfig(contrast="t1"), 0, lesioned=False)["image"]
    assert flair[wm].mean() < flair[gm].mean()  # FLAIR: white matter darker than grey
    assert t1[wm].mean() > t1[gm].mean()  # T1: the other way round


def test_normal_variants_brighten_a_healthy_scan_at_its_sites_only():
    """Issue 43's healthy scans: the caps, the periaqueductal rim and the fourth ventricle's
    floor drawn in, brighter than without them there; no lesion label; the rest unchanged."""
    from brainuad.data.synth import normal_variants
    from brainuad.preprocessing.normal_sites import normal_sites

    plain = make_subject(SynthConfig(seed=5), 0, lesioned=False)
    drawn = make_subject(SynthConfig(seed=5, normal_variants=True), 0, lesioned=False)
    assert not drawn["label"].any()
    where = normal_variants(2) > 0.5
    assert where.any() and not (where & (normal_sites(2) == 0)).any()
    brighter = drawn["image"][where].mean() / plain["image"][where].mean()
    assert brighter > 1.1
    far = (plain["mask"] > 0) & (normal_sites(2) == 0)
    assert abs(drawn["image"][far].mean() / plain["image"][far].mean() - 1) < 0.01

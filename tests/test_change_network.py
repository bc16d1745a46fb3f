"""The learnt change detector's parts (issue 39, stage 2): synthetic changes drawn into two
visits, the network's inputs and outputs, its weights read or refused in one line."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from brainuad.errors import BrainUADError
from brainuad.longitudinal.network import (
    D_SCALE,
    NOISE_FLOOR,
    ChangeNet,
    change_mask,
    difference_noise,
    load_net,
    net_inputs,
    probabilities,
)
from brainuad.longitudinal.synthetic import KINDS, ChangeSynth, draw_changes, ovoid

SPACING = np.array([0.75, 0.75, 3.0])


def _visits(shape=(64, 64, 16), seed=0):
    rng = np.random.default_rng(seed)
    baseline = rng.normal(-1.5, 0.5, shape).astype(np.float32)  # white matter's lesion z
    return baseline, baseline + rng.normal(0, 0.3, shape).astype(np.float32)


def test_an_ovoid_has_the_volume_asked_for():
    for ml in (0.02, 0.3, 1.2):
        profile = ovoid((96, 96, 40), np.array([48, 48, 20]), ml, SPACING,
                        np.random.default_rng(1))
        assert profile.sum() * SPACING.prod() / 1000 == pytest.approx(ml, rel=0.35)
        assert profile.max() <= 1 and profile.min() >= 0


@pytest.mark.parametrize(("kind", "codes"), [("new", {1}), ("enlarging", {1}),
                                             ("resolving", {2}), ("shrinking", {2}),
                                             ("fading", {2}), ("brightening", {1}),
                                             ("stable", set())])
def test_each_kind_of_change_is_drawn_and_labelled_as_it_is(kind, codes):
    baseline, followup = _visits()
    where = np.zeros(baseline.shape, bool)
    where[32, 32, 8] = True
    only = ChangeSynth(min_ml=0.3, max_ml=0.3, contrast=(5.0, 5.0), jitter=0.0,
                       shares=tuple(float(k == kind) for k in KINDS))
    b, f, label, kinds = draw_changes(baseline, followup, where, SPACING, 1,
                                      np.random.default_rng(2), only)
    assert kinds == [kind]
    assert set(np.unique(label)) - {0} == codes
    grown, shrunk = (f - followup).sum(), (b - baseline).sum()
    assert (grown > 0) == (kind != "resolving") and (shrunk > 0) == (kind != "new")
    if kind in ("fading", "brightening"):  # one shape, one visit faint
        assert (label > 0).sum() > 0.5 * ((b - baseline) > 1).sum()
    if kind == "stable":  # one lesion at both visits, nothing changed
        at_b, at_f = (b - baseline) > 1, (f - followup) > 1
        assert (at_b & at_f).sum() / (at_b | at_f).sum() > 0.8
    if codes:  # a labelled voxel is brighter at the visit that has the lesion
        sign = 1 if codes == {1} else -1
        assert (sign * (f - b)[label > 0] > 1.0).all()
    assert (b >= baseline).all() and (f >= followup).all()  # nothing darkened
    assert not label[:, :, :5].any()  # near its centre only


def test_the_network_reads_any_grid_and_says_nothing_outside_the_brain():
    torch.manual_seed(0)
    net = ChangeNet(width=2)
    brain = np.zeros((37, 29, 9), bool)
    brain[5:30, 4:25, 1:8] = True
    baseline, followup = _visits(brain.shape)
    grown, shrunk = probabilities(net, baseline, followup, brain)
    assert grown.shape == brain.shape and shrunk.shape == brain.shape
    assert ((grown + shrunk) <= 1 + 1e-5).all()
    assert not grown[~brain].any() and grown[brain].min() > 0
    mask = change_mask(np.where(brain, 0.9, 0), np.where(brain, 0.05, 0), brain, 0.5, 3)
    assert set(np.unique(mask)) == {0, 1} and (mask > 0).sum() == brain.sum()
    assert not change_mask(grown * 0, shrunk * 0, brain, 0.5, 3).any()


def test_the_difference_channel_reads_in_the_pairs_own_noise():
    """The difference channel is in spreads of the pair's own noise: the same brightening
    stands out less on a noisier pair; the noise is the same from the brain's box (as the
    training script crops its cases) as from the whole grid (as the harness runs)."""
    brain = np.zeros((48, 48, 12), bool)
    brain[4:44, 4:44, 1:11] = True
    read = {}
    for sigma in (0.2, 0.6):
        baseline, _ = _visits(brain.shape)
        followup = baseline + np.random.default_rng(3).normal(0, sigma, brain.shape)
        followup[20, 20, 5] = baseline[20, 20, 5] + 1.5  # the same change on both pairs
        noise = difference_noise(baseline, followup, brain)
        assert noise == pytest.approx(sigma, rel=0.05)
        box = (slice(4, 44), slice(4, 44), slice(1, 11))
        assert difference_noise(baseline[box], followup[box], brain[box]) == noise
        x = net_inputs(baseline, followup, brain, noise)
        assert x.shape == (4, *brain.shape) and not x[2][~brain].any()
        assert x[2][brain].std() * D_SCALE == pytest.approx(1, rel=0.1)
        read[sigma] = x[2, 20, 20, 5] * D_SCALE
    assert read[0.2] == pytest.approx(1.5 / 0.2, rel=0.06)
    assert read[0.6] == pytest.approx(1.5 / 0.6, rel=0.06) and read[0.6] < read[0.2] / 2
    same, _ = _visits(brain.shape)
    assert difference_noise(same, same, brain) == NOISE_FLOOR  # an exact copy: the floor


def test_weights_are_read_weights_only_and_damaged_ones_refused(tmp_path):
    net = ChangeNet(width=2)
    path = tmp_path / "change_net.pt"
    torch.save(net.state_dict(), path)
    (tmp_path / "change_net.json").write_text('{"width": 2, "inputs": 4}')
    loaded = load_net(path)
    assert not loaded.training
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    path.write_bytes(b"not a network")
    with pytest.raises(BrainUADError, match="change_net.pt"):
        load_net(path)
    path.write_bytes(b"")  # truncated
    with pytest.raises(BrainUADError, match="change_net.pt"):
        load_net(path)

    class Runs:  # a pickle that would run code on load: refused, not run
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    torch.save({"weights": Runs()}, path)
    with pytest.raises(BrainUADError, match="change_net.pt") as caught:
        load_net(path)
    assert not (tmp_path / "ran").exists() and "\n" not in str(caught.value)
    (tmp_path / "change_net.json").write_text('{"width": null}')
    with pytest.raises(BrainUADError, match="change_net.json"):
        load_net(path)
    (tmp_path / "change_net.json").write_text('{"width": 2}')  # an older network's 3 inputs
    with pytest.raises(BrainUADError, match="3 inputs"):
        load_net(path)
    (tmp_path / "change_net.json").unlink()
    with pytest.raises(BrainUADError, match="change_net.json"):
        load_net(path)


def test_stable_lesions_moved_by_a_fraction_of_a_voxel_are_no_change():
    """The default jitter moves the baseline's copy (as registration does): a stable lesion
    gets no label, a fading one never a growth's, a brightening one never a shrinkage's."""
    baseline, followup = _visits()
    where = np.zeros(baseline.shape, bool)
    where[28:36, 28:36, 6:10] = True
    for kind, never in (("stable", {1, 2}), ("fading", {1}), ("brightening", {2})):
        only = ChangeSynth(shares=tuple(float(k == kind) for k in KINDS))
        for seed in range(12):
            _, _, label, _ = draw_changes(baseline, followup, where, SPACING, 2,
                                          np.random.default_rng(seed), only)
            assert not set(np.unique(label)) & never, (kind, seed)


def test_a_change_that_does_not_show_is_not_labelled():
    """A new lesion drawn where the tissue is already as bright as it gets brighter by less
    than `SHOWS` spreads: drawn, not labelled."""
    bright = np.full((48, 48, 12), 3.0, np.float32)
    where = np.zeros(bright.shape, bool)
    where[24, 24, 6] = True
    new = ChangeSynth(min_ml=0.3, max_ml=0.3, contrast=(3.5, 3.5),
                      shares=tuple(float(k == "new") for k in KINDS))
    _, f, label, _ = draw_changes(bright, bright, where, SPACING, 1,
                                  np.random.default_rng(0), new)
    assert (f > bright).any() and not label.any()


def test_a_voxel_gets_the_same_probability_in_a_patch_as_in_the_whole_box():
    """What the network says of a voxel does not depend on how much of the brain it is run on
    (it trains on patches and runs on the whole box), away from the patch's edge."""
    torch.manual_seed(0)
    net = ChangeNet(width=2)
    net.train()
    for _ in range(3):  # running statistics that are not the defaults
        net(torch.randn(2, 4, 32, 32, 8) * 2 + 1)
    brain = np.ones((64, 64, 16), bool)
    baseline, followup = _visits(brain.shape)
    whole, _ = probabilities(net, baseline, followup, brain, noise=0.3)
    part = np.zeros_like(brain)
    part[:32, :32, :8] = True
    patch, _ = probabilities(net, np.where(part, baseline, 0), np.where(part, followup, 0), part,
                             noise=0.3)
    inner = (slice(4, 20), slice(4, 20), slice(1, 5))  # the receptive field inside the patch
    np.testing.assert_allclose(patch[inner], whole[inner], atol=1e-3)  # instance norm: 0.1s

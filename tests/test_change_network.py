"""The learnt change detector's parts (issue 39, stage 2): synthetic changes drawn into two
visits, the network's inputs and outputs, its weights read or refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from brainuad.errors import BrainUADError
from brainuad.longitudinal.network import ChangeNet, change_mask, load_net, probabilities
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


def test_weights_are_read_weights_only_and_damaged_ones_refused(tmp_path):
    net = ChangeNet(width=2)
    path = tmp_path / "change_net.pt"
    torch.save(net.state_dict(), path)
    (tmp_path / "change_net.json").write_text('{"width": 2}')
    loaded = load_net(path)
    assert not loaded.training
    for a, b in zip(net.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    path.write_bytes(b"not a network")
    with pytest.raises(BrainUADError, match="change_net.pt"):
        load_net(path)
    (tmp_path / "change_net.json").unlink()
    with pytest.raises(BrainUADError, match="change_net.pt"):
        load_net(path)

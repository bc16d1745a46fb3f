"""Lesion changes drawn into two visits of one person on one grid: what the learnt change
detector (`longitudinal.network`) is trained on, so that it needs no change labels (issue 39).

The visits are a raw FLAIR against a simulated rescan of itself (`data.shifts.rescanned`), so
nothing changed between them but what is drawn here. A lesion is an ovoid with a rough outline
(its radius varied by smooth noise), 0.01 to 1.5 ml, in any orientation, blurred by half a
voxel per axis (partial volume); it brightens a visit's lesion z (the visit against its own
grey matter, `Visits.lesion_*`) towards its own level of `contrast` grey-matter spreads,
never darkening a voxel. Each lesion is one of `KINDS`: new (at the follow-up only),
resolving (the baseline only), enlarging or shrinking (smaller, and fainter, at one visit),
fading or brightening (one shape, at one visit no brighter than grey matter), or stable (one
shape, its level at the two visits within `gain` of each other: not a change, as most of a
patient's lesions are, though a new bias field and noise move their brightness), the two
visits' copies shifted by a fraction of a voxel (registration and the second interpolation
move a stable lesion too).
The label: 1 where the follow-up's lesion outgrows the baseline's by half its profile (or, for
a brightening lesion, lies there at both) and shows (`SHOWS` spreads brighter than the other
visit there), 2 the other way (as `change.CODE`). Real shrinking lesions mostly fade as they
shrink (the MSLUB pairs' references are 70-76 % darker at study 2 in patient03 and 12)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

KINDS = ("new", "resolving", "enlarging", "shrinking", "fading", "brightening", "stable")
#: how much brighter than the other visit a changed voxel must end up (grey-matter spreads)
SHOWS = 1.0


@dataclass(frozen=True)
class ChangeSynth:
    """What synthetic lesions look like: volume (ml, log-uniform), the level they brighten to
    (grey-matter spreads above the visit's grey matter: a faint lesion at 1, a bright one at
    7), each kind's share, how much smaller the smaller copy of an enlarging or shrinking lesion
    is (its radii times this range, its level too), the two copies' jitter (voxels), and how
    far a stable lesion's level may differ between the visits (a factor within exp(+-gain))."""

    min_ml: float = 0.01
    max_ml: float = 1.5
    contrast: tuple[float, float] = (1.0, 7.0)
    shares: tuple[float, ...] = (0.2, 0.1, 0.15, 0.15, 0.1, 0.05, 0.25)  # in the order of KINDS
    smaller: tuple[float, float] = (0.4, 0.8)
    jitter: float = 0.3
    gain: float = 0.2


def ovoid(shape: tuple[int, ...], centre: np.ndarray, ml: float, spacing: np.ndarray,
          rng: np.random.Generator, scale: float = 1.0, shift: np.ndarray | None = None,
          seed: int = 0) -> np.ndarray:
    """A lesion's profile in [0, 1] on a grid of `spacing` (mm): an ovoid of `ml` (times
    `scale` cubed) around voxel `centre` (+ `shift` voxels), its radius roughened by a few
    waves over its directions drawn from `seed` (in the lesion's own frame, so two copies of
    one lesion share their outline whatever their size and place)."""
    axes = np.exp(rng.uniform(-0.4, 0.4, 3))
    radii = axes * (ml * 1000 * 3 / (4 * np.pi) / np.prod(axes)) ** (1 / 3) * scale
    rotation = Rotation.random(random_state=rng).as_matrix()
    centre = np.asarray(centre, float) + (0 if shift is None else shift)
    reach = int(np.ceil(radii.max() * 1.4 / spacing.min())) + 2
    box = tuple(slice(max(0, int(c) - int(np.ceil(reach * spacing.min() / s))),
                      min(n, int(c) + int(np.ceil(reach * spacing.min() / s)) + 1))
                for c, s, n in zip(centre, spacing, shape, strict=True))
    grid = np.stack(np.meshgrid(*[(np.arange(b.start, b.stop) - c) * s
                                  for b, c, s in zip(box, centre, spacing, strict=True)],
                                indexing="ij"), -1)
    frame = (grid @ rotation) / radii  # the lesion's own coordinates: its outline at r = 1
    r = np.linalg.norm(frame, axis=-1)
    waves = np.random.default_rng(seed)
    vectors, phases = waves.normal(0, 2.0, (4, 3)), waves.uniform(0, 2 * np.pi, 4)
    direction = frame / np.maximum(r, 1e-6)[..., None]
    rough = np.cos(direction @ vectors.T + phases).mean(-1)
    inside = (r * (1 + 0.25 * rough) <= 1).astype(np.float32)
    out = np.zeros(shape, np.float32)
    out[box] = ndimage.gaussian_filter(inside, 0.5)
    return out


def draw_changes(baseline: np.ndarray, followup: np.ndarray, where: np.ndarray,
                 spacing: np.ndarray, count: int, rng: np.random.Generator,
                 cfg: ChangeSynth = ChangeSynth()) -> tuple[np.ndarray, np.ndarray,
                                                            np.ndarray, list[str]]:
    """`count` lesions centred in `where` drawn into the two visits' lesion z (copies are
    returned); the label (0, 1 growth, 2 shrinkage) and each lesion's kind."""
    baseline, followup = baseline.copy(), followup.copy()
    # where each visit's lesion outgrows the other's (copies unshifted: a stable lesion that
    # only moved by a fraction of a voxel is no change), labelled once all are drawn, so a
    # lesion drawn over another one's change hides it
    grew, shrank = (np.zeros(baseline.shape, np.float32) for _ in range(2))
    candidates = np.argwhere(where)
    kinds = []
    spacing = np.asarray(spacing, float)
    for _ in range(count if len(candidates) else 0):
        kind = KINDS[rng.choice(len(KINDS), p=np.asarray(cfg.shares) / sum(cfg.shares))]
        kinds.append(kind)
        centre = candidates[rng.integers(len(candidates))]
        ml = float(np.exp(rng.uniform(np.log(cfg.min_ml), np.log(cfg.max_ml))))
        level = float(rng.uniform(*cfg.contrast))
        smaller = float(rng.uniform(*cfg.smaller))
        faint = float(rng.uniform(-1.0, 0.0))  # a faded lesion: at most grey matter's level
        gain = float(np.exp(rng.uniform(-cfg.gain, cfg.gain)))  # a stable lesion's, rescanned
        scales, levels = {
            "new": ((0, 1), (level, level)), "resolving": ((1, 0), (level, level)),
            "enlarging": ((smaller, 1), (level * smaller, level)),
            "shrinking": ((1, smaller), (level, level * smaller)),
            "fading": ((1, 1), (level, faint)), "brightening": ((1, 1), (faint, level)),
            "stable": ((1, 1), (level, level * gain))}[kind]
        shift, seed = rng.normal(0, cfg.jitter, 3), int(rng.integers(2**31))
        state = rng.bit_generator.state
        profiles = {}  # (visit, moved): the baseline's copy is drawn moved, compared unmoved
        for visit, moved in ((0, False), (1, False), (0, True)):
            if scales[visit] and not (moved and not cfg.jitter):
                rng.bit_generator.state = state  # every copy: one shape, one orientation
                profiles[visit, moved] = ovoid(baseline.shape, centre, ml, spacing, rng,
                                               scales[visit], shift if moved else None, seed)
        none = np.zeros(baseline.shape, np.float32)
        shapes = [profiles.get((visit, False), none) for visit in (0, 1)]
        drawn = [profiles.get((0, True), shapes[0]), shapes[1]]
        for values, profile, lesion_level in zip((baseline, followup), drawn, levels,
                                                 strict=True):
            values += profile * np.maximum(lesion_level - values, 0)
        if kind in ("fading", "brightening"):  # one shape, one visit faint
            np.maximum(grew if kind == "brightening" else shrank,
                       np.minimum(*shapes), out=grew if kind == "brightening" else shrank)
        elif kind != "stable":
            np.maximum(grew, shapes[1] - shapes[0], out=grew)
            np.maximum(shrank, shapes[0] - shapes[1], out=shrank)
    label = np.zeros(baseline.shape, np.uint8)
    label[(grew > 0.5) & (followup - baseline > SHOWS)] = 1
    label[(shrank > 0.5) & (baseline - followup > SHOWS)] = 2
    return baseline.astype(np.float32), followup.astype(np.float32), label, kinds

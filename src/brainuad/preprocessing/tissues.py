"""A registered scan's own tissue levels, where the atlas puts each tissue: the reference of the
tissue score (`models/tissue`), of compare's lesion level, and the check that a scan has the
contrast its model reads, whatever its file is called.

The grey matter's level and spread are taken where the atlas says grey matter (its prior above
`GM_PRIOR`, inside the brain eroded by `STATS_EROSION_MM`), leaving out the voxels darker than
halfway between the scan's CSF and white matter (CSF mixed in by partial volume or a
registration a few mm off): the median and the MAD, which lesions (a few % of those voxels at
most) hardly move.
"""

from __future__ import annotations

import numpy as np

from brainuad.errors import BrainUADError
from brainuad.io.images import Volume
from brainuad.preprocessing.atlas import atlas, grid_resolution, regrid
from brainuad.preprocessing.intensity import robust_spread
from brainuad.preprocessing.morphology import eroded_mask

#: Atlas probabilities above which a voxel counts as that tissue for the scan's own statistics.
GM_PRIOR, PURE_PRIOR = 0.7, 0.9
#: Where the statistics are taken: the brain eroded by this much (no skull, no partial volume).
STATS_EROSION_MM = 3.0


def priors(image: Volume) -> dict[str, np.ndarray]:
    """The atlas's CSF, grey and white matter probabilities on the scan's (atlas) grid."""
    resolution = grid_resolution(image.shape, image.affine)
    maps = atlas(resolution or 1)
    if resolution is not None:
        return {k: maps[k] for k in ("csf", "gm", "wm")}
    return {k: regrid(maps[k], maps["affine"], image.shape, image.affine)
            for k in ("csf", "gm", "wm")}


def stats_region(brain: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """The brain eroded by `STATS_EROSION_MM`, where the scan's tissue statistics are taken."""
    return eroded_mask(brain, spacing, STATS_EROSION_MM)


def grey_voxels(values: np.ndarray, inner: np.ndarray, tissue: dict[str, np.ndarray],
                levels: dict[str, float]) -> np.ndarray:
    """Where the grey matter's statistics are taken: atlas grey matter inside the eroded brain
    (`inner`, `stats_region`), brighter than halfway between CSF and white matter."""
    return inner & (tissue["gm"] > GM_PRIOR) & (values > (levels["csf"] + levels["wm"]) / 2)


def tissue_levels(values: np.ndarray, inner: np.ndarray, tissue: dict[str, np.ndarray],
                  where: str = "") -> dict[str, float]:
    """The scan's own CSF, white and grey matter levels, and the grey matter's spread, taken
    inside `inner` (`stats_region`)."""
    csf, wm = (values[inner & (tissue[k] > PURE_PRIOR)] for k in ("csf", "wm"))
    if csf.size < 100 or wm.size < 100:
        raise BrainUADError(f"{where}: too little CSF or white matter where the atlas has them "
                            "to take the scan's own tissue levels (is it registered?)")
    levels = {"csf": float(np.median(csf)), "wm": float(np.median(wm))}
    grey = values[grey_voxels(values, inner, tissue, levels)]
    if grey.size < 100:
        raise BrainUADError(f"{where}: too little grey matter to take its level")
    levels["gm"] = float(np.median(grey))
    levels["gm_spread"] = max(robust_spread(grey, levels["gm"]), 1e-3)
    return levels


#: What each contrast brainuad reads looks like: bounds on the median of CSF and of grey matter
#: as fractions of the white matter's, after registration. Measured on every real scan in
#: ../shared/data (benchmarks/inputs_check.py --parts c: 13 FLAIRs, 22 T1s of which 2 after
#: contrast, 9 T2s, raw and preprocessed): FLAIR CSF 0.27-0.74, GM 1.01-1.18; T1 (and T1 after
#: contrast) CSF 0.15-0.65, GM 0.79-0.89; T2 CSF 1.68-3.16, GM 1.09-1.35. The cuts lie midway
#: between the groups (docs/results/inputs_check.md).
CSF_CUT, GM_CUT = 1.2, 0.95
CONTRASTS: dict[str, dict[str, tuple[float, float]]] = {
    "flair": {"csf": (0.0, CSF_CUT), "gm": (GM_CUT, np.inf)},
    "t1": {"csf": (0.0, CSF_CUT), "gm": (0.0, GM_CUT)},
    "t2": {"csf": (CSF_CUT, np.inf), "gm": (GM_CUT, np.inf)},
}
#: what a contrast is called in an error
NAMES = {"flair": "a FLAIR", "t1": "a T1", "t2": "a T2"}


def contrast_ratios(image: np.ndarray, brain: np.ndarray, tissue: dict[str, np.ndarray],
                    spacing: np.ndarray, where: str = "") -> dict[str, float]:
    """The median of CSF and of grey matter as fractions of the white matter's median, where
    the atlas puts each tissue (`tissue`: its CSF, grey and white matter probabilities on the
    scan's grid; pure CSF and white matter, grey matter above `GM_PRIOR`) inside the brain
    eroded by `STATS_EROSION_MM`."""
    inner = stats_region(brain > 0, spacing)
    levels = {}
    for name, prior in (("csf", PURE_PRIOR), ("gm", GM_PRIOR), ("wm", PURE_PRIOR)):
        values = image[inner & (tissue[name] > prior)]
        if values.size < 100:
            raise BrainUADError(f"{where}: too little {name.upper()} where the atlas has it to "
                                "tell the scan's contrast (is it a brain?)")
        levels[name] = float(np.median(values))
    if levels["wm"] <= 0:
        raise BrainUADError(f"{where}: the white matter is dark as background: not a scan "
                            "brainuad can read")
    return {"csf": levels["csf"] / levels["wm"], "gm": levels["gm"] / levels["wm"]}


def check_contrast(image: np.ndarray, brain: np.ndarray, tissue: dict[str, np.ndarray],
                   spacing: np.ndarray, modality: str, where: str) -> None:
    """A scan given as `modality` whose tissues' order is another contrast's: refused."""
    problem = contrast_problem(contrast_ratios(image, brain, tissue, spacing, where), modality)
    if problem:
        raise BrainUADError(f"{where}: given as {NAMES[modality]}, but {problem}")


def _outside(ratios: dict[str, float], modality: str) -> list[str]:
    def expected(low: float, high: float) -> str:
        return (f"over {low:g}" if high == np.inf else f"under {high:g}" if low == 0
                else f"{low:g}-{high:g}")

    return [f"{tissue.upper()} {ratios[tissue]:.2f} x white matter (expected "
            f"{expected(low, high)})" for tissue, (low, high) in CONTRASTS[modality].items()
            if not low <= ratios[tissue] <= high]


def contrast_problem(ratios: dict[str, float], modality: str) -> str | None:
    """Why a scan with these `contrast_ratios` is not `modality` (None: it looks like one, or
    `modality` has no known look)."""
    if modality not in CONTRASTS:
        return None
    off = _outside(ratios, modality)
    if not off:
        return None
    looks = [NAMES[m] for m in CONTRASTS if m != modality and not _outside(ratios, m)]
    return (f"its contrast is not {NAMES[modality]}'s: {'; '.join(off)}"
            + (f"; it looks like {' or '.join(looks)}" if looks else ""))

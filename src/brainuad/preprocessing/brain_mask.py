"""The brain mask from the scan itself, not the template's outline carried over by a registration.

deepbet (Fisch et al., 2024; MIT licence) outlines the brain with two small 3D networks whose
TorchScript files ship inside its wheel (`torch.jit.load`: no pickled Python code), for any MRI
contrast, with or without skull. Against the public MSLUB brain masks of seven raw FLAIRs it
reached Dice 0.955-0.967 where the template's mask reached 0.936-0.957, and 0.977-0.984 against
the IXI T1 parcellations (template 0.947-0.959): docs/preprocessing/brain_mask.md.

The template's mask stays the fallback: where deepbet fails or its outline and the template's
disagree (Dice below `MIN_AGREEMENT`: a broken mask, or a registration off), the template's is
used and the reason is kept for the report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np

from brainuad.io.images import Volume

SOURCES = ("scan", "template")
#: Dice between deepbet's mask and the template's below which the template's is used: 0.93-0.96
#: on the real scans of ../shared/data; the registration gate's own bound on brain overlap.
MIN_AGREEMENT = 0.80


@dataclass(frozen=True)
class BrainMask:
    """Which outline a scan's brain is, and why (for summary.json and the report)."""

    source: str  # "scan (deepbet)", "template", "template (fallback)" or "user"
    agreement: float | None = None  # Dice of deepbet's mask with the template's
    reason: str = ""

    def to_dict(self) -> dict:
        return {"source": self.source, "agreement_with_template": self.agreement,
                "reason": self.reason}


@lru_cache(maxsize=1)
def extractor():
    """deepbet's two networks, loaded once per process (about 0.3 s); on the GPU if there is
    one, as deepbet itself chooses."""
    from deepbet import BrainExtraction  # imports pandas and its networks: only when used

    return BrainExtraction()


#: deepbet resizes the brain's bounding box to a cube of this many voxels a side for its second
#: network (256 in deepbet's own `run`). At 192, on the 11 raw FLAIRs and 10 IXI T1 scans of
#: ../shared/data, the masks' Dice against the references moved by at most 0.005 (means 0.8980
#: vs 0.8984 and 0.9813 vs 0.9814) in 1.7 s instead of 3.8 s; at 160 they lost about 0.01
#: (docs/preprocessing/brain_mask.md).
NETWORK_SIZE = 192


def scan_brain(volume: Volume, size: int = NETWORK_SIZE) -> np.ndarray:
    """deepbet's brain mask of a scan, on the scan's own grid (bool): deepbet's own steps (RAS
    orientation, its two networks, largest component, holes filled) at `size`."""
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(volume.data, np.float32),
                                                     volume.affine))
    network = extractor()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # interpolation warnings of torch inside deepbet
        probability = network.run_model(image.get_fdata(dtype=np.float32).copy(),
                                          shape=(size,) * 3)
    mask = network.postprocess(probability > 0.5)
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                           nib.io_orientation(volume.affine))
    return nib.orientations.apply_orientation(mask, back) > 0


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks on one grid."""
    total = int(a.sum()) + int(b.sum())
    return 2 * float((a & b).sum()) / total if total else 0.0

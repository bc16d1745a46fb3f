"""The brain mask from the scan itself, not the template's outline carried over by a registration.

deepbet (Fisch et al., 2024; MIT licence) outlines the brain with two small 3D networks, for any
MRI contrast, with or without skull. Against the public MSLUB brain masks of seven raw FLAIRs it
reached Dice 0.955-0.967 where the template's mask reached 0.936-0.957, and 0.977-0.984 against
the IXI T1 parcellations (template 0.947-0.959): docs/preprocessing/brain_mask.md. Its networks
ship here as ONNX files (`scripts/export_deepbet.py`, from its wheel's TorchScript files) and run
in onnxruntime, with deepbet's own steps around them in numpy: importing torch and deepbet
(pandas) took 1.5-2 s of every `segment` on a 2-core machine, more than the networks themselves.

The template's mask stays the fallback: where deepbet fails or its outline and the template's
disagree (Dice below `MIN_AGREEMENT`: a broken mask, or a registration off), the template's is
used and the reason is kept for the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fill_voids
import nibabel as nib
import numpy as np

from brainuad.errors import BrainUADError, first_line
from brainuad.io.images import Volume
from brainuad.preprocessing.morphology import components

#: deepbet's networks as ONNX (`scripts/export_deepbet.py`): the one that finds the brain's box
#: on the scan at `BOX_SIZE`^3, and the one that outlines the brain in that box.
DEEPBET = Path(__file__).resolve().parents[1] / "weights" / "deepbet"
NETWORKS = ("bbox_model.onnx", "model.onnx")
BOX_SIZE = 128
#: onnxruntime's threads (None: the cores this process may use; a worker of several sets 1)
THREADS: int | None = None


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
def extractor() -> tuple[Any, Any]:
    """deepbet's two networks in onnxruntime, loaded once per process (0.03 s); a missing or
    unreadable file is a one-line error naming it."""
    import onnxruntime  # only where a brain is outlined

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its notes on the graph are not for users
    # the cores this process may use: onnxruntime counts the host's, whatever a container or a
    # cluster's job allows (onnxruntime#29510)
    options.intra_op_num_threads = THREADS or (len(os.sched_getaffinity(0)) if hasattr(
        os, "sched_getaffinity") else (os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    sessions = []
    for name in NETWORKS:
        try:
            sessions.append(onnxruntime.InferenceSession(
                str(DEEPBET / name), options, providers=["CPUExecutionProvider"]))
        except Exception as err:  # onnxruntime raises its own classes for a bad file
            raise BrainUADError(f"{DEEPBET / name}: deepbet's network cannot be loaded "
                                f"({first_line(err)})") from err
    return sessions[0], sessions[1]


#: deepbet resizes the brain's bounding box to a cube of this many voxels a side for its second
#: network (256 in deepbet's own `run`). At 192, on the 11 raw FLAIRs and 10 IXI T1 scans of
#: ../shared/data, the masks' Dice against the references moved by at most 0.005 (means 0.8980
#: vs 0.8984 and 0.9813 vs 0.9814) in 1.7 s instead of 3.8 s; at 160 they lost about 0.01
#: (docs/preprocessing/brain_mask.md).
NETWORK_SIZE = 192


def _nearest(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """torch's `interpolate(mode="nearest-exact")`, which deepbet uses, index for index (its
    float32 arithmetic kept: in float64 some sizes pick the neighbouring voxel)."""
    index = [np.minimum(np.floor(((np.arange(m) + 0.5) * (np.float32(n) / np.float32(m)))
                                 .astype(np.float32)).astype(np.int64), n - 1)
             for n, m in zip(x.shape, shape, strict=True)]
    return x[np.ix_(*index)]


def _normalised(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """deepbet's `normalize`: clipped to its percentiles, standardised (torch's std is the
    sample one), scaled to ImageNet's mean and spread; batch and channel axes added."""
    x = (x - low) / (high - low)
    np.clip(x, 0, 1, out=x)
    mean, spread = x.mean(), x.std(ddof=1)
    x -= mean  # in place: the same arithmetic, without four copies of a 192^3 volume
    x /= spread
    x *= 0.226
    x += 0.449
    return x.astype(np.float32, copy=False)[None, None]


def _largest(mask: np.ndarray) -> np.ndarray:
    """deepbet's `keep_largest_connected_component` (26-connected)."""
    labels, count = components(mask, full=True)
    if not count:
        raise ValueError("no brain found")
    return labels == np.bincount(labels[labels > 0]).argmax()


def _box(small: np.ndarray, shape: tuple[int, ...], margin: float = 0.1) -> tuple[slice, ...]:
    """deepbet's `get_bbox_with_margin`: the box of the planes where more than 2 % of the
    coarse mask is brain, scaled to the scan and widened by `margin` of its size each side
    (float32, rounded half to even, like its torch code)."""
    box = []
    for axis, (n, m) in enumerate(zip(shape, small.shape, strict=True)):
        planes = np.flatnonzero(small.mean(axis=tuple(a for a in range(3) if a != axis)) > 0.02)
        if not planes.size:
            raise ValueError("not enough foreground to place the brain's box")
        scale = np.float32(n) / np.float32(m)
        centre = np.round(np.float32((planes.max() + 1 + planes.min()) / 2) * scale)
        size = np.round(np.float32(1 + 2 * np.float32(margin))
                        * (np.float32(planes.max() + 1 - planes.min()) * scale))
        box.append(slice(max(0, int(centre - size / 2)), min(n, int(centre + size / 2))))
        if box[-1].stop <= box[-1].start:
            raise ValueError("the brain's box is empty")
    return tuple(box)


def brain_softmax(logits: np.ndarray) -> np.ndarray:
    """The brain's probability from a network's two logits `(1, 2, x, y, z)`: the softmax
    that the ONNX files leave out (`scripts/export_deepbet.py`)."""
    return (1 / (1 + np.exp(logits[0, 0] - logits[0, 1]))).astype(np.float32)


def _logits(network: Any, x: np.ndarray) -> np.ndarray:
    """One network's output; onnxruntime's own errors (not RuntimeErrors) as a RuntimeError, which
    the pipeline meets by falling back to the template's mask, as it did torch's."""
    try:
        return network.run(None, {"image": x})[0]
    except Exception as err:
        raise RuntimeError(f"deepbet's network failed ({first_line(err)})") from err


def brain_probability(x: np.ndarray, size: int = NETWORK_SIZE) -> tuple[np.ndarray,
                                                                         tuple[slice, ...]]:
    """deepbet's `run_model` on a RAS volume: the brain's box from the first network on the
    scan at `BOX_SIZE`^3, then the second network's brain probability in that box at `size`^3,
    on the scan's grid (0 outside the box), and the box."""
    box_net, brain_net = extractor()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a flat scan: no brain
        return _probability(box_net, brain_net, np.nan_to_num(x.astype(np.float32)), size)


def _probability(box_net: Any, brain_net: Any, x: np.ndarray,
                 size: int) -> tuple[np.ndarray, tuple[slice, ...]]:
    small = _nearest(x, (BOX_SIZE,) * 3)
    low, high = np.quantile(small, [0.005, 0.995]).astype(np.float32)  # as torch.quantile
    coarse = brain_softmax(_logits(box_net, _normalised(small, low, high)))
    box = _box(_largest(coarse > 0.5).astype(np.float32), x.shape)
    crop = _nearest(x[box], (size,) * 3)
    fine = brain_softmax(_logits(brain_net, _normalised(crop, low, high)))
    probability = np.zeros_like(x)
    probability[box] = _nearest(fine, probability[box].shape)
    return probability, box


def scan_brain(volume: Volume, size: int = NETWORK_SIZE) -> np.ndarray:
    """deepbet's brain mask of a scan, on the scan's own grid (bool): deepbet's own steps (RAS
    orientation, its two networks, largest component, holes filled) at `size`."""
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(volume.data, np.float32),
                                                     volume.affine))
    probability, box = brain_probability(image.get_fdata(dtype=np.float32), size)
    mask = probability > 0.5
    mask[box] = fill_voids.fill(_largest(mask[box]))
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"),
                                           nib.io_orientation(volume.affine))
    return nib.orientations.apply_orientation(mask, back) > 0


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two masks on one grid."""
    total = int(a.sum()) + int(b.sum())
    return 2 * float((a & b).sum()) / total if total else 0.0


def own_or_template(outline: Callable[[], np.ndarray], template_mask: np.ndarray,
                    carry: Callable[[np.ndarray], np.ndarray] = lambda own: own
                    ) -> tuple[np.ndarray, BrainMask]:
    """deepbet's mask (`outline()`, brought onto `template_mask`'s grid by `carry`), or the
    template's where deepbet finds no brain or the two disagree (Dice below `MIN_AGREEMENT`),
    with the reason. A missing or broken network file stops the scan (the install, not the
    scan: flair-ms's threshold was chosen with deepbet's masks)."""
    try:
        own = outline()
    except BrainUADError:
        raise
    except (RuntimeError, ValueError) as err:
        return template_mask, BrainMask("template (fallback)", None,
                                        f"deepbet found no brain ({err})")
    own = carry(own)
    overlap = round(agreement(own, template_mask), 4)
    if overlap < MIN_AGREEMENT:
        return template_mask, BrainMask(
            "template (fallback)", overlap,
            f"deepbet's mask overlaps the template's by Dice {overlap:.2f} (needs >= "
            f"{MIN_AGREEMENT})")
    return own, BrainMask("scan (deepbet)", overlap)

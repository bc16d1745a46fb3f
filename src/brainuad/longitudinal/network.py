"""The learnt change detector (issue 39, stage 2): a small 3D U-Net that reads both visits'
lesion z (each visit against its own grey matter, on the follow-up's grid) and says, voxel by
voxel, how likely the lesion status grew (new or enlarging) or shrank (shrinking or resolving).
It learns what a change looks like from synthetic changes drawn into scan-rescan pairs
(`longitudinal.synthetic`, scripts/train_change_detector.py), so it needs no change labels.
Besides the two visits it reads their difference in spreads of the pair's own noise
(`difference_noise`): how far a difference stands out depends on the pair's noise, which
differs between scanners and sessions more than the grey-matter spreads of each visit do.

The grids it reads are the follow-up's own (thick-sliced 2D FLAIRs: about 0.7 x 0.7 x 3 mm):
its pooling halves the slices only once."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from brainuad.errors import BrainUADError, first_line
from brainuad.preprocessing.intensity import robust_spread
from brainuad.scoring.postprocess import remove_small_components

#: the lesion z range the network reads (grey-matter spreads), and its scale
Z_RANGE, Z_SCALE = (-10.0, 15.0), 5.0
#: the difference channel's range and scale (spreads of the pair's difference noise)
D_RANGE, D_SCALE = (-10.0, 10.0), 5.0
#: the least difference noise taken (grey-matter spreads of the lesion z)
NOISE_FLOOR = 0.1
#: the inputs: both visits' lesion z, their difference in its noise, the brain
INPUTS = 4
#: the crop's sides are padded to multiples of these (the U-Net's pooling)
MULTIPLE = (4, 4, 2)


def _block(inputs: int, outputs: int) -> nn.Sequential:
    """Two convolutions, each normalised by running statistics (batch norm): the network
    trains on patches and runs on a whole brain's box, where an instance norm's statistics
    would be another's."""
    return nn.Sequential(
        nn.Conv3d(inputs, outputs, 3, padding=1), nn.BatchNorm3d(outputs),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv3d(outputs, outputs, 3, padding=1), nn.BatchNorm3d(outputs),
        nn.LeakyReLU(0.1, inplace=True))


class ChangeNet(nn.Module):
    """Two levels down (in-plane only, then all three axes), `width` channels at the top;
    three outputs per voxel: no change, growth, shrinkage (logits)."""

    def __init__(self, width: int = 8, inputs: int = INPUTS) -> None:
        super().__init__()
        self.width = width
        self.down1, self.down2 = _block(inputs, width), _block(width, 2 * width)
        self.bottom = _block(2 * width, 4 * width)
        self.up2, self.up1 = _block(6 * width, 2 * width), _block(3 * width, width)
        self.head = nn.Conv3d(width, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.down1(x)
        second = self.down2(functional.max_pool3d(first, (2, 2, 1)))
        bottom = self.bottom(functional.max_pool3d(second, 2))
        up = functional.interpolate(bottom, scale_factor=2, mode="trilinear")
        up = self.up2(torch.cat([up, second], 1))
        up = functional.interpolate(up, scale_factor=(2, 2, 1), mode="trilinear")
        return self.head(self.up1(torch.cat([up, first], 1)))


def difference_noise(lesion_baseline: np.ndarray, lesion_followup: np.ndarray,
                     brain: np.ndarray) -> float:
    """The spread of the two visits' lesion-z difference over the brain (robust: changes are a
    few voxels of it), so that the difference channel reads in the pair's own noise."""
    values = (lesion_followup - lesion_baseline)[brain > 0]
    # at least a tenth of a grey-matter spread: a scan against an exact copy of itself has
    # none, and its interpolation's last digits must not read as changes
    return max(robust_spread(values), NOISE_FLOOR) if values.size > 100 else 1.0


def net_inputs(lesion_baseline: np.ndarray, lesion_followup: np.ndarray, brain: np.ndarray,
               noise: float) -> np.ndarray:
    """The network's channels: each visit's lesion z (clipped, scaled, zero outside the
    brain), their difference in spreads of `noise` (`difference_noise`), and the brain."""
    inside = brain.astype(np.float32)
    visits = [np.clip(z, *Z_RANGE) / Z_SCALE * inside for z in (lesion_baseline,
                                                                  lesion_followup)]
    difference = np.clip((lesion_followup - lesion_baseline) / noise, *D_RANGE) / D_SCALE
    return np.stack([*visits, difference * inside, inside]).astype(np.float32)


def probabilities(net: ChangeNet, lesion_baseline: np.ndarray, lesion_followup: np.ndarray,
                  brain: np.ndarray, noise: float | None = None) -> tuple[np.ndarray,
                                                                          np.ndarray]:
    """Each voxel's probability of growth and of shrinkage (zero outside the brain), the
    network run once on the brain's bounding box; `noise`: the pair's difference noise (None:
    `difference_noise` over `brain`)."""
    grown, shrunk = (np.zeros(brain.shape, np.float32) for _ in range(2))
    found = np.argwhere(brain)
    if not len(found):
        return grown, shrunk
    if noise is None:
        noise = difference_noise(lesion_baseline, lesion_followup, brain)
    low, high = found.min(0), found.max(0) + 1
    size = [int(np.ceil((h - lo) / m) * m) for lo, h, m in zip(low, high, MULTIPLE, strict=True)]
    low = [max(0, min(lo, n - s)) for lo, s, n in zip(low, size, brain.shape, strict=True)]
    box = tuple(slice(lo, lo + s) for lo, s in zip(low, size, strict=True))
    x = net_inputs(lesion_baseline[box], lesion_followup[box], brain[box], noise)
    inside = tuple(slice(0, n) for n in x.shape[1:])  # a grid smaller than the padded box
    x = np.pad(x, [(0, 0)] + [(0, s - n) for s, n in zip(size, x.shape[1:], strict=True)])
    was = net.training
    net.eval()
    with torch.inference_mode():
        p = torch.softmax(net(torch.from_numpy(x)[None]), 1)[0].numpy()
    net.train(was)
    grown[box], shrunk[box] = p[1][inside] * brain[box], p[2][inside] * brain[box]
    return grown, shrunk


def change_mask(grown: np.ndarray, shrunk: np.ndarray, allowed: np.ndarray, threshold: float,
                min_voxels: int) -> np.ndarray:
    """0, 1 growth, 2 shrinkage: each voxel's likelier change where it reaches `threshold`
    inside `allowed` (where compare looks), in components of at least `min_voxels`."""
    region = remove_small_components((np.maximum(grown, shrunk) > threshold) & allowed,
                                     min_voxels)
    mask = np.zeros(grown.shape, np.uint8)
    mask[region] = np.where(grown[region] >= shrunk[region], 1, 2)
    return mask


def load_net(path: Path) -> ChangeNet:
    """A trained network (weights only, its width and inputs beside them in the .json); a
    missing or damaged file is one line naming it."""
    settings = path.with_suffix(".json")
    try:
        said = json.loads(settings.read_text())
        width, inputs = int(said["width"]), int(said.get("inputs", 3))
        if inputs != INPUTS:
            raise ValueError(f"trained on {inputs} inputs, this code gives {INPUTS}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BrainUADError(f"{settings}: the change detector's settings cannot be read "
                            f"({first_line(err)})") from err
    try:
        net = ChangeNet(width)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, RuntimeError,
            pickle.UnpicklingError) as err:
        raise BrainUADError(f"{path}: the change detector's network cannot be read "
                            f"({first_line(err)})") from err
    return net.eval()

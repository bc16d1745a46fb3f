"""The learnt change detector (issue 39, stage 2): a small 3D U-Net that reads both visits'
lesion z (each visit against its own grey matter, on the follow-up's grid) and says, voxel by
voxel, how likely the lesion status grew (new or enlarging) or shrank (shrinking or resolving).
It learns what a change looks like from synthetic changes drawn into scan-rescan pairs
(`longitudinal.synthetic`, scripts/train_change_detector.py), so it needs no change labels.

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

from brainuad.errors import BrainUADError
from brainuad.scoring.postprocess import remove_small_components

#: the lesion z range the network reads (grey-matter spreads), and its scale
Z_RANGE, Z_SCALE = (-10.0, 15.0), 5.0
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

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.width = width
        self.down1, self.down2 = _block(3, width), _block(width, 2 * width)
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


def net_inputs(lesion_baseline: np.ndarray, lesion_followup: np.ndarray,
               brain: np.ndarray) -> np.ndarray:
    """The network's three channels: each visit's lesion z (clipped, scaled, zero outside the
    brain) and the brain."""
    inside = brain.astype(np.float32)
    visits = [np.clip(z, *Z_RANGE) / Z_SCALE * inside for z in (lesion_baseline,
                                                                  lesion_followup)]
    return np.stack([*visits, inside]).astype(np.float32)


def probabilities(net: ChangeNet, lesion_baseline: np.ndarray, lesion_followup: np.ndarray,
                  brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each voxel's probability of growth and of shrinkage (zero outside the brain), the
    network run once on the brain's bounding box."""
    grown, shrunk = (np.zeros(brain.shape, np.float32) for _ in range(2))
    found = np.argwhere(brain)
    if not len(found):
        return grown, shrunk
    low, high = found.min(0), found.max(0) + 1
    size = [int(np.ceil((h - lo) / m) * m) for lo, h, m in zip(low, high, MULTIPLE, strict=True)]
    low = [max(0, min(lo, n - s)) for lo, s, n in zip(low, size, brain.shape, strict=True)]
    box = tuple(slice(lo, lo + s) for lo, s in zip(low, size, strict=True))
    x = net_inputs(lesion_baseline[box], lesion_followup[box], brain[box])
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
    """A trained network (weights only, its width beside them in the .json); a missing or
    damaged file is one line naming it."""
    settings = path.with_suffix(".json")
    try:
        width = int(json.loads(settings.read_text())["width"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise BrainUADError(f"{settings}: the change detector's settings cannot be read "
                            f"({_first_line(err)})") from err
    try:
        net = ChangeNet(width)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError, RuntimeError,
            pickle.UnpicklingError) as err:
        raise BrainUADError(f"{path}: the change detector's network cannot be read "
                            f"({_first_line(err)})") from err
    return net.eval()


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]

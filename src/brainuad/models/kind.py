"""What a model kind is to the rest of brainuad: one `Kind` record (what it reads, which files
its folder holds, which settings mean something for it, how it is built and trained) and one
`Scorer` protocol that detection calls without knowing the kind.

Adding a kind: a package under `models/` that defines its `KIND` (its network, Lightning module,
loss and scorer in modules of their own where it has them) and one line in `registry.KINDS`.
The record names those modules ("module:name") rather than importing them, so that choosing a
kind imports nothing else: the tissue kind (the bundled model) never imports torch (1.3-1.5 s
of every `segment`'s start on a 2-core machine); the threshold and normative kinds' scorers
and maps still do.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from brainuad.config import POLARITY, DetectConfig, Fields, ModelConfig, RunConfig
from brainuad.io.images import Volume
from brainuad.runtime.clock import Stopwatch
from brainuad.scoring.postprocess import Scored

if TYPE_CHECKING:
    from torch import nn

#: Which lesions a model can see: brighter, darker than expected, or either.
POLARITIES = ("bright", "dark", "both")


class Scorer(Protocol):
    """A model ready to score preprocessed scans (atlas space, brain in [0, 1])."""

    #: whether it runs a network (its thresholds then exist for every precision)
    has_network: bool

    def score(self, image: Volume, mask: Volume, detect: DetectConfig, precision: str,
              clock: Stopwatch) -> Scored:
        """The filtered anomaly score of one scan on its own grid, and the region scored."""


@dataclass(frozen=True)
class Kind:
    name: str
    summary: str  # one line: what it is
    #: preset name -> model-section values (`brainuad train --model NAME`)
    presets: dict[str, dict[str, Any]]
    #: what its scorer can compute (`DetectConfig.score`)
    scores: tuple[str, ...]
    #: the settings that mean something for it (what its folder's config.yaml holds)
    fields: Fields
    #: "module:Class" of its scorer, `(cfg, network, maps, device) -> Scorer`
    scorer: str
    #: "module:Class" of its network, built from a config (None: the kind has none)
    network: str | None = None
    #: "module:Class" of its Lightning module, imported only to train (None: nothing to fit
    #: by gradient descent)
    lightning: str | None = None
    #: preset name -> other sections' defaults that the preset brings
    defaults: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def files(self, cfg: RunConfig, has_maps: bool) -> list[str]:
        """The files a folder of this kind holds, besides model.json."""
        weights = ["model.pt"] if self.network is not None else []
        maps = ["normative.pt"] if has_maps else []
        return ["config.yaml", *weights, *maps, "threshold.json"]

    def module(self) -> type:
        """Its Lightning module class (imports Lightning)."""
        if self.lightning is None:
            raise TypeError(f"model kind {self.name} has nothing to fit by gradient descent")
        return _imported(self.lightning)

    def make_scorer(self, cfg: RunConfig, network: nn.Module | None, maps: Any,
                    device: Any) -> Scorer:
        """Its scorer, ready for `cfg` (imports the scorer's module)."""
        return _imported(self.scorer)(cfg, network, maps, device)

    def build(self, cfg: ModelConfig) -> nn.Module | None:
        """Its untrained network for `cfg` (None for a kind without one)."""
        return _imported(self.network)(cfg) if self.network is not None else None

    def bottleneck(self, model: ModelConfig) -> str:
        """The bottleneck as Table 1 writes it ('-' without a network)."""
        return model.z_description if self.network is not None else "-"


def _imported(where: str) -> Callable[..., Any]:
    """The object a "module:name" string names."""
    path, name = where.split(":")
    return getattr(importlib.import_module(path), name)


def polarity(detect: DetectConfig) -> str:
    """Which lesions a scoring can see (`POLARITIES`)."""
    return POLARITY[detect.residual]

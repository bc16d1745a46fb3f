"""Every model kind, and the preset names `brainuad train --model NAME` takes: the names of the
paper's Table 1 (described at 256 px: `sae16` has four stride-2 levels, 16 x 16 at 256 px and
8 x 8 at 128; `sae8` one more), `denoising`, `anogan`, `normative`, `threshold` and `tissue`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from brainuad.config import ModelConfig, RunConfig, from_dict, load_yaml, merge
from brainuad.errors import BrainUADError
from brainuad.models import anogan, autoencoder, normative, threshold, tissue
from brainuad.models.kind import Kind

if TYPE_CHECKING:
    from torch import nn

#: Every kind, by name: adding a kind is its package and one entry here.
KINDS: dict[str, Kind] = {k.name: k for k in (autoencoder.KIND, anogan.KIND, normative.KIND,
                                              threshold.KIND, tissue.KIND)}
#: Preset name -> its kind.
PRESETS: dict[str, Kind] = {name: k for k in KINDS.values() for name in k.presets}


def kind_of(name: str) -> Kind:
    """The kind of a preset name (`ModelConfig.name`)."""
    if name not in PRESETS:
        raise BrainUADError(f"model {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def model_defaults(name: str) -> dict[str, Any]:
    """The model section of a preset name."""
    return {"name": name, **kind_of(name).presets[name]}


def name_defaults(name: str) -> dict[str, dict[str, Any]]:
    """Every section's defaults for a preset name: `--model NAME` alone is the paper's setting
    (configs/paper/NAME.yaml)."""
    other = kind_of(name).defaults.get(name, {})
    return {"model": model_defaults(name), **{k: dict(v) for k, v in other.items()}}


def build_network(cfg: ModelConfig) -> nn.Module | None:
    """The untrained network of a config (None for a kind without one)."""
    kind = kind_of(cfg.name)
    cfg.validate()
    return kind.build(cfg)


def check_scoring(cfg: RunConfig, score: str, where: str) -> None:
    """A score the model's kind cannot compute is a clear error, before any work."""
    kind = kind_of(cfg.model.name)
    if score not in kind.scores:
        raise BrainUADError(f"{where}: a {kind.name} model ({cfg.model.name}) scores "
                            f"{' or '.join(kind.scores)}, not {score!r}")


def run_config(name: str | None = None, config_path: str | None = None,
               overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """The RunConfig for a preset name, a YAML file, or both (the file's values win over the
    name's defaults; `overrides`, e.g. from command-line flags, win over both)."""
    data: dict[str, Any] = load_yaml(config_path) if config_path else {}
    chosen = name or (data.get("model") or {}).get("name") or ModelConfig.name
    merged = merge(name_defaults(chosen), data)
    if name:
        merged["model"]["name"] = name
    merged = merge(merged, {k: v for k, v in (overrides or {}).items() if v})
    return from_dict(merged, str(config_path or f"model {chosen}"))

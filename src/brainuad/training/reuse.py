"""A run trained once and reused while it is what was asked for: the one staleness check that
`benchmark` and `demo` share."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from brainuad.config import RunConfig
from brainuad.io.files import file_checksum
from brainuad.models import folder as model_folder
from brainuad.models.registry import kind_of
from brainuad.training.train import train


def train_or_reuse(manifest: Path, run: Path, cfg: RunConfig,
                   say: Callable[[str], None] = print) -> None:
    """Train into `run`; reuse it when finished with these settings on this manifest, train it
    anew when either changed (a `--quick` run is never reported as the full one), resume it
    when cut off after a checkpoint."""
    if run.exists() and (run / model_folder.CONFIG).is_file():
        stale = stale_settings(run, cfg, manifest)
        if stale:
            say(f"{run}: trained with other settings ({stale}): training it again")
            shutil.rmtree(run)
    if (run / model_folder.THRESHOLD).is_file():
        return
    if (run / model_folder.LAST).is_file():
        train(manifest, run, resume=True)
        return
    if run.exists():
        shutil.rmtree(run)  # cut off before its first checkpoint: start again
    train(manifest, run, cfg)


def stale_settings(run: Path, cfg: RunConfig, manifest: Path) -> str:
    """What differs between a run directory and the run asked for ('' if nothing): the
    settings its kind uses, or the manifest it was trained on (path or content)."""
    fields = kind_of(cfg.model.name).fields
    old = model_folder.read_config(run).to_dict(fields)
    new = cfg.to_dict(fields)
    changed = [f"{section}.{key}" for section in new if isinstance(new[section], dict)
               for key in new[section] if old.get(section, {}).get(key) != new[section][key]]
    recorded = model_folder.read_provenance(run)
    if recorded.get("manifest") != str(Path(manifest).resolve()) or recorded.get(
            "manifest_sha256") != file_checksum(manifest):
        changed.append("training manifest")
    return ", ".join(changed)

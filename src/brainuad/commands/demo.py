"""`brainuad demo`: the whole method on a small synthetic cohort, in minutes on a laptop CPU.

synth -> preprocess -> train AnoVAEGAN (configs/demo.yaml settings, 128 px) and the FLAIR
threshold baseline -> detect the test subjects -> evaluate both -> print the table. A run of an
earlier demo is reused only when it was trained with these settings on this cohort.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from brainuad.config import RunConfig, from_dict
from brainuad.data.synth import SynthConfig, synth_cohort
from brainuad.detection.cohort import DetectOptions, detect_manifest
from brainuad.evaluation.evaluate import evaluate
from brainuad.models.registry import model_defaults
from brainuad.preprocessing.pipeline import preprocess_manifest
from brainuad.reporting.tables import results_table
from brainuad.training.reuse import train_or_reuse

#: The demo's model: the paper's AnoVAEGAN at 128 px with 16..128 channels (configs/demo.yaml).
DEMO_MODEL = {"image_size": 128, "width": 16, "max_width": 128}

#: FLAIR lesions are bright: both detectors score only what is brighter than the reconstruction,
#: where the input is above its 0.9 brain quantile (Baur et al. 2021's prior, label-free); the
#: paper's |x - x_hat| on the same weights: docs/demo/results.md.
DEMO_DETECT = {"residual": "hyperintense"}

#: The demo's patients carry a heavy lesion load (10-20 lesions of 6-30 mm, about 1-5 % of the
#: brain): the label-free 98th-percentile threshold flags about 2 % of a healthy brain by
#: construction, so at the default synth's load (0.1-0.5 %) no detector could reach a Dice of 0.5.
DEMO_LESIONS = {"lesions": (10, 20), "lesion_diameter_mm": (6.0, 30.0)}


def demo_config(name: str, epochs: int = 10, seed: int = 0) -> RunConfig:
    """The demo's settings for model `name` (configs/demo.yaml: the same for AnoVAEGAN, for
    users to train it themselves; a test keeps the two equal)."""
    return from_dict({"model": {**model_defaults(name), **DEMO_MODEL},
                      "train": {"epochs": epochs, "seed": seed, "lr_schedule": "cosine"},
                      "detect": DEMO_DETECT})


def run_demo(out: str | Path, epochs: int = 10, seed: int = 0,
             say: Callable[[str], None] = print, n_healthy: int = 12,
             n_lesioned: int = 6) -> dict[str, dict]:
    out = Path(out)
    start = time.perf_counter()

    def step(text: str) -> None:
        say(f"[{time.perf_counter() - start:6.1f} s] {text}")

    step(f"synth: {n_healthy} healthy + {n_lesioned} lesioned subjects (2 mm) -> {out / 'cohort'}")
    synth = SynthConfig(n_healthy=n_healthy, n_lesioned=n_lesioned, seed=seed, **DEMO_LESIONS)
    cohort = synth_cohort(out / "cohort", synth)
    step("preprocess: CurvatureFlow denoising, [0, 1] scaling")
    prep = preprocess_manifest(cohort.path, out / "prep").path
    summaries = {}
    for name in ("anovaegan", "threshold"):
        run = out / "runs" / name
        step(f"train {name}" + (f": {epochs} epochs" if name != "threshold" else
                                ": no training, threshold only") + " (or reuse)")
        train_or_reuse(prep, run, demo_config(name, epochs, seed), say)
        step(f"detect {name} on the test subjects")
        pred = detect_manifest(run, prep, run / "pred", DetectOptions(split="test"))
        step(f"evaluate {name}")
        summaries[name] = evaluate(pred, prep).summary
    table = results_table(summaries)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps(summaries, indent=2) + "\n")
    step("done")
    say("\n" + table)
    say(f"figures: {out / 'runs' / 'anovaegan' / 'eval'} and {out / 'runs' / 'threshold' / 'eval'}"
        f" (fig5_examples.png, fig6_histogram.png); table: {out / 'results.md'}")
    return summaries

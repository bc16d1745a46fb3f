"""The GPU path, run for real (issue 18): training and detection on a GPU against the CPU.

    python benchmarks/gpu_check.py prepare WORK   # on a CPU: the demo's cohort, AnoVAEGAN
                                                  # trained 1 epoch, its detections (fp32)
    python benchmarks/gpu_check.py run WORK       # on the GPU machine, WORK copied there

`run` trains the same 1 epoch on the GPU and detects with it; detects the CPU-trained weights on
the GPU (fp32 and bf16) and compares the score maps and masks with the CPU's; trains AnoGAN for
one epoch at 64 px on the GPU and detects with it (its latent search on the GPU). It prints a
table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from run_record import run_record  # benchmarks/run_record.py

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def brainuad(*args: str) -> float:
    """Run `python -m brainuad ARGS`; its wall seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "brainuad", *args], check=True)
    return time.perf_counter() - start


def prepare(work: Path) -> None:
    from brainuad.commands.demo import DEMO_LESIONS
    from brainuad.data.synth import SynthConfig, synth_cohort
    from brainuad.preprocessing.pipeline import preprocess_manifest

    cohort = synth_cohort(work / "cohort", SynthConfig(n_healthy=12, n_lesioned=6,
                                                       **DEMO_LESIONS))
    prep = preprocess_manifest(cohort.path, work / "prep").path
    seconds = brainuad("train", str(prep), str(work / "cpu_run"), "--config", str(CONFIG),
                       "--epochs", "1", "--accelerator", "cpu")
    brainuad("detect", str(work / "cpu_run"), str(prep), "--split", "test", "--out",
             str(work / "cpu_pred"), "--accelerator", "cpu", "--precision", "32")
    (work / "cpu_seconds.json").write_text(json.dumps({"train_1_epoch": seconds}))


def _maps(folder: Path, name: str) -> dict[str, np.ndarray]:
    import nibabel as nib

    return {p.parent.name: np.asarray(nib.load(p).dataobj, np.float32)
            for p in sorted(folder.glob(f"*/{name}.nii.gz"))}


def _summary(pred: Path, prep: Path) -> dict:
    from brainuad.evaluation.evaluate import evaluate

    summary = evaluate(pred, prep, pred.parent / f"{pred.name}-eval").summary
    return {k: round(summary[k]["mean"], 4) for k in ("dice", "auprc", "best_dice")}


def run(work: Path) -> None:
    import torch

    prep = work / "prep" / "manifest.csv"
    result = {"benchmark": "gpu_check", "device": torch.cuda.get_device_name(),
              "torch": torch.__version__}
    result["gpu_train_1_epoch_s"] = brainuad(
        "train", str(prep), str(work / "gpu_run"), "--config", str(CONFIG), "--epochs", "1",
        "--accelerator", "gpu")
    result["cpu_train_1_epoch_s"] = json.loads((work / "cpu_seconds.json").read_text())[
        "train_1_epoch"]
    brainuad("detect", str(work / "gpu_run"), str(prep), "--split", "test", "--out",
             str(work / "gpu_run_pred"), "--accelerator", "gpu", "--precision", "32")
    result["gpu_trained"] = _summary(work / "gpu_run_pred", prep)
    result["cpu_trained_on_cpu"] = _summary(work / "cpu_pred", prep)
    cpu_scores, cpu_masks = _maps(work / "cpu_pred", "score"), _maps(work / "cpu_pred", "mask")
    for precision in ("32", "bf16"):
        pred = work / f"gpu_pred_{precision}"
        result[f"detect_gpu_{precision}_s"] = brainuad(
            "detect", str(work / "cpu_run"), str(prep), "--split", "test", "--out", str(pred),
            "--accelerator", "gpu", "--precision", precision)
        scores, masks = _maps(pred, "score"), _maps(pred, "mask")
        result[f"cpu_trained_on_gpu_{precision}"] = {
            **_summary(pred, prep),
            "max_score_difference": float(max(np.abs(scores[s] - cpu_scores[s]).max()
                                              for s in scores)),
            "mask_voxels_differing": int(sum((masks[s] != cpu_masks[s]).sum() for s in masks)),
            "mask_voxels": int(sum(cpu_masks[s].sum() for s in masks))}
    result["anogan_train_1_epoch_s"] = brainuad(
        "train", str(prep), str(work / "anogan_run"), "--model", "anogan", "--image-size", "64",
        "--epochs", "1", "--accelerator", "gpu")
    result["anogan_detect_s"] = brainuad(
        "detect", str(work / "anogan_run"), str(prep), "--split", "test", "--out",
        str(work / "anogan_pred"), "--accelerator", "gpu")
    result["anogan"] = _summary(work / "anogan_pred", prep)
    print("\n| what | figure |\n| --- | --- |")
    for key, value in result.items():
        print(f"| {key} | {value} |")
    print("\n" + json.dumps({**run_record({"work": str(work)}), **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["prepare", "run"])
    parser.add_argument("work", type=Path)
    args = parser.parse_args()
    (prepare if args.step == "prepare" else run)(args.work)


if __name__ == "__main__":
    main()

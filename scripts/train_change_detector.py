"""Train compare's learnt change detector (issue 39, stage 2) on synthetic changes, no labels.

    python scripts/train_change_detector.py --out OUT [--leave-out patient03] [--minutes 15]

Cases: every raw FLAIR of ../shared/data/mslub_longitudinal_raw against a simulated rescan of
itself (`data.shifts.rescanned`, seeds 1000 + i: other realisations than the null of
benchmarks/compare_harness.py, seeds i), both on the rescan's grid as compare puts them
(`register_pair`, `on_followup_grid`); never patient01's (its change mask is the test kept
outside the project), nor `--leave-out`'s (the pair a fold is scored on). Each step draws
synthetic new, enlarging, shrinking, resolving, fading, brightening and stable lesions
(`longitudinal.synthetic`)
into random patches of the visits' lesion z, where compare looks (`change.looked_at`), and fits
`longitudinal.network.ChangeNet` to their label (cross-entropy and soft Dice, Lightning, CPU)
for `--minutes`. Writes OUT/change_net.pt (the weights) and OUT/change_net.json (what trained
it); the cases' inputs are cached under --work, keyed by what compare's inputs are keyed by
(benchmarks/compare_harness.py's `inputs_key`), `longitudinal/change.py` and the settings, the
rescan's seed in the file's name.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.nn import functional
from torch.utils.data import DataLoader, IterableDataset

from brainuad.data.shifts import rescanned
from brainuad.io.files import atomic_path, write_text
from brainuad.io.images import Volume, load_scan
from brainuad.io.provenance import git_commit
from brainuad.longitudinal.calibration import shipped
from brainuad.longitudinal.change import looked_at
from brainuad.longitudinal.network import INPUTS, ChangeNet, difference_noise, net_inputs
from brainuad.longitudinal.synthetic import ChangeSynth, draw_changes
from brainuad.longitudinal.visits import on_followup_grid, register_pair
from brainuad.preprocessing.pipeline import PreprocessConfig

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from compare_harness import inputs_key  # noqa: E402  (what compare's inputs are keyed by)
from run_record import code_hash, config_hash  # noqa: E402

RAW = REPO.parent / "shared" / "data" / "mslub_longitudinal_raw"
TEST = "patient01"  # never trains
PATCH = (64, 64, 16)  # voxels: about 46 x 46 x 48 mm on a 0.72 x 0.72 x 3 mm grid
SEED_OFFSET = 1000


def cases(work: Path, left_out: str | None) -> list[dict]:
    """The training cases: each allowed raw FLAIR against its rescan, compare's inputs (cached)
    cut to the brain's box: lesion z of both visits, brain, where changes are looked for."""
    work.mkdir(parents=True, exist_ok=True)
    out = []
    cfg = shipped().config()
    # compare's inputs, where changes are looked for (`looked_at`), and the settings
    key = config_hash([inputs_key(PreprocessConfig()), code_hash("longitudinal/change.py"),
                       dataclasses.asdict(cfg)])
    for index, folder in enumerate(sorted(RAW.glob("patient*"))):
        patient = folder.name.split("_")[0]
        if patient == TEST:
            continue
        seed = SEED_OFFSET + index  # the rescan's: in the name, as a folder added moves it
        path = work / f"case-{folder.name}-seed{seed}-{key}.pkl"
        if not path.exists():
            baseline = load_scan(folder / "FLAIR.nii.gz")
            followup = Volume(rescanned(baseline, seed).data, baseline.affine,
                              baseline.path)
            visits = on_followup_grid(register_pair(baseline, followup, PreprocessConfig()),
                                      baseline, followup, PreprocessConfig())
            _, allowed, _ = looked_at(visits, cfg)
            found = np.argwhere(visits.brain)
            box = tuple(slice(lo, hi + 1) for lo, hi in zip(found.min(0), found.max(0),
                                                              strict=True))
            payload = {name: np.ascontiguousarray(value[box]) for name, value in (
                ("lesion_baseline", visits.lesion_baseline),
                ("lesion_followup", visits.lesion_followup), ("brain", visits.brain),
                ("allowed", allowed & visits.brain))}
            payload["spacing"] = visits.spacing
            with atomic_path(path) as tmp:
                tmp.write_bytes(pickle.dumps(payload))
            print(f"case {folder.name} made", flush=True)
        case = pickle.loads(path.read_bytes())
        case["noise"] = difference_noise(case["lesion_baseline"], case["lesion_followup"],
                                         case["brain"])  # as `probabilities` takes it
        if patient != left_out and case["allowed"].any():  # somewhere to draw changes
            out.append({"name": folder.name, **case})
    return out


class Patches(IterableDataset):
    """Endless random patches of the cases with synthetic changes drawn in."""

    def __init__(self, cases: list[dict], seed: int, synth: ChangeSynth) -> None:
        self.cases, self.seed, self.synth = cases, seed, synth

    def __iter__(self):
        rng = np.random.default_rng(self.seed)
        while True:
            case = self.cases[rng.integers(len(self.cases))]
            shape = case["brain"].shape
            centre = np.argwhere(case["allowed"] if rng.random() < 0.8 else case["brain"])
            centre = centre[rng.integers(len(centre))]
            box = tuple(slice(int(np.clip(c - p // 2, 0, max(n - p, 0))),
                              int(np.clip(c - p // 2, 0, max(n - p, 0))) + p)
                        for c, p, n in zip(centre, PATCH, shape, strict=True))
            arrays = {k: case[k][box] for k in ("lesion_baseline", "lesion_followup", "brain",
                                               "allowed")}
            pad = [(0, p - n) for p, n in zip(PATCH, arrays["brain"].shape, strict=True)]
            arrays = {k: np.pad(v, pad) for k, v in arrays.items()}
            where = arrays["allowed"]
            where = where & (np.indices(where.shape)[2] > 1) & (np.indices(where.shape)[2]
                                                                 < where.shape[2] - 2)
            baseline, followup, label, _ = draw_changes(
                arrays["lesion_baseline"], arrays["lesion_followup"], where, case["spacing"],
                int(rng.integers(0, 5)), rng, self.synth)
            yield (torch.from_numpy(net_inputs(baseline, followup, arrays["brain"],
                                               case["noise"])),
                   torch.from_numpy(label.astype(np.int64)))


class Module(L.LightningModule):
    def __init__(self, width: int, lr: float) -> None:
        super().__init__()
        self.net, self.lr = ChangeNet(width), lr

    def training_step(self, batch, _):
        x, label = batch
        logits = self.net(x)
        loss = functional.cross_entropy(logits, label)
        p = torch.softmax(logits, 1)
        for code in (1, 2):  # soft Dice of each change class over the batch
            truth = (label == code).float()
            loss = loss + 1 - (2 * (p[:, code] * truth).sum() + 1) / (
                p[:, code].sum() + truth.sum() + 1)
        self.log("loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--leave-out", help="a patient (e.g. patient03) never trained on")
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/change-train"))
    args = parser.parse_args()
    if args.leave_out == TEST:
        parser.error(f"{TEST} never trains: leave out another patient")
    patients = {f.name.split("_")[0] for f in RAW.glob("patient*")}
    if args.leave_out is not None and args.leave_out not in patients:
        parser.error(f"--leave-out {args.leave_out}: no such patient in {RAW} "
                     f"({', '.join(sorted(patients))})")
    torch.manual_seed(args.seed)
    training = cases(args.work, args.leave_out)
    synth = ChangeSynth()
    module = Module(args.width, args.lr)
    start = time.perf_counter()
    trainer = L.Trainer(accelerator="cpu", max_time={"minutes": args.minutes},
                        logger=False, enable_checkpointing=False, enable_model_summary=False,
                        max_epochs=1, limit_train_batches=10**9)
    trainer.fit(module, DataLoader(Patches(training, args.seed, synth),
                                   batch_size=args.batch))
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "change_net.pt") as tmp:
        torch.save(module.net.state_dict(), tmp)
    write_text(args.out / "change_net.json", json.dumps({
        "width": args.width, "inputs": INPUTS, "trained_on": [c["name"] for c in training],
        "left_out": args.leave_out, "steps": trainer.global_step, "batch": args.batch,
        "patch": PATCH, "lr": args.lr, "seed": args.seed, "minutes": round(seconds / 60, 1),
        "synth": synth.__dict__, "git_commit": git_commit()}, indent=2) + "\n")
    print(f"{trainer.global_step} steps in {seconds / 60:.1f} min -> {args.out}")


if __name__ == "__main__":
    main()

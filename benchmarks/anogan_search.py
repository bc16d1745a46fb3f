"""AnoGAN's latent search (100 Adam steps per slice), batched, on this CPU.

    python benchmarks/anogan_search.py [--sizes 128 256] [--batch 32] [--slices 32]
                                       [--precision 32 bf16]

For each size, AnoGAN with the channels of that setting (128 px: the CPU configs' 16..128;
256 px: the paper's 64..256), random weights; the slices to reconstruct are the generator's own
samples for random codes, so the search has a code to find. Reports seconds per slice for the
100 steps and the mean search loss at the first and the last step (it must fall: the search
converges).
Prints a table and one JSON line. The paper: 19.85 s per slice on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from brainuad.config import from_dict
from brainuad.detect import reconstruct
from brainuad.models.registry import build_model, model_defaults

WIDTHS = {128: (16, 128), 256: (64, 256)}


def measure(size: int, batch: int, n: int, precision: str = "32") -> dict:
    width, max_width = WIDTHS.get(size, (16, 128))
    cfg = from_dict({"model": {**model_defaults("anogan"), "image_size": size, "width": width,
                               "max_width": max_width}})
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    with torch.no_grad():  # slices the generator can make: the search has a code to find
        slices = model.sample(torch.randn(n, cfg.model.latent_dim))[:, 0].numpy()
    reconstruct(model, slices[:2], batch, precision)  # warm-up
    start = time.perf_counter()
    reconstruct(model, slices, batch, precision)
    seconds = (time.perf_counter() - start) / n
    first, last = model.search_losses
    return {"size": size, "precision": precision, "channels": f"{width}..{max_width}",
            "batch": batch,
            "steps": cfg.model.search_steps, "s_per_slice": seconds, "loss_first": first,
            "loss_last": last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16"])
    args = parser.parse_args()
    print(f"AnoGAN latent search, {torch.get_num_threads()} threads\n")
    print("| size | precision | channels | batch | steps | s / slice | search loss first -> last |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for size in args.sizes:
        for precision in args.precision:
            row = measure(size, args.batch, args.slices, precision)
            rows.append(row)
            print(f"| {size} | {precision} | {row['channels']} | {row['batch']} | {row['steps']} | "
                  f"{row['s_per_slice']:.3f} | {row['loss_first']:.3e} -> "
                  f"{row['loss_last']:.3e} |")
    print("\n" + json.dumps({"benchmark": "anogan_search", "results": rows}))


if __name__ == "__main__":
    main()

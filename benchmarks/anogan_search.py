"""AnoGAN's latent search (100 Adam steps per slice), batched, on this CPU.

    python benchmarks/anogan_search.py [--sizes 128 256] [--batch 32] [--slices 32]
                                       [--precision 32 bf16]

For each size, AnoGAN with the channels of that setting (128 px: the CPU configs' 16..128;
256 px: the paper's 64..256), random weights with batch-norm statistics taken from the
generator's own samples (so its slices have a trained net's contrast; in eval mode with the
initial statistics they are 0.5 +- 1e-4, below bf16's resolution); the slices to reconstruct are
its samples for random codes, so the search has a code to find. Reports seconds per slice for
the 100 steps, the mean search loss at the first and the last step (it must fall: the search
converges), the FLOPs of the search (counted: generator and discriminator forward, backward to
the code) and the floor they set at the speed of a 2048^2 matmul measured in the same run.
Prints a table and one JSON line. The paper: 19.85 s per slice on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from inference import matmul_gflops  # benchmarks/inference.py
from run_record import run_record  # benchmarks/run_record.py
from torch.utils.flop_counter import FlopCounterMode

from brainuad.config import from_dict
from brainuad.models.common.residual import reconstruct
from brainuad.models.registry import build_network, model_defaults

WIDTHS = {128: (16, 128), 256: (64, 256)}


def anogan(size: int, steps: int = 100) -> torch.nn.Module:
    width, max_width = WIDTHS.get(size, (16, 128))
    cfg = from_dict({"model": {**model_defaults("anogan"), "image_size": size, "width": width,
                               "max_width": max_width, "search_steps": steps}})
    torch.manual_seed(0)
    model = build_network(cfg.model)
    for norm in model.modules():  # statistics of the generator's own samples
        if isinstance(norm, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            norm.momentum = None
    with torch.no_grad():
        model.discriminator.features(model.sample(torch.randn(32, cfg.model.latent_dim)))
    return model.eval()


def search_gflop(size: int, steps: int = 100) -> float:
    """GFLOP of one slice's whole search: counted for 1 and 2 steps, extrapolated to `steps`."""
    counts = []
    for counted in (1, 2):
        model, counter = anogan(size, counted), FlopCounterMode(display=False)
        with counter:
            model.reconstruct(torch.rand(1, 1, size, size))
        counts.append(counter.get_total_flops())
    return (counts[0] + (steps - 1) * (counts[1] - counts[0])) / 1e9


def measure(size: int, batch: int, n: int, precision: str = "32") -> dict:
    model = anogan(size)
    cfg = model.cfg
    with torch.no_grad():  # slices the generator can make: the search has a code to find
        slices = model.sample(torch.randn(n, cfg.latent_dim))[:, 0].numpy()
    reconstruct(model, slices[:2], batch, precision)  # warm-up
    start = time.perf_counter()
    reconstruct(model, slices, batch, precision)
    seconds = (time.perf_counter() - start) / n
    first, last = model.search_losses
    return {"size": size, "precision": precision, "channels": f"{cfg.width}..{cfg.max_width}",
            "batch": batch,
            "steps": cfg.search_steps, "s_per_slice": seconds, "loss_first": first,
            "loss_last": last}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--precision", nargs="+", default=["32", "bf16"], choices=["32", "bf16"])
    args = parser.parse_args()
    peaks = {p: matmul_gflops(torch.float32 if p == "32" else torch.bfloat16)
             for p in args.precision}
    print(f"AnoGAN latent search, {torch.get_num_threads()} threads; matmul 2048^2: "
          + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items()) + "\n")
    print("| size | precision | channels | batch | steps | GFLOP / slice | s / slice | GFLOP/s | "
          "floor at matmul speed (s / slice) | search loss first -> last |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for size in args.sizes:
        gflop = search_gflop(size)
        for precision in args.precision:
            row = measure(size, args.batch, args.slices, precision)
            row.update(gflop_per_slice=gflop, gflops=gflop / row["s_per_slice"],
                       floor_s_per_slice=gflop / peaks[precision])
            rows.append(row)
            print(f"| {size} | {precision} | {row['channels']} | {row['batch']} | {row['steps']} | "
                  f"{gflop:.0f} | {row['s_per_slice']:.3f} | {row['gflops']:.0f} | "
                  f"{row['floor_s_per_slice']:.2f} | {row['loss_first']:.3e} -> "
                  f"{row['loss_last']:.3e} |")
    print("\n" + json.dumps({"benchmark": "anogan_search", **run_record(vars(args)),
                             "matmul_gflops": peaks,
                             "results": rows}))


if __name__ == "__main__":
    main()

"""Slice inference speed (reconstruct + residual) against this CPU's own limit, side by side.

    python benchmarks/inference.py [--size 256] [--width 64] [--max-width 256] [--slices 64]

The model is AnoVAEGAN's generator at the paper's 256 x 256 and channels (64..256), random
weights (speed does not depend on them). The baseline is the plain eager fp32 forward
(`torch.no_grad`, default memory layout, batch 8); each lever is added on top of it (`brainuad
detect` uses channels-last, folded batch norm, batch 32, and bf16 with `--precision bf16`). The
ceiling is a 2048 x 2048 matmul in fp32 and bf16 measured in the same run. Prints a table and one
JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable

import torch
from run_record import run_record  # benchmarks/run_record.py
from torch.utils.flop_counter import FlopCounterMode

from brainuad.config import from_dict
from brainuad.models.common.blocks import fuse_batchnorm
from brainuad.models.registry import build_network, model_defaults

PAPER_GPU_S = 0.0154  # the paper's AnoVAEGAN, per slice, on a GPU


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 20) -> float:
    """GFLOP/s of an n x n matmul on this CPU: the ceiling the benchmarks report ratios to."""
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        # Without AVX-512 bf16 or AMX, bf16 is emulated: 20 matmuls took over 10 minutes.
        sys.exit("this CPU computes bf16 only by emulation (no AVX-512 bf16, no AMX): its bf16 "
                 "figures would mean nothing here (anogan_search.py: --precision 32)")
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def flops_per_slice(model: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.reconstruct(torch.rand(1, 1, size, size))
    return float(counter.get_total_flops())


def seconds_per_slice(run: Callable[[torch.Tensor], torch.Tensor], slices: torch.Tensor,
                      batch: int, repeats: int = 2) -> float:
    """Best of `repeats` passes over all slices (after one warm-up pass)."""
    best = float("inf")
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        for i in range(0, len(slices), batch):
            x = slices[i:i + batch]
            (x - run(x)).abs()  # the residual: what detect scores
        if attempt:
            best = min(best, (time.perf_counter() - start) / len(slices))
    return best


def levers(model: torch.nn.Module, compile_: bool) -> list[tuple[str, Callable, int]]:
    """(name, function of a batch, batch size); each adds one lever to the one before. The
    channels-last modes get their own channels-last copy of the weights."""
    cl = torch.channels_last
    layout = copy.deepcopy(model).to(memory_format=cl)
    fast = fuse_batchnorm(model).to(memory_format=cl)

    def eager(x):
        with torch.no_grad():
            return model.reconstruct(x)

    def inference(x):
        with torch.inference_mode():
            return model.reconstruct(x)

    def channels_last(x):
        with torch.inference_mode():
            return layout.reconstruct(x.contiguous(memory_format=cl))

    def folded(x):
        with torch.inference_mode():
            return fast.reconstruct(x.contiguous(memory_format=cl))

    def bf16(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return fast.reconstruct(x.contiguous(memory_format=cl)).float()

    modes = [("eager fp32 (baseline)", eager, 8), ("inference_mode", inference, 8),
             ("+ channels-last", channels_last, 8), ("+ batch 32", channels_last, 32),
             ("+ batch norm folded", folded, 32), ("+ bf16 autocast (brainuad --precision bf16)",
                                                   bf16, 32)]
    if compile_:
        compiled = torch.compile(fast.reconstruct)

        def compiled_fp32(x):
            with torch.inference_mode():
                return compiled(x.contiguous(memory_format=cl))

        def compiled_bf16(x):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled(x.contiguous(memory_format=cl)).float()

        modes += [("channels-last, batch 32, folded, torch.compile", compiled_fp32, 32),
                  ("+ bf16 autocast, torch.compile", compiled_bf16, 32)]
    return modes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--max-width", type=int, default=256)
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true", help="Skip torch.compile.")
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = from_dict({"model": {**model_defaults("anovaegan"), "image_size": args.size,
                               "width": args.width, "max_width": args.max_width}})
    model = build_network(cfg.model).eval()
    flops = flops_per_slice(model, args.size)
    slices = torch.rand(args.slices, 1, args.size, args.size)
    peak32, peak16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"AnoVAEGAN reconstruct + residual, {args.size} px, channels {args.width}.."
          f"{args.max_width}: {flops / 1e9:.2f} GFLOP per slice; {torch.get_num_threads()} "
          f"threads; matmul 2048^2: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s\n")
    print("| mode | batch | ms / slice | GFLOP/s | x baseline | % of bf16 matmul |")
    print("| --- | --- | --- | --- | --- | --- |")
    result = {"benchmark": "inference", "size": args.size, "gflop_per_slice": flops / 1e9,
              "matmul_fp32_gflops": peak32, "matmul_bf16_gflops": peak16, "modes": {}}
    baseline = None
    for name, run, batch in levers(model, not args.no_compile):
        seconds = seconds_per_slice(run, slices, batch)
        baseline = baseline or seconds
        rate = flops / seconds / 1e9
        print(f"| {name} | {batch} | {seconds * 1000:.1f} | {rate:.0f} | "
              f"{baseline / seconds:.2f} | {100 * rate / peak16:.0f} |")
        result["modes"][name] = {"ms_per_slice": seconds * 1000, "gflops": rate,
                                 "speedup": baseline / seconds}
    need = flops / PAPER_GPU_S / 1e9
    print(f"\nFloor at the bf16 matmul's speed: {flops / peak16 / 1e6:.1f} ms per slice. The "
          f"paper's GPU time, {PAPER_GPU_S * 1000:.1f} ms per slice, needs {need:.0f} GFLOP/s, "
          f"{need / peak16:.1f}x that matmul.")
    result.update(floor_ms_per_slice=flops / peak16 / 1e6, paper_needs_gflops=need)
    print("\n" + json.dumps({**run_record(vars(args)), **result}))


if __name__ == "__main__":
    main()

"""Training-step speed on this CPU: fp32 vs channels-last vs bf16 autocast.

    python benchmarks/train_step.py [--model anovaegan] [--size 128] [--width 16]
                                    [--max-width 128] [--steps 10]

One step = the generator update (L1 + KL + adversarial) then the discriminator update, batch 8,
as `brainuad train` does (sVAE: L1 + KL only). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from run_record import run_record  # benchmarks/run_record.py

from brainuad.config import from_dict
from brainuad.models.common import losses
from brainuad.models.common.discriminator import Discriminator
from brainuad.models.registry import build_network, model_defaults

MODES = {"fp32": (False, False), "channels-last": (True, False), "bf16": (False, True),
         "channels-last + bf16": (True, True)}


def step_seconds(model: str, size: int, width: int, max_width: int, steps: int,
                 channels_last: bool, bf16: bool, batch: int = 8) -> float:
    torch.manual_seed(0)
    cfg = from_dict({"model": {**model_defaults(model), "image_size": size,
                               "width": width, "max_width": max_width}})
    layout = torch.channels_last if channels_last else torch.contiguous_format
    generator = build_network(cfg.model).to(memory_format=layout)
    m = cfg.model
    discriminator = Discriminator(m.channels, m.image_size) if m.adversarial else None
    opt_g = torch.optim.Adam(generator.parameters(), 1e-3)
    if discriminator is not None:
        discriminator = discriminator.to(memory_format=layout)
        opt_d = torch.optim.Adam(discriminator.parameters(), 1e-4)
    x = torch.rand(batch, 1, size, size).contiguous(memory_format=layout)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            x_hat, mu, logvar, _ = generator(x)
            loss = losses.l1(x, x_hat.float())
            if logvar is not None:
                loss = loss + 0.01 * losses.kl_normal(mu.float(), logvar.float())
            if discriminator is not None:
                loss = loss + 0.01 * losses.generator_adversarial(discriminator(x_hat).float())
        opt_g.zero_grad()
        loss.backward()
        opt_g.step()
        if discriminator is None:
            return
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            d_loss = losses.discriminator(discriminator(x).float(),
                                          discriminator(x_hat.detach()).float())
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()

    for _ in range(2):  # warm-up: oneDNN builds its kernels on first use
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="anovaegan",
                        help="a model name, e.g. anovaegan, svae, denoising")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--max-width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.model} training step, {args.size} px, channels {args.width}..{args.max_width},"
          f" batch 8, {torch.get_num_threads()} threads\n")
    print("| mode | ms / step | slices / s |\n| --- | --- | --- |")
    result = {"benchmark": "train_step", "model": args.model, "size": args.size,
              "width": args.width, "max_width": args.max_width}
    for name, (channels_last, bf16) in MODES.items():
        seconds = step_seconds(args.model, args.size, args.width, args.max_width, args.steps,
                               channels_last, bf16)
        print(f"| {name} | {seconds * 1000:.0f} | {8 / seconds:.1f} |")
        result[name] = {"ms_per_step": seconds * 1000, "slices_per_s": 8 / seconds}
    print("\n" + json.dumps({**run_record(vars(args)), **result}))


if __name__ == "__main__":
    main()

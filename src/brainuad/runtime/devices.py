"""Where networks run, and in which precision."""

from __future__ import annotations

from typing import TYPE_CHECKING

from brainuad.errors import BrainUADError

if TYPE_CHECKING:
    import torch

#: Precisions detection may run in; a network's thresholds are calibrated for each.
PRECISIONS = ("32", "bf16")


def device_for(accelerator: str) -> torch.device:
    """`cpu`, `gpu` (the first CUDA device; an error where there is none) or `auto` (a GPU
    where torch sees one, else the CPU)."""
    if accelerator not in ("auto", "cpu", "gpu"):
        raise BrainUADError(f"accelerator {accelerator!r}: choose auto, cpu or gpu")
    import torch  # only where a network runs (kinds without one never import it)

    if accelerator == "gpu" and not torch.cuda.is_available():
        raise BrainUADError("accelerator gpu: torch sees no CUDA GPU here (use cpu or auto)")
    return torch.device("cuda" if accelerator != "cpu" and torch.cuda.is_available() else "cpu")


def native_precision(device: torch.device) -> str:
    """bf16 where the device computes it natively (a CPU with AVX-512 bf16 or AMX, a GPU that
    supports it), else 32."""
    import torch

    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "32"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "32"

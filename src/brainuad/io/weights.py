"""Weights files read without ever unpickling code (`torch.load(weights_only=True)`)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

from brainuad.errors import BrainUADError


def safe_torch_load(path: Path) -> Any:
    """torch.load that never unpickles arbitrary objects: refuse anything but tensors/containers."""
    if not path.is_file():
        raise BrainUADError(f"{path}: file not found")
    import torch  # here, not at import: a model without weights never needs it

    try:
        with warnings.catch_warnings():  # torch's remarks on pickle protocols are not for users
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise BrainUADError(f"{path}: refused to load: it holds Python objects other than "
                            "tensors and plain values, which could run code when loaded") from err
    except (RuntimeError, EOFError, AttributeError, ValueError) as err:
        raise BrainUADError(f"{path}: refused to load: not a plain weights file, or damaged "
                            f"({str(err).splitlines()[0][:160]})") from err

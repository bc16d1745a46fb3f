"""`brainuad` command line: the application (`app.py`) with the user's commands first
(`use.py`), then the pipeline's stages (`stages.py`)."""

import gc
import sys

# isort: off
from brainuad.commands import use  # noqa: F401  (registers the user's commands: listed first)
from brainuad.commands import stages  # noqa: F401  (then the pipeline's stages)
# isort: on
from brainuad.commands.app import app
from brainuad.runtime.clock import stamp

#: the commands after which the objects left are frozen, not collected, at exit
FREEZE_AT_EXIT = {"segment", "compare", "bids"}


def main() -> None:
    try:
        app()
    finally:
        # The interpreter's last garbage collection walks every object that torch and the
        # other libraries made at import: 0.4-0.5 s of a `segment` run's exit on a 2-core
        # machine (docs/speed.md). Frozen, they are freed without that walk: after the
        # commands measured so, which leave no worker processes or data loaders to clean up.
        if FREEZE_AT_EXIT & set(sys.argv[1:]):
            gc.freeze()
        stamp("exit")


if __name__ == "__main__":
    main()

"""`brainuad` command line: the application (`app.py`) with the user's commands first
(`use.py`), then the pipeline's stages (`stages.py`)."""

# isort: off
from brainuad.commands import use  # noqa: F401  (registers the user's commands: listed first)
from brainuad.commands import stages  # noqa: F401  (then the pipeline's stages)
# isort: on
from brainuad.commands.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()

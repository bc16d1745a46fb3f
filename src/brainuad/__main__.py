"""`python -m brainuad ...`: what `torchrun -m brainuad train ...` starts in each process."""

from brainuad.commands.cli import main

main()

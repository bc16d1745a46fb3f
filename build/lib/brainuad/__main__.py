"""`python -m brainuad ...`: what `torchrun -m brainuad train ...` starts in each process."""

from brainuad.cli import main

main()

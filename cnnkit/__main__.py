"""``python -m cnnkit`` (what ``torchrun -m cnnkit`` runs)."""

from cnnkit.cli import main

main()

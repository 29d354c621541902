"""``python -m cnnkit`` (what ``torchrun -m cnnkit`` runs)."""

from cnnkit.commands import main

main()

"""``python -m dzcli`` runs the dzsr command line (also what ``torchrun -m dzcli`` uses)."""

from dzcli.cli import main

main()

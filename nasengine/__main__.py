"""``python -m nasengine`` (and ``torchrun -m nasengine``) runs the command line."""

from nasengine.cli import main

main()

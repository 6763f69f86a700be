"""``python -m fusedense``: the ``fusedense`` command (:mod:`fusedense.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m evo.cli COMMAND ...``: the ``evovae`` command."""
import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m evo.logs summarize|trace ...``: the ``evovae logs`` command."""
import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())

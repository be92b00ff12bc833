"""``python -m evo.logs summarize|trace ...``: the ``evovae logs`` command (evo/logs/command.py)."""
import sys

from .command import main

if __name__ == "__main__":
    sys.exit(main())

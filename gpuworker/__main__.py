"""``python -m gpuworker --connect tcp://HEAD:5557``: run one worker (the same command as ``evovae worker``)."""
import sys

from gpuworker.cli import main

if __name__ == "__main__":
    sys.exit(main())

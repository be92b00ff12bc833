"""``python -m gpuworker --connect tcp://HEAD:5557``: run one worker."""
import sys

from evo.cli.worker import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m evo.logs summarize|trace ...``: the ``evovae logs`` command (evo/cli/logs.py).

The command is imported only when run, so walking this package loads the standard library only."""
import sys


def main() -> int:
    from evo.cli.logs import main as logs_main

    return logs_main()


if __name__ == "__main__":
    sys.exit(main())

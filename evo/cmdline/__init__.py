"""What every command of both processes is made of - the head's ``evovae`` commands (evo/cli) and the worker's
(``evovae worker``, ``python -m gpuworker``: gpuworker/cli.py) - so neither imports the other's command line:

* :mod:`evo.cmdline.validate`   checks of option values (``type=`` functions), one-line argparse errors
* :mod:`evo.cmdline.settings`   ``--config`` TOML files: a table of option defaults per command
* :mod:`evo.cmdline.signals`    SIGINT and SIGTERM as a stop event
* :mod:`evo.cmdline.log_setup`  the structlog set-up of every evovae process

It may import the standard library, structlog, the pure engine and transport (the protocol's id rule); never
the head, the adapters, gpuworker, torch or ZeroMQ (docs/design.md, "Layout").
"""

"""The ``evovae`` command line: the one place that wires engine, head, transport and gpuworker together."""
from .app import main

__all__ = ["main"]

"""The ``evovae`` command line: the one place that wires engine, head, transport and gpuworker together."""
from ..adapters import register_all
from .app import main

__all__ = ["main"]

register_all()  # make_strategy builds TPE (evo.adapters) by name; Optuna is loaded only when a TPE search is made

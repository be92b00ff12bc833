"""Strategies built on outside libraries (Optuna), behind the same ask/tell contract as the pure engine.
They may import the pure engine and those libraries, never transport, ZeroMQ, torch, the head or the
composition layer (docs/design.md, "Layout").

The pure engine never imports this package: :func:`register_all` hands its factories to
:func:`evo.strategies.register_strategy`, and the composition layer (evo.cli, evo.experiments) calls it.
Registering imports no outside library: Optuna is loaded when a TPE search is made.
"""
from __future__ import annotations

from ..space import SearchSpace
from ..strategies import StrategyOptions, register_strategy
from ..strategy import Strategy

__all__ = ["register_all"]


def _tpe(options: StrategyOptions, space: SearchSpace) -> Strategy:
    from .tpe import make_tpe  # Optuna, only when a TPE search is made

    return make_tpe(options, space)


def register_all() -> None:
    """Register every strategy of this package by name (``tpe``) with the engine's ``make_strategy``; idempotent."""
    register_strategy("tpe", _tpe)

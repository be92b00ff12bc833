"""Experiments (the paper's, and comparisons of strategies): composition like the CLI, so they may use the head,
transport and gpuworker. Every search in them goes through the head's Runner and journal."""
from ..adapters import register_all

register_all()  # the compared strategies include TPE (evo.adapters): make_strategy builds it by name

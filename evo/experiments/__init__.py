"""Experiments (the paper's, and comparisons of strategies): composition like the CLI, so they may use the head,
transport and gpuworker. Every search in them goes through the head's Runner and journal."""

"""Crossover: a child takes each gene (encoder, latent, decoder) from one of two parents."""
from __future__ import annotations

import numpy as np

from .genotype import Genotype

__all__ = ["crossover"]


def crossover(a: Genotype, b: Genotype, rng: np.random.Generator) -> Genotype:
    """Uniform crossover over the three genes.

    Each network is kept whole (a network's layers were selected together), so
    a child is always a valid genotype of the space its parents lie in.
    """
    take_a = rng.random(3) < 0.5
    return Genotype(
        a.encoder if take_a[0] else b.encoder,
        a.latent if take_a[1] else b.latent,
        a.decoder if take_a[2] else b.decoder,
    )

"""Variation: mutation (append a layer or modify one, per network; the latent size may change too),
uniform crossover over the three genes, and breeding one offspring from a population. Every engine breeds
through this module."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .genotype import Genotype
from .space import SearchSpace

__all__ = ["MutationRates", "breed", "crossover", "mutate", "mutate_latent", "mutate_network"]


@dataclass(frozen=True)
class MutationRates:
    """Probabilities of one mutation.

    Each of the encoder and decoder mutates with probability ``network``, the
    latent size with probability ``latent``; when nothing was drawn, one of the
    three (uniformly) mutates. A mutant differs from its parent whenever the
    space allows any change: if the drawn genes could not move, the latent,
    then the encoder, then the decoder are tried in turn.
    A mutating network appends a layer with probability ``append`` (modify a
    random layer otherwise); at ``max_layers`` an append falls back to modify.
    """

    network: float = 0.5
    latent: float = 0.2
    append: float = 0.5

    def __post_init__(self) -> None:
        for name in ("network", "latent", "append"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"mutation rate {name}={value} is not a probability in [0, 1]")


def _other(choices: tuple[int, ...], current: int, rng: np.random.Generator) -> int:
    options = [c for c in choices if c != current] or [current]
    return int(options[int(rng.integers(len(options)))])


def mutate_network(
    widths: tuple[int, ...], space: SearchSpace, rng: np.random.Generator, append_rate: float = 0.5
) -> tuple[int, ...]:
    """Append a random-width layer, or give one random layer a new width."""
    if len(widths) < space.max_layers and rng.random() < append_rate:
        return widths + (space.random_width(rng),)
    index = int(rng.integers(len(widths)))
    changed = list(widths)
    changed[index] = _other(space.widths, widths[index], rng)
    return tuple(changed)


def mutate_latent(latent: int, space: SearchSpace, rng: np.random.Generator) -> int:
    return _other(space.latents, latent, rng)


def mutate(
    genotype: Genotype, space: SearchSpace, rng: np.random.Generator, rates: MutationRates = MutationRates()
) -> Genotype:
    """A new genotype that differs from ``genotype`` by one mutation step."""
    targets = [rng.random() < rates.network, rng.random() < rates.latent, rng.random() < rates.network]
    if not any(targets):
        targets[int(rng.integers(3))] = True
    encoder, latent, decoder = genotype.encoder, genotype.latent, genotype.decoder
    if targets[0]:
        encoder = mutate_network(encoder, space, rng, rates.append)
    if targets[1]:
        latent = mutate_latent(latent, space, rng)
    if targets[2]:
        decoder = mutate_network(decoder, space, rng, rates.append)
    child = Genotype(encoder, latent, decoder)
    if child == genotype:  # the drawn genes had nowhere to go (a one-width space at full depth)
        for fallback in (
            lambda: Genotype(genotype.encoder, mutate_latent(genotype.latent, space, rng), genotype.decoder),
            lambda: Genotype(mutate_network(genotype.encoder, space, rng, 1.0), genotype.latent, genotype.decoder),
            lambda: Genotype(genotype.encoder, genotype.latent, mutate_network(genotype.decoder, space, rng, 1.0)),
        ):
            child = fallback()
            if child != genotype:
                break
    return child


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


def breed(parents: Sequence[Genotype], space: SearchSpace, rng: np.random.Generator, crossover_rate: float,
          mutation_rate: float, mutation: MutationRates, parent_set: frozenset[Genotype] | None = None) -> Genotype:
    """One offspring: a uniformly drawn parent, crossed with a second, distinct one with probability
    ``crossover_rate``, then mutated with probability ``mutation_rate`` (always when it equals a parent).
    ``parents`` are distinct; pass ``parent_set`` when breeding many children from the same parents."""
    index = int(rng.integers(len(parents)))
    first = child = parents[index]
    if len(parents) > 1 and rng.random() < crossover_rate:
        other = int(rng.integers(len(parents) - 1))  # uniform over the parents but the first
        second = parents[other + (other >= index)]
        child = crossover(first, second, rng)
    if child in (parent_set if parent_set is not None else parents) or rng.random() < mutation_rate:
        child = mutate(child, space, rng, mutation)
    return child

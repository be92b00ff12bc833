"""Mutation: append a layer or modify one, per network; the latent size may change too."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .genotype import Genotype
from .space import SearchSpace

__all__ = ["MutationRates", "mutate", "mutate_network", "mutate_latent"]


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

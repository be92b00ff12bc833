"""The search space: how deep and how wide the networks may be."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .genotype import Genotype, GenotypeError

__all__ = ["SearchSpace"]


@dataclass(frozen=True)
class SearchSpace:
    """Allowed genotypes. Defaults are the paper's: 1-5 hidden layers per
    network, widths 50..1000 in steps of 50, latent 10..100 in steps of 10."""

    min_layers: int = 1
    max_layers: int = 5
    width_min: int = 50
    width_max: int = 1000
    width_step: int = 50
    latent_min: int = 10
    latent_max: int = 100
    latent_step: int = 10

    def __post_init__(self) -> None:
        for name in ("min_layers", "max_layers", "width_min", "width_max", "width_step", "latent_min",
                     "latent_max", "latent_step"):
            value = getattr(self, name)
            if type(value) is not int:
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if not 1 <= self.min_layers <= self.max_layers:
            raise ValueError(f"need 1 <= min_layers <= max_layers, got {self.min_layers}, {self.max_layers}")
        for lo, hi, step, what in (
            (self.width_min, self.width_max, self.width_step, "width"),
            (self.latent_min, self.latent_max, self.latent_step, "latent"),
        ):
            if lo < 1 or step < 1 or hi < lo or (hi - lo) % step:
                raise ValueError(f"{what} range {lo}..{hi} step {step} is not a valid grid of positive integers")

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(range(self.width_min, self.width_max + 1, self.width_step))

    @property
    def latents(self) -> tuple[int, ...]:
        return tuple(range(self.latent_min, self.latent_max + 1, self.latent_step))

    def random_width(self, rng: np.random.Generator) -> int:
        # the same draw as rng.choice(self.widths), at a sixth of its cost
        choices = (self.width_max - self.width_min) // self.width_step + 1
        return self.width_min + self.width_step * int(rng.integers(choices))

    def random_latent(self, rng: np.random.Generator) -> int:
        choices = (self.latent_max - self.latent_min) // self.latent_step + 1
        return self.latent_min + self.latent_step * int(rng.integers(choices))

    def random_network(self, rng: np.random.Generator) -> tuple[int, ...]:
        depth = int(rng.integers(self.min_layers, self.max_layers + 1))
        return tuple(self.random_width(rng) for _ in range(depth))

    def sample(self, rng: np.random.Generator) -> Genotype:
        """A uniformly random genotype: depth, then each width, then latent."""
        encoder = self.random_network(rng)
        latent = self.random_latent(rng)
        decoder = self.random_network(rng)
        return Genotype(encoder, latent, decoder)

    def problems(self, genotype: Genotype) -> list[str]:
        """Why ``genotype`` lies outside this space (empty when it lies inside)."""
        found = []
        widths = set(self.widths)
        for name, net in (("encoder", genotype.encoder), ("decoder", genotype.decoder)):
            if not self.min_layers <= len(net) <= self.max_layers:
                found.append(f"{name} has {len(net)} layers, allowed {self.min_layers}..{self.max_layers}")
            bad = [w for w in net if w not in widths]
            if bad:
                found.append(
                    f"{name} widths {bad} not in {self.width_min}..{self.width_max} step {self.width_step}"
                )
        if genotype.latent not in set(self.latents):
            found.append(
                f"latent {genotype.latent} not in {self.latent_min}..{self.latent_max} step {self.latent_step}"
            )
        return found

    def contains(self, genotype: Genotype) -> bool:
        return not self.problems(genotype)

    def validate(self, genotype: Genotype) -> Genotype:
        problems = self.problems(genotype)
        if problems:
            raise GenotypeError(f"genotype {genotype} is outside the search space: " + "; ".join(problems))
        return genotype

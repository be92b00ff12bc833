"""The search space: how deep and how wide the networks may be, and :func:`space_for`, the space a search of
given options on data of a given input dimension uses (the latent capped below the input dimension)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .genotype import Genotype, GenotypeError

__all__ = ["SPACE_FIELDS", "SearchSpace", "space_for"]

#: the fields of a search space, in the order the options are shown
SPACE_FIELDS = ("min_layers", "max_layers", "width_min", "width_max", "width_step", "latent_min", "latent_max",
                "latent_step")


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


def _check_grid(values: Mapping[str, int], chosen: Mapping[str, int], what: str, name: Callable[[str], str]) -> None:
    lo, hi, step = values[f"{what}_min"], values[f"{what}_max"], values[f"{what}_step"]
    if lo > hi:
        shown = [f"{name(f'{what}_{end}')} {value}{'' if f'{what}_{end}' in chosen else ' (the default)'}"
                 for end, value in (("min", lo), ("max", hi))]
        raise ValueError(f"{shown[0]} is above {shown[1]}; give a smaller {name(f'{what}_min')} or a larger "
                         f"{name(f'{what}_max')}")
    if (hi - lo) % step:
        below = lo + (hi - lo) // step * step
        raise ValueError(f"{name(f'{what}_step')} {step} does not divide the range {lo}..{hi} of {what}s ({hi} is "
                         f"not {lo} plus a multiple of {step}); give {name(f'{what}_max')} {below} or "
                         f"{below + step}, or another step")


def space_for(given: Mapping[str, int | None], input_dim: int | None = None,
              name: Callable[[str], str] = str) -> tuple[SearchSpace, str]:
    """The search space of the values in ``given`` (a field of :data:`SPACE_FIELDS` missing or None: the
    paper's default) for data of ``input_dim`` features (None: not known yet), and a note ("" for none).
    A maximum not given is the largest value of its grid up to the default (``width_step=30``: widths
    50, 80, ..., 980).

    The latent is capped below the input dimension when ``latent_max`` is not given: ``latent_max`` becomes
    the largest value of the latent grid (``latent_min`` + k * ``latent_step``, at most 100) below
    ``input_dim``; with the default grid (10..100 step 10) and fewer than two of its values below
    ``input_dim`` (fewer than 21 features), the grid becomes 1..input_dim - 1 step 1. So a 4-column table
    searches latents 1..3, a 30-column one 10 and 20, images of 784 pixels the paper's 10..100. The note
    says what the cap did. A combination that makes no grid (a minimum above its maximum, a step that does
    not divide the range, more ``min_layers`` than ``max_layers``) is a ValueError of one line naming the
    values as ``name`` calls them (the command line: ``--width-step``)."""
    unknown = sorted(set(given) - set(SPACE_FIELDS))
    if unknown:
        raise ValueError(f"unknown search space fields {unknown}; known: {', '.join(SPACE_FIELDS)}")
    default = SearchSpace()
    chosen = {field: value for field, value in given.items() if value is not None}
    values = {field: chosen.get(field, getattr(default, field)) for field in SPACE_FIELDS}
    for what in ("width", "latent"):  # a maximum not given: the largest value of the grid up to the default
        lo, hi, step = (values[f"{what}_{end}"] for end in ("min", "max", "step"))
        if f"{what}_max" not in chosen and lo <= hi:
            values[f"{what}_max"] = lo + (hi - lo) // step * step
    note = ""
    if input_dim is not None and "latent_max" not in chosen and values["latent_min"] <= values["latent_max"]:
        lo, step = values["latent_min"], values["latent_step"]
        grid = range(lo, values["latent_max"] + 1, step)
        below = [latent for latent in grid if latent < input_dim]
        if len(below) < len(grid):
            own_grid = "latent_min" in chosen or "latent_step" in chosen
            if len(below) >= 2 or (below and own_grid):
                values["latent_max"] = below[-1]
            elif not own_grid:
                values.update(latent_min=1, latent_max=max(1, input_dim - 1), latent_step=1)
            else:
                given_min = "" if "latent_min" in chosen else " (the default)"
                raise ValueError(f"{name('latent_min')} {lo}{given_min} is not below the input dimension {input_dim} "
                                 f"(latents are kept smaller than the data unless {name('latent_max')} is given); "
                                 f"give a smaller {name('latent_min')}, or {name('latent_max')} to allow latents "
                                 "that large")
            note = (f"the data has {input_dim} features: latent sizes {values['latent_min']}..{values['latent_max']} "
                    f"step {values['latent_step']}, kept below the input dimension (give {name('latent_max')} to "
                    "choose)")
    if values["min_layers"] > values["max_layers"]:
        raise ValueError(f"{name('min_layers')} {values['min_layers']} is above {name('max_layers')} "
                         f"{values['max_layers']}; give at most as many as the maximum")
    for what in ("width", "latent"):
        _check_grid(values, chosen, what, name)
    return SearchSpace(**values), note

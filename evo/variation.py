"""Variation: mutation, uniform crossover over the three genes, and breeding one offspring from a population.
Every engine breeds through this module.

Two mutation operator sets, chosen by ``MutationRates.operators``:

- ``"paper"`` (the default, Hajewski & Oliveira 2020): a mutating network appends a random-width layer or
  gives one random layer a new, uniformly drawn width; the latent size is redrawn uniformly. Depth never
  falls along a lineage.
- ``"local"`` (small steps, as regularized evolution uses them): a mutating network removes a layer, inserts
  one, or moves one width by a grid step or two (the paper's move stays, at a small probability); the latent
  size moves by a grid step or two.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .genotype import Genotype
from .space import SearchSpace

__all__ = ["OPERATOR_SETS", "LocalMoves", "MutationRates", "breed", "crossover", "insert_layer", "mutate",
           "mutate_latent", "mutate_latent_local", "mutate_network", "mutate_network_local", "remove_layer",
           "step_latent", "step_width"]

#: the mutation operator sets :attr:`MutationRates.operators` may name
OPERATOR_SETS = ("paper", "local")


@dataclass(frozen=True)
class LocalMoves:
    """The ``"local"`` operator set: how a mutating network or latent size moves.

    A mutating network makes one move, drawn with these weights from the moves it can make (the weights of
    the others are dropped and the rest renormalised):

    - ``remove``: delete a uniformly drawn layer (only above ``min_layers``);
    - ``insert``: a new layer at a uniformly drawn position (only below ``max_layers``), its width copied
      from a neighbour (either one, uniformly, where it has two) with probability ``copy``, drawn uniformly
      from the grid otherwise;
    - ``step``: move one uniformly drawn layer's width by 1..``max_step`` grid steps, up or down (only where
      the grid has two widths or more);
    - ``paper``: the paper's move (:func:`mutate_network` with ``MutationRates.append``).

    A mutating latent size moves by 1..``max_step`` grid steps, or with probability ``latent_redraw`` is
    redrawn uniformly (the paper's move). A step's size and direction are uniform over the ``2 * max_step``
    choices; a step past the end of the grid stops at the end, and one that would stay where it is (it
    started at that end) goes the other way instead. Every move changes what it moves.
    """

    remove: float = 0.25
    insert: float = 0.25
    step: float = 0.4
    paper: float = 0.1
    copy: float = 0.5
    max_step: int = 2
    latent_redraw: float = 0.1

    def __post_init__(self) -> None:
        for name in ("remove", "insert", "step", "paper"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
                raise ValueError(f"local move weight {name}={value} is not a finite number >= 0")
        if self.remove + self.insert + self.step + self.paper <= 0.0:
            raise ValueError("local move weights remove, insert, step and paper are all 0: no move is left")
        for name in ("copy", "latent_redraw"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"local move rate {name}={value} is not a probability in [0, 1]")
        if type(self.max_step) is not int or self.max_step < 1:
            raise ValueError(f"local move max_step must be an integer >= 1, got {self.max_step!r}")


@dataclass(frozen=True)
class MutationRates:
    """Probabilities of one mutation, and the operator set it draws from.

    Each of the encoder and decoder mutates with probability ``network``, the
    latent size with probability ``latent``; when nothing was drawn, one of the
    three (uniformly) mutates. A mutant differs from its parent whenever the
    space allows any change: if the drawn genes could not move, the latent,
    then the encoder, then the decoder are tried in turn.
    With ``operators="paper"`` (the default) a mutating network appends a layer
    with probability ``append`` (modify a random layer otherwise); at
    ``max_layers`` an append falls back to modify. With ``operators="local"`` a
    mutating network and latent move as ``local`` (:class:`LocalMoves`) says;
    its ``paper`` move appends with probability ``append``.
    """

    network: float = 0.5
    latent: float = 0.2
    append: float = 0.5
    operators: str = "paper"
    local: LocalMoves = LocalMoves()

    def __post_init__(self) -> None:
        for name in ("network", "latent", "append"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"mutation rate {name}={value} is not a probability in [0, 1]")
        if self.operators not in OPERATOR_SETS:
            raise ValueError(f"mutation operators {self.operators!r} is not one of {', '.join(OPERATOR_SETS)}")
        if not isinstance(self.local, LocalMoves):
            raise ValueError(f"mutation local moves must be a LocalMoves, got {type(self.local).__name__}")


# -- the paper's operators ----------------------------------------------------------------------------

def _other(choices: tuple[int, ...], current: int, rng: np.random.Generator) -> int:
    options = [c for c in choices if c != current] or [current]
    return int(options[int(rng.integers(len(options)))])


def mutate_network(
    widths: tuple[int, ...], space: SearchSpace, rng: np.random.Generator, append_rate: float = 0.5
) -> tuple[int, ...]:
    """Append a random-width layer, or give one random layer a new width."""
    if len(widths) < space.max_layers and rng.random() < append_rate:
        return (*widths, space.random_width(rng))
    index = int(rng.integers(len(widths)))
    changed = list(widths)
    changed[index] = _other(space.widths, widths[index], rng)
    return tuple(changed)


def mutate_latent(latent: int, space: SearchSpace, rng: np.random.Generator) -> int:
    return _other(space.latents, latent, rng)


# -- the local operators --------------------------------------------------------------------------------

def _step_on_grid(value: int, grid: tuple[int, ...], rng: np.random.Generator, max_step: int) -> int:
    """``value`` moved by 1..max_step grid points (one draw: size and direction uniform over 2 * max_step
    choices), stopped at the grid's ends; a move that would stay put goes the other way."""
    if len(grid) < 2:
        raise ValueError(f"the grid {grid} has a single value: no step to take")
    if type(max_step) is not int or max_step < 1:
        raise ValueError(f"max_step must be an integer >= 1, got {max_step!r}")
    index = grid.index(value)
    k = int(rng.integers(2 * max_step))
    delta = k - max_step if k < max_step else k - max_step + 1      # -max_step..-1, 1..max_step
    target = min(max(index + delta, 0), len(grid) - 1)
    if target == index:                                             # at that end already: go the other way
        target = min(max(index - delta, 0), len(grid) - 1)
    return int(grid[target])


def remove_layer(widths: tuple[int, ...], space: SearchSpace, rng: np.random.Generator) -> tuple[int, ...]:
    """``widths`` without one uniformly drawn layer. ValueError at ``space.min_layers``."""
    if len(widths) <= space.min_layers:
        raise ValueError(f"cannot remove a layer from {len(widths)}: the space needs >= {space.min_layers}")
    index = int(rng.integers(len(widths)))
    return widths[:index] + widths[index + 1:]


def insert_layer(widths: tuple[int, ...], space: SearchSpace, rng: np.random.Generator,
                 copy: float = 0.5) -> tuple[int, ...]:
    """``widths`` with a new layer at a uniformly drawn position (before the first .. after the last). With
    probability ``copy`` its width is a neighbour's (either one, uniformly, between two layers), otherwise a
    uniform draw from the grid. ValueError at ``space.max_layers``."""
    if len(widths) >= space.max_layers:
        raise ValueError(f"cannot insert a layer into {len(widths)}: the space allows <= {space.max_layers}")
    if not 0.0 <= copy <= 1.0:
        raise ValueError(f"copy={copy} is not a probability in [0, 1]")
    position = int(rng.integers(len(widths) + 1))
    neighbours = widths[max(position - 1, 0):position + 1]
    if neighbours and rng.random() < copy:
        width = neighbours[int(rng.integers(len(neighbours)))]
    else:
        width = space.random_width(rng)
    return (*widths[:position], width, *widths[position:])


def step_width(widths: tuple[int, ...], space: SearchSpace, rng: np.random.Generator,
               max_step: int = 2) -> tuple[int, ...]:
    """One uniformly drawn layer's width moved by 1..``max_step`` grid steps (see :class:`LocalMoves`).
    ValueError when the width grid has a single value."""
    grid = space.widths
    if len(grid) < 2:
        raise ValueError(f"the width grid {grid} has a single value: no step to take")
    index = int(rng.integers(len(widths)))
    return (*widths[:index], _step_on_grid(widths[index], grid, rng, max_step), *widths[index + 1:])


def step_latent(latent: int, space: SearchSpace, rng: np.random.Generator, max_step: int = 2) -> int:
    """The latent size moved by 1..``max_step`` grid steps (see :class:`LocalMoves`). ValueError when the
    latent grid has a single value."""
    return _step_on_grid(latent, space.latents, rng, max_step)


def mutate_network_local(widths: tuple[int, ...], space: SearchSpace, rng: np.random.Generator,
                         moves: LocalMoves = LocalMoves(), append_rate: float = 0.5) -> tuple[int, ...]:
    """One local move of a network (see :class:`LocalMoves`): one uniform draw picks the move among those
    that can change ``widths``, then the move draws what it needs. ``widths`` itself, unchanged and with no
    draw, when no move can change it (a one-width grid with ``min_layers == max_layers``)."""
    depth, grid_size = len(widths), len(space.widths)
    moves_here = (  # (weight, whether it can change widths here, the move)
        (moves.remove, depth > space.min_layers, lambda: remove_layer(widths, space, rng)),
        (moves.insert, depth < space.max_layers, lambda: insert_layer(widths, space, rng, moves.copy)),
        (moves.step, grid_size > 1, lambda: step_width(widths, space, rng, moves.max_step)),
        # the paper's move; on a one-width grid only its append can change anything, so there it appends
        (moves.paper, depth < space.max_layers or grid_size > 1,
         lambda: mutate_network(widths, space, rng, append_rate if grid_size > 1 else 1.0)),
    )
    possible = [(weight, move) for weight, ok, move in moves_here if ok and weight > 0.0]
    if not possible:  # the weighted moves cannot apply here: any move that can, uniformly
        possible = [(1.0, move) for _, ok, move in moves_here if ok]
    if not possible:
        return widths
    point = rng.random() * sum(weight for weight, _ in possible)
    for weight, move in possible:
        if point < weight:
            return move()
        point -= weight
    return possible[-1][1]()  # point == total by rounding


def mutate_latent_local(latent: int, space: SearchSpace, rng: np.random.Generator,
                        moves: LocalMoves = LocalMoves()) -> int:
    """A step of the latent size (see :class:`LocalMoves`), or with probability ``moves.latent_redraw`` the
    paper's uniform redraw. ``latent`` itself, with no draw, when the latent grid has a single value."""
    if len(space.latents) < 2:
        return latent
    if rng.random() < moves.latent_redraw:
        return mutate_latent(latent, space, rng)
    return step_latent(latent, space, rng, moves.max_step)


# -- mutation of a genotype -----------------------------------------------------------------------------

def mutate(
    genotype: Genotype, space: SearchSpace, rng: np.random.Generator, rates: MutationRates = MutationRates()
) -> Genotype:
    """A new genotype that differs from ``genotype`` by one mutation step, drawn from the operator set
    ``rates.operators`` names (the paper's by default)."""
    if rates.operators == "local":
        moves = rates.local

        def network(widths: tuple[int, ...], forced: bool) -> tuple[int, ...]:
            return mutate_network_local(widths, space, rng, moves, rates.append)

        def latent_move(latent: int) -> int:
            return mutate_latent_local(latent, space, rng, moves)
    else:
        def network(widths: tuple[int, ...], forced: bool) -> tuple[int, ...]:
            return mutate_network(widths, space, rng, 1.0 if forced else rates.append)

        def latent_move(latent: int) -> int:
            return mutate_latent(latent, space, rng)

    targets = [rng.random() < rates.network, rng.random() < rates.latent, rng.random() < rates.network]
    if not any(targets):
        targets[int(rng.integers(3))] = True
    encoder, latent, decoder = genotype.encoder, genotype.latent, genotype.decoder
    if targets[0]:
        encoder = network(encoder, False)
    if targets[1]:
        latent = latent_move(latent)
    if targets[2]:
        decoder = network(decoder, False)
    child = Genotype(encoder, latent, decoder)
    if child == genotype:  # the drawn genes had nowhere to go (a one-width space at full depth)
        for fallback in (
            lambda: Genotype(genotype.encoder, latent_move(genotype.latent), genotype.decoder),
            lambda: Genotype(network(genotype.encoder, True), genotype.latent, genotype.decoder),
            lambda: Genotype(genotype.encoder, genotype.latent, network(genotype.decoder, True)),
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
    ``crossover_rate``, then mutated with probability ``mutation_rate`` (always when it equals a parent), with the
    operator set ``mutation.operators`` names (the paper's unless told otherwise).
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

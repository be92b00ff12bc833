"""evo.variation: mutation, crossover and breeding - validity, immutability, determinism, exact draws."""
import numpy as np
import pytest

from evo.genotype import Genotype, parse_genotype
from evo.space import SearchSpace
from evo.variation import (
    OPERATOR_SETS,
    LocalMoves,
    MutationRates,
    breed,
    crossover,
    insert_layer,
    mutate,
    mutate_latent,
    mutate_latent_local,
    mutate_network,
    mutate_network_local,
    remove_layer,
    step_latent,
    step_width,
)

SPACE = SearchSpace()
SEEDS = range(500)


def _changed_genes(before: Genotype, after: Genotype) -> set[str]:
    return {name for name in ("encoder", "latent", "decoder") if getattr(before, name) != getattr(after, name)}


def _positions_changed(before: tuple, after: tuple) -> list[int]:
    return [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if x != y]


# -- mutation -------------------------------------------------------------------------------------------

def test_mutation_over_many_seeds_is_valid_new_and_leaves_the_input_alone():
    kinds = {"append": 0, "modify": 0, "latent": 0}
    for seed in SEEDS:
        parent = SPACE.sample(np.random.default_rng(10_000 + seed))
        text = str(parent)
        child = mutate(parent, SPACE, np.random.default_rng(seed))
        assert str(parent) == text                      # input unchanged
        assert child != parent                          # always a new genotype
        assert SPACE.problems(child) == []              # still inside the space
        changed = _changed_genes(parent, child)
        assert changed
        for name in ("encoder", "decoder"):
            before, after = getattr(parent, name), getattr(child, name)
            assert len(after) <= SPACE.max_layers
            if name not in changed:
                continue
            if len(after) == len(before) + 1:           # append: old layers kept, one added
                assert after[:-1] == before
                kinds["append"] += 1
            else:                                       # modify: exactly one layer has a new width
                assert len(after) == len(before)
                assert len(_positions_changed(before, after)) == 1
                kinds["modify"] += 1
        if "latent" in changed:
            kinds["latent"] += 1
    assert all(count > 20 for count in kinds.values()), kinds


def test_mutation_is_deterministic_per_seed():
    parent = parse_genotype("200,500|20|1000,650,50")
    for seed in range(100):
        assert mutate(parent, SPACE, np.random.default_rng(seed)) == mutate(parent, SPACE, np.random.default_rng(seed))
    assert len({mutate(parent, SPACE, np.random.default_rng(s)) for s in range(100)}) > 50


def test_append_at_max_depth_falls_back_to_modify():
    rates = MutationRates(network=1.0, latent=0.0, append=1.0)
    for seed in SEEDS:
        parent = Genotype(tuple(SPACE.sample(np.random.default_rng(seed)).encoder + (50,) * 5)[:5], 30,
                          (1000, 950, 900, 850, 800))
        assert parent.depth == (5, 5)
        child = mutate(parent, SPACE, np.random.default_rng(seed), rates)
        assert child.depth == (5, 5)                    # never deeper than max_layers
        assert len(_positions_changed(parent.encoder, child.encoder)) == 1
        assert len(_positions_changed(parent.decoder, child.decoder)) == 1
        assert child.latent == parent.latent
        assert SPACE.contains(child)


def test_append_below_max_depth_appends():
    rates = MutationRates(network=1.0, latent=0.0, append=1.0)
    space = SearchSpace(max_layers=3)
    parent = parse_genotype("100,200|40|300")
    for seed in range(200):
        child = mutate(parent, space, np.random.default_rng(seed), rates)
        assert child.depth == (3, 2)
        assert child.encoder[:2] == parent.encoder and child.decoder[:1] == parent.decoder
        assert child.latent == 40
        assert space.contains(child)


def test_modify_only_keeps_depth():
    rates = MutationRates(network=1.0, latent=0.0, append=0.0)
    parent = parse_genotype("100,200|40|300")
    for seed in range(200):
        child = mutate(parent, SPACE, np.random.default_rng(seed), rates)
        assert child.depth == parent.depth
        assert len(_positions_changed(parent.encoder, child.encoder)) == 1
        assert len(_positions_changed(parent.decoder, child.decoder)) == 1


def test_latent_only_mutation_changes_only_the_latent():
    rates = MutationRates(network=0.0, latent=1.0)
    parent = parse_genotype("100,200|40|300")
    latents = set()
    for seed in range(200):
        child = mutate(parent, SPACE, np.random.default_rng(seed), rates)
        assert _changed_genes(parent, child) == {"latent"}
        latents.add(child.latent)
    assert latents == set(SPACE.latents) - {40}


def test_mutation_with_no_rate_still_changes_one_gene():
    rates = MutationRates(network=0.0, latent=0.0, append=0.5)
    parent = parse_genotype("100,200|40|300")
    genes = set()
    for seed in range(200):
        child = mutate(parent, SPACE, np.random.default_rng(seed), rates)
        changed = _changed_genes(parent, child)
        assert len(changed) == 1
        genes |= changed
    assert genes == {"encoder", "latent", "decoder"}


def test_mutate_network_and_mutate_latent():
    rng = np.random.default_rng(5)
    for _ in range(200):
        widths = (50, 1000)
        out = mutate_network(widths, SPACE, rng, append_rate=0.0)
        assert len(out) == 2 and len(_positions_changed(widths, out)) == 1 and set(out) <= set(SPACE.widths)
        out = mutate_network((50,) * 5, SPACE, rng, append_rate=1.0)
        assert len(out) == 5 and out != (50,) * 5
        z = mutate_latent(40, SPACE, rng)
        assert z != 40 and z in SPACE.latents and type(z) is int


@pytest.mark.parametrize("kwargs", [dict(network=-0.1), dict(network=1.1), dict(latent=-1e-9), dict(latent=2.0),
                                    dict(append=-0.5), dict(append=1.0001), dict(network=float("nan"))])
def test_mutation_rates_outside_unit_interval_raise(kwargs):
    with pytest.raises(ValueError) as info:
        MutationRates(**kwargs)
    assert next(iter(kwargs)) in str(info.value)


def test_mutation_rates_at_the_bounds_are_accepted():
    assert MutationRates(network=0.0, latent=1.0, append=0.0).latent == 1.0
    assert MutationRates(network=1.0, latent=0.0, append=1.0).network == 1.0


def test_mutation_exact_values_for_fixed_seeds():
    parent = parse_genotype("200,500|20|1000,650,50")
    rates = MutationRates()
    # (seed, pinned child) - computed once from the code, justified below
    pinned = {
        0: "200,500|20|1000,650,50,200",   # decoder drawn, append
        1: "200,500|20|300,650,50",        # decoder drawn, modify layer 0
        3: "100,500|20|1000,650,50",       # encoder drawn, modify layer 0
    }
    for seed, expected in pinned.items():
        child = mutate(parent, SPACE, np.random.default_rng(seed), rates)
        assert str(child) == expected
        # justification: the first three draws of the generator decide which genes mutate,
        # and the child differs from its parent in exactly those genes
        draws = np.random.default_rng(seed).random(3)
        drawn = {name for name, d, p in zip(("encoder", "latent", "decoder"), draws,
                                            (rates.network, rates.latent, rates.network), strict=True) if d < p}
        assert drawn, seed
        assert _changed_genes(parent, child) == drawn
    assert str(parent) == "200,500|20|1000,650,50"


def test_mutant_differs_even_when_a_network_cannot_change():
    space = SearchSpace(max_layers=1, width_min=50, width_max=50)   # networks are fixed; the latent can change
    parent = Genotype((50,), 10, (50,))
    for seed in range(100):
        assert mutate(parent, space, np.random.default_rng(seed)) != parent


# -- crossover ------------------------------------------------------------------------------------------

def test_crossover_children_take_each_gene_from_a_parent():
    combos = set()
    for seed in SEEDS:
        a = SPACE.sample(np.random.default_rng(2 * seed))
        b = SPACE.sample(np.random.default_rng(2 * seed + 1))
        a_text, b_text = str(a), str(b)
        child = crossover(a, b, np.random.default_rng(seed))
        assert str(a) == a_text and str(b) == b_text     # parents unchanged
        assert child.encoder in (a.encoder, b.encoder)
        assert child.latent in (a.latent, b.latent)
        assert child.decoder in (a.decoder, b.decoder)
        assert SPACE.contains(child)
        if a.encoder != b.encoder and a.latent != b.latent and a.decoder != b.decoder:
            combos.add((child.encoder == a.encoder, child.latent == a.latent, child.decoder == a.decoder))
    assert len(combos) == 8                              # every mix of the two parents occurs


def test_crossover_is_deterministic_per_seed():
    a, b = parse_genotype("850|20|1000"), parse_genotype("200,500|60|1000,650,50")
    for seed in range(100):
        assert crossover(a, b, np.random.default_rng(seed)) == crossover(a, b, np.random.default_rng(seed))


def test_crossover_of_identical_parents_is_that_parent():
    a = parse_genotype("1000|60|700,750")
    for seed in range(20):
        assert crossover(a, parse_genotype("1000|60|700,750"), np.random.default_rng(seed)) == a


def test_crossover_exact_values_for_fixed_seeds():
    a, b = parse_genotype("850|20|1000"), parse_genotype("200,500|60|1000,650,50")
    pinned = {
        0: "200,500|20|1000",            # encoder b, latent a, decoder a
        1: "200,500|60|1000",            # encoder b, latent b, decoder a
        2: "850|20|1000,650,50",         # encoder a, latent a, decoder b
        4: "200,500|60|1000,650,50",     # all from b
    }
    for seed, expected in pinned.items():
        child = crossover(a, b, np.random.default_rng(seed))
        assert str(child) == expected
        # justification: one uniform draw per gene, below 1/2 takes parent a
        take_a = np.random.default_rng(seed).random(3) < 0.5
        assert child.encoder == (a.encoder if take_a[0] else b.encoder)
        assert child.latent == (a.latent if take_a[1] else b.latent)
        assert child.decoder == (a.decoder if take_a[2] else b.decoder)


# -- breeding -------------------------------------------------------------------------------------------

PARENTS = [parse_genotype(t) for t in ("850|20|1000", "200,500|60|1000,650,50", "1000|60|700,750", "50|10|50")]


def _breed(seed, crossover_rate=0.5, mutation_rate=0.8, parents=PARENTS, parent_set=None):
    return breed(parents, SPACE, np.random.default_rng(seed), crossover_rate, mutation_rate, MutationRates(),
                 parent_set)


def test_breeding_draws_exactly_as_documented():
    for seed in range(200):
        rng = np.random.default_rng(seed)            # a parent, a crossover coin, a second parent, a mutation coin
        index = int(rng.integers(4))
        child = PARENTS[index]
        if rng.random() < 0.5:
            other = int(rng.integers(3))
            child = crossover(PARENTS[index], PARENTS[other + (other >= index)], rng)
        if child in PARENTS or rng.random() < 0.8:
            child = mutate(child, SPACE, rng, MutationRates())
        assert _breed(seed) == child


def test_without_crossover_or_mutation_a_child_is_still_never_a_copy_of_a_parent():
    for seed in range(200):
        child = _breed(seed, crossover_rate=0.0, mutation_rate=0.0)
        assert child not in PARENTS and SPACE.contains(child)


def test_a_crossover_child_takes_its_genes_from_two_distinct_parents():
    for seed in range(300):
        child = _breed(seed, crossover_rate=1.0, mutation_rate=0.0)
        if child in PARENTS:
            continue
        sources = [p for p in PARENTS if child.encoder == p.encoder or child.latent == p.latent
                   or child.decoder == p.decoder]
        mutated = not any(child.encoder == p.encoder for p in PARENTS) or \
            not any(child.decoder == p.decoder for p in PARENTS) or not any(child.latent == p.latent for p in PARENTS)
        assert mutated or len(sources) >= 2       # an unmutated child mixes two parents
    lone = [parse_genotype("850|20|1000")]           # one parent: no crossover is possible, only mutation
    for seed in range(50):
        assert _breed(seed, crossover_rate=1.0, parents=lone) != lone[0]


def test_a_parent_set_gives_the_same_children():
    parent_set = frozenset(PARENTS)
    assert [_breed(s, parent_set=parent_set) for s in range(100)] == [_breed(s) for s in range(100)]


# -- the local operator set -----------------------------------------------------------------------------

LOCAL = MutationRates(operators="local")


def _is_removal(before: tuple, after: tuple) -> bool:
    return len(after) == len(before) - 1 and any(before[:i] + before[i + 1:] == after for i in range(len(before)))


def _is_insertion(before: tuple, after: tuple) -> bool:
    return _is_removal(after, before)


def _grid_steps(space: SearchSpace, before: int, after: int, grid: str = "widths") -> int:
    values = getattr(space, grid)
    return abs(values.index(after) - values.index(before))


def test_remove_layer_exact_values_for_fixed_seeds():
    widths = (200, 500, 1000)
    pinned = {0: (200, 500), 1: (200, 1000), 11: (500, 1000)}
    for seed, expected in pinned.items():
        assert remove_layer(widths, SPACE, np.random.default_rng(seed)) == expected
        # justification: one integer draw picks the layer that goes
        index = int(np.random.default_rng(seed).integers(3))
        assert expected == widths[:index] + widths[index + 1:]
    assert widths == (200, 500, 1000)


def test_insert_layer_exact_values_for_fixed_seeds():
    widths = (200, 500, 1000)
    pinned = {0: (200, 500, 1000, 1000),      # after the last layer, a copy of it
              1: (200, 550, 500, 1000),       # between the first two, a fresh draw
              4: (200, 500, 950, 1000)}       # between the last two, a fresh draw
    for seed, expected in pinned.items():
        assert insert_layer(widths, SPACE, np.random.default_rng(seed)) == expected
        # justification: a position (0..3), a copy coin, then a neighbour (of one or two) or a grid width
        rng = np.random.default_rng(seed)
        position = int(rng.integers(4))
        neighbours = widths[max(position - 1, 0):position + 1]
        width = neighbours[int(rng.integers(len(neighbours)))] if rng.random() < 0.5 else SPACE.random_width(rng)
        assert expected == (*widths[:position], width, *widths[position:])


def test_insert_layer_copies_a_neighbour_or_draws():
    widths = (200, 500, 1000)
    for seed in range(300):
        out = insert_layer(widths, SPACE, np.random.default_rng(seed), copy=1.0)
        assert _is_insertion(widths, out)
        # some reading of it inserts, at position i, the width of a layer next to i
        assert any(out[:i] + out[i + 1:] == widths and out[i] in widths[max(i - 1, 0):i + 1] for i in range(4))
    copied = {insert_layer((650,), SPACE, np.random.default_rng(s), copy=1.0) for s in range(50)}
    assert copied == {(650, 650)}                   # one neighbour: always its width
    drawn = {insert_layer((650,), SPACE, np.random.default_rng(s), copy=0.0)[0] for s in range(2000)} | \
        {insert_layer((650,), SPACE, np.random.default_rng(s), copy=0.0)[1] for s in range(2000)}
    assert drawn == set(SPACE.widths)               # without copies, any grid width


def test_step_width_exact_values_and_the_grid_ends():
    widths = (200, 500, 1000)
    pinned = {0: (200, 500, 950), 1: (200, 550, 1000), 3: (200, 500, 900)}
    for seed, expected in pinned.items():
        assert step_width(widths, SPACE, np.random.default_rng(seed)) == expected
        # justification: a layer, then k in 0..3 -> a step of -2, -1, +1, +2 grid points, stopped at the
        # grid's end and turned round if it would stay put (1000 is the top)
        rng = np.random.default_rng(seed)
        index = int(rng.integers(3))
        k = int(rng.integers(4))
        delta = (-2, -1, 1, 2)[k]
        position = SPACE.widths.index(widths[index])
        target = min(max(position + delta, 0), len(SPACE.widths) - 1)
        if target == position:
            target = position - delta
        assert expected[index] == SPACE.widths[target] and expected[:index] + expected[index + 1:] == \
            widths[:index] + widths[index + 1:]
    assert {step_width((1000,), SPACE, np.random.default_rng(s)) for s in range(100)} == {(900,), (950,)}
    assert {step_width((50,), SPACE, np.random.default_rng(s)) for s in range(100)} == {(100,), (150,)}
    assert {step_width((500,), SPACE, np.random.default_rng(s)) for s in range(100)} == {(400,), (450,), (550,), (600,)}
    assert {step_width((950,), SPACE, np.random.default_rng(s)) for s in range(100)} == {(850,), (900,), (1000,)}
    assert {step_width((500,), SPACE, np.random.default_rng(s), max_step=1) for s in range(100)} == {(450,), (550,)}
    two = SearchSpace(width_min=50, width_max=100)  # a grid of two: every step lands on the other
    assert {step_width((50,), two, np.random.default_rng(s)) for s in range(50)} == {(100,)}


def test_step_latent_exact_values_and_the_grid_ends():
    pinned = {0: 40, 1: 10, 4: 30}
    for seed, expected in pinned.items():
        assert step_latent(20, SPACE, np.random.default_rng(seed)) == expected
        k = int(np.random.default_rng(seed).integers(4))
        assert expected == {0: 10, 1: 10, 2: 30, 3: 40}[k]   # -2 stops at 10; -1, +1, +2 as drawn
    assert {step_latent(10, SPACE, np.random.default_rng(s)) for s in range(100)} == {20, 30}
    assert {step_latent(100, SPACE, np.random.default_rng(s)) for s in range(100)} == {80, 90}
    assert {step_latent(50, SPACE, np.random.default_rng(s)) for s in range(100)} == {30, 40, 60, 70}
    assert all(type(step_latent(50, SPACE, np.random.default_rng(s))) is int for s in range(20))


def test_local_operators_refuse_what_the_space_forbids():
    with pytest.raises(ValueError, match="needs >= 1"):
        remove_layer((500,), SPACE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="allows <= 5"):
        insert_layer((500,) * 5, SPACE, np.random.default_rng(0))
    with pytest.raises(ValueError, match="single value"):
        step_width((50,), SearchSpace(width_min=50, width_max=50), np.random.default_rng(0))
    with pytest.raises(ValueError, match="single value"):
        step_latent(10, SearchSpace(latent_min=10, latent_max=10), np.random.default_rng(0))
    with pytest.raises(ValueError, match="max_step"):
        step_width((500,), SPACE, np.random.default_rng(0), max_step=0)
    with pytest.raises(ValueError, match="copy"):
        insert_layer((500,), SPACE, np.random.default_rng(0), copy=1.5)


def test_local_mutation_exact_values_for_fixed_seeds():
    parent = parse_genotype("200,500|20|1000,650,50")
    pinned = {
        0: "200,500|20|650,50",            # decoder drawn: remove its first layer
        2: "500|20|1000,650,50",           # encoder drawn: remove its first layer
        3: "100,500|20|1000,650,50",       # encoder drawn: the paper's move (redraw layer 0)
        4: "200,500|20|950,650,50",        # nothing drawn, then the decoder: step 1000 -> 950
        5: "200,500|40|1000,650,50",       # nothing drawn, then the latent: step 20 -> 40
        6: "200,500|20|1000,1000,650,50",  # decoder drawn: insert a copy of its first layer
    }
    for seed, expected in pinned.items():
        child = mutate(parent, SPACE, np.random.default_rng(seed), LOCAL)
        assert str(child) == expected, seed
        # justification: the same draws as the paper's decide which genes mutate (three coins, then one of
        # the three uniformly when no coin came up)
        rng = np.random.default_rng(seed)
        names = ("encoder", "latent", "decoder")
        drawn = {name for name, d, p in zip(names, rng.random(3), (0.5, 0.2, 0.5), strict=True) if d < p}
        drawn = drawn or {names[int(rng.integers(3))]}
        assert _changed_genes(parent, child) == drawn
    assert str(parent) == "200,500|20|1000,650,50"


def test_local_network_move_draws_exactly_as_documented():
    moves = LocalMoves()
    for seed in range(300):
        widths = SPACE.random_network(np.random.default_rng(1000 + seed))
        rng = np.random.default_rng(seed)     # one uniform draw picks the move among those that apply
        possible = [(w, name) for w, ok, name in ((moves.remove, len(widths) > 1, "remove"),
                                                  (moves.insert, len(widths) < 5, "insert"),
                                                  (moves.step, True, "step"), (moves.paper, True, "paper")) if ok]
        point = rng.random() * sum(w for w, _ in possible)
        chosen = possible[-1][1]
        for weight, name in possible:
            if point < weight:
                chosen = name
                break
            point -= weight
        if chosen == "remove":
            expected = remove_layer(widths, SPACE, rng)
        elif chosen == "insert":
            expected = insert_layer(widths, SPACE, rng, moves.copy)
        elif chosen == "step":
            expected = step_width(widths, SPACE, rng, moves.max_step)
        else:
            expected = mutate_network(widths, SPACE, rng, 0.5)
        assert mutate_network_local(widths, SPACE, np.random.default_rng(seed), moves) == expected


def test_local_mutation_over_thousands_of_draws_is_valid_new_and_local():
    spaces = [SPACE, SearchSpace(min_layers=2, max_layers=3), SearchSpace(max_layers=2, width_min=50, width_max=150),
              SearchSpace(min_layers=3, max_layers=3, latent_min=10, latent_max=30)]
    kinds = {"remove": 0, "insert": 0, "step": 0, "latent step": 0, "other": 0}
    for space in spaces:
        for seed in range(1500):
            parent = space.sample(np.random.default_rng(50_000 + seed))
            text = str(parent)
            child = mutate(parent, space, np.random.default_rng(seed), LOCAL)
            assert str(parent) == text                          # input unchanged
            assert child != parent and space.problems(child) == []
            for name in ("encoder", "decoder"):
                before, after = getattr(parent, name), getattr(child, name)
                assert space.min_layers <= len(after) <= space.max_layers
                if before == after:
                    continue
                if _is_removal(before, after):
                    kinds["remove"] += 1
                elif _is_insertion(before, after):
                    kinds["insert"] += 1
                else:                                           # a step, or the paper's redraw of one width
                    assert len(after) == len(before) and len(_positions_changed(before, after)) == 1
                    i = _positions_changed(before, after)[0]
                    kinds["step" if _grid_steps(space, before[i], after[i]) <= 2 else "other"] += 1
            if child.latent != parent.latent:
                kinds["latent step" if _grid_steps(space, parent.latent, child.latent, "latents") <= 2
                      else "other"] += 1
    assert all(count > 100 for count in kinds.values()), kinds
    assert kinds["other"] < kinds["step"] / 3                    # the paper's redraws are the rare move


def test_local_move_frequencies_follow_the_weights():
    widths = (300, 600, 900)     # depth 3 of 1..5: every move applies
    n = 8000
    outs = [mutate_network_local(widths, SPACE, np.random.default_rng(s)) for s in range(n)]
    shorter = sum(len(o) < 3 for o in outs) / n
    longer = sum(len(o) > 3 for o in outs) / n
    assert abs(shorter - 0.25) < 0.02                           # remove
    assert abs(longer - (0.25 + 0.1 * 0.5)) < 0.02             # insert, and the paper's move appending


def test_local_mutation_respects_the_layer_bounds():
    space = SearchSpace(min_layers=2, max_layers=3)
    shallow, deep = Genotype((300, 400), 30, (500, 600)), Genotype((300, 400, 500), 30, (500, 600, 700))
    removed = inserted = 0
    for seed in range(2000):
        child = mutate(shallow, space, np.random.default_rng(seed), LOCAL)
        assert min(child.depth) >= 2                            # never below min_layers
        inserted += max(child.depth) == 3
        child = mutate(deep, space, np.random.default_rng(seed), LOCAL)
        assert max(child.depth) <= 3                            # never above max_layers
        removed += min(child.depth) == 2
    assert removed > 300 and inserted > 300


def test_paper_set_never_reduces_depth_and_local_set_can():
    local_less = local_more = 0
    for seed in range(3000):
        parent = SPACE.sample(np.random.default_rng(90_000 + seed))
        child = mutate(parent, SPACE, np.random.default_rng(seed))
        assert child.depth[0] >= parent.depth[0] and child.depth[1] >= parent.depth[1]   # each network
        child = mutate(parent, SPACE, np.random.default_rng(seed), LOCAL)
        local_less += sum(child.depth) < sum(parent.depth)
        local_more += sum(child.depth) > sum(parent.depth)
    assert local_less > 500 and local_more > 500


def test_local_weights_that_cannot_apply_fall_back_to_a_move_that_can():
    only_remove = MutationRates(network=1.0, latent=0.0, operators="local",
                                local=LocalMoves(remove=1.0, insert=0.0, step=0.0, paper=0.0))
    parent = parse_genotype("300|30|400,500")
    for seed in range(200):
        child = mutate(parent, SPACE, np.random.default_rng(seed), only_remove)
        assert child.decoder in ((400,), (500,))              # removal wherever it can
        assert child.encoder != (300,) and SPACE.contains(child)   # at min_layers another move instead


def test_local_mutant_differs_in_degenerate_spaces():
    fixed_nets = SearchSpace(max_layers=1, width_min=50, width_max=50)           # only the latent can move
    fixed_latent = SearchSpace(max_layers=2, width_min=50, width_max=50, latent_min=10, latent_max=10)
    fixed_depth = SearchSpace(min_layers=2, max_layers=2, latent_min=10, latent_max=10)
    for space, parent in ((fixed_nets, Genotype((50,), 10, (50,))), (fixed_latent, Genotype((50,), 10, (50, 50))),
                          (fixed_depth, Genotype((50, 50), 10, (1000, 1000)))):
        for seed in range(200):
            child = mutate(parent, space, np.random.default_rng(seed), LOCAL)
            assert child != parent and space.contains(child)
    single = SearchSpace(max_layers=1, width_min=50, width_max=50, latent_min=10, latent_max=10)
    assert mutate(Genotype((50,), 10, (50,)), single, np.random.default_rng(0), LOCAL) == Genotype((50,), 10, (50,))


def test_local_mutation_is_deterministic_per_seed():
    parent = parse_genotype("200,500|20|1000,650,50")
    for seed in range(100):
        assert mutate(parent, SPACE, np.random.default_rng(seed), LOCAL) == \
            mutate(parent, SPACE, np.random.default_rng(seed), LOCAL)
    assert len({mutate(parent, SPACE, np.random.default_rng(s), LOCAL) for s in range(200)}) > 60


def test_local_latent_moves_by_steps_with_rare_redraws():
    steps = {mutate_latent_local(50, SPACE, np.random.default_rng(s), LocalMoves(latent_redraw=0.0))
             for s in range(200)}
    assert steps == {30, 40, 60, 70}
    redraws = {mutate_latent_local(50, SPACE, np.random.default_rng(s), LocalMoves(latent_redraw=1.0))
               for s in range(500)}
    assert redraws == set(SPACE.latents) - {50}
    assert mutate_latent_local(10, SearchSpace(latent_max=10), np.random.default_rng(0)) == 10


@pytest.mark.parametrize("kwargs, word", [
    (dict(remove=-0.1), "remove"), (dict(step=float("nan")), "step"), (dict(paper=float("inf")), "paper"),
    (dict(remove=0.0, insert=0.0, step=0.0, paper=0.0), "all 0"), (dict(copy=1.5), "copy"),
    (dict(latent_redraw=-0.01), "latent_redraw"), (dict(max_step=0), "max_step"), (dict(max_step=1.5), "max_step")])
def test_local_moves_refuse_bad_values(kwargs, word):
    with pytest.raises(ValueError, match=word):
        LocalMoves(**kwargs)


def test_mutation_rates_name_a_known_operator_set():
    assert MutationRates().operators == "paper" and OPERATOR_SETS == ("paper", "local")
    with pytest.raises(ValueError, match="'bogus' is not one of paper, local"):
        MutationRates(operators="bogus")
    with pytest.raises(ValueError, match="LocalMoves"):
        MutationRates(operators="local", local={"remove": 1.0})  # type: ignore[arg-type]
    assert MutationRates(operators="local") == LOCAL and hash(LOCAL) == hash(MutationRates(operators="local"))


def test_breeding_with_the_local_set_can_go_below_every_parents_depth():
    parents = [parse_genotype(t) for t in ("850,400|20|1000,300", "200,500|60|1000,650,50", "1000,100|60|700,750")]
    shallowest = min(sum(p.depth) for p in parents)
    paper = [breed(parents, SPACE, np.random.default_rng(s), 0.5, 0.8, MutationRates()) for s in range(500)]
    local = [breed(parents, SPACE, np.random.default_rng(s), 0.5, 0.8, LOCAL) for s in range(500)]
    assert min(sum(c.depth) for c in paper) >= shallowest
    assert min(sum(c.depth) for c in local) < shallowest
    assert all(SPACE.contains(c) and c not in parents for c in local)


def test_engines_take_the_local_set_through_their_mutation_argument():
    from evo.engine import EvolutionEngine
    from evo.evaluation import Evaluation
    from evo.regularized import RegularizedEvolution
    from evo.steady_state import SteadyStateEngine

    def loss(g: Genotype) -> float:                    # shallow is better
        return 100.0 + 10 * sum(g.depth) + g.latent / 10

    for make in (lambda m: EvolutionEngine(SPACE, mu=6, lam=6, generations=12, seed=1, mutation=m),
                 lambda m: SteadyStateEngine(SPACE, mu=6, max_evaluations=72, seed=1, mutation=m),
                 lambda m: RegularizedEvolution(SPACE, mu=6, max_evaluations=72, seed=1, mutation=m)):
        best = {}
        for name, rates in (("paper", MutationRates()), ("local", LOCAL)):
            engine = make(rates)
            while not engine.done:
                batch = engine.ask()
                engine.tell([Evaluation.succeeded(c.genotype, loss(c.genotype), epochs=c.epochs) for c in batch])
            assert engine.best is not None
            best[name] = engine.best.genotype
        assert sum(best["local"].depth) <= sum(best["paper"].depth)
        assert best["local"].depth == (1, 1)

"""evo.space: the paper's defaults, sampling, and the reasons a genotype lies outside."""
import numpy as np
import pytest

from evo.genotype import Genotype, GenotypeError, parse_genotype
from evo.space import SearchSpace


def test_defaults_are_the_papers():
    space = SearchSpace()
    assert (space.min_layers, space.max_layers) == (1, 5)
    assert space.widths == tuple(range(50, 1001, 50))
    assert len(space.widths) == 20 and space.widths[0] == 50 and space.widths[-1] == 1000
    assert space.latents == (10, 20, 30, 40, 50, 60, 70, 80, 90, 100)


def test_custom_grid():
    space = SearchSpace(min_layers=2, max_layers=3, width_min=10, width_max=30, width_step=10,
                        latent_min=2, latent_max=2, latent_step=1)
    assert space.widths == (10, 20, 30)
    assert space.latents == (2,)


def test_sample_always_lies_inside_the_space():
    space = SearchSpace()
    widths, latents = set(space.widths), set(space.latents)
    depths, seen_widths, seen_latents = set(), set(), set()
    for seed in range(500):
        g = space.sample(np.random.default_rng(seed))
        assert isinstance(g, Genotype)
        assert space.problems(g) == [] and space.contains(g)
        assert space.validate(g) is g
        for net in (g.encoder, g.decoder):
            assert 1 <= len(net) <= 5
            assert set(net) <= widths
            depths.add(len(net))
            seen_widths.update(net)
        assert g.latent in latents
        seen_latents.add(g.latent)
    # the whole grid is reachable: every depth, width and latent turned up
    assert depths == {1, 2, 3, 4, 5}
    assert seen_widths == widths
    assert seen_latents == latents


def test_sample_inside_a_custom_space():
    space = SearchSpace(min_layers=2, max_layers=3, width_min=100, width_max=300, width_step=100,
                        latent_min=5, latent_max=15, latent_step=5)
    for seed in range(300):
        g = space.sample(np.random.default_rng(seed))
        assert space.contains(g)
        assert 2 <= len(g.encoder) <= 3 and 2 <= len(g.decoder) <= 3
        assert set(g.encoder) | set(g.decoder) <= {100, 200, 300}
        assert g.latent in (5, 10, 15)


def test_sample_is_deterministic_per_seed():
    space = SearchSpace()
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    rng1, rng2 = np.random.default_rng(99), np.random.default_rng(99)
    assert [space.sample(rng1) for _ in range(20)] == [space.sample(rng2) for _ in range(20)]
    assert len({space.sample(np.random.default_rng(s)) for s in range(50)}) > 40


def test_random_width_and_latent_are_python_ints_on_the_grid():
    space = SearchSpace()
    rng = np.random.default_rng(3)
    for _ in range(100):
        w, z = space.random_width(rng), space.random_latent(rng)
        assert type(w) is int and w in space.widths
        assert type(z) is int and z in space.latents


def test_problems_name_each_reason():
    space = SearchSpace()
    assert space.problems(parse_genotype("850|20|1000")) == []

    too_deep = parse_genotype("50,50,50,50,50,50|20|1000")
    assert space.problems(too_deep) == ["encoder has 6 layers, allowed 1..5"]

    off_grid = parse_genotype("75,100|20|1000,1050")
    problems = space.problems(off_grid)
    assert len(problems) == 2
    assert "encoder widths [75]" in problems[0] and "50..1000 step 50" in problems[0]
    assert "decoder widths [1050]" in problems[1]

    bad_latent = parse_genotype("850|15|1000")
    assert space.problems(bad_latent) == ["latent 15 not in 10..100 step 10"]
    assert space.problems(parse_genotype("850|110|1000")) == ["latent 110 not in 10..100 step 10"]

    everything = parse_genotype("25|5|50,50,50,50,50,60")
    problems = space.problems(everything)
    assert len(problems) == 4
    joined = "; ".join(problems)
    for piece in ("encoder widths [25]", "decoder has 6 layers", "decoder widths [60]", "latent 5"):
        assert piece in joined


def test_min_layers_is_enforced():
    space = SearchSpace(min_layers=2)
    assert space.problems(parse_genotype("100|20|100,100")) == ["encoder has 1 layers, allowed 2..5"]
    assert not space.contains(parse_genotype("100|20|100,100"))
    assert space.contains(parse_genotype("100,100|20|100,100"))


def test_validate_raises_genotype_error_listing_the_problems():
    space = SearchSpace()
    g = parse_genotype("75|15|1000")
    with pytest.raises(GenotypeError) as info:
        space.validate(g)
    message = str(info.value)
    assert "75|15|1000" in message and "outside the search space" in message
    assert "encoder widths [75]" in message and "latent 15" in message
    assert isinstance(info.value, ValueError)
    ok = parse_genotype("50|10|1000")
    assert space.validate(ok) is ok


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(min_layers=0),
        dict(min_layers=-1),
        dict(min_layers=3, max_layers=2),
        dict(max_layers=0),
        dict(width_min=0),
        dict(width_min=-50),
        dict(width_step=0),
        dict(width_step=-50),
        dict(width_min=100, width_max=50),
        dict(width_max=1025),          # 975 is not a multiple of the step 50
        dict(latent_min=0),
        dict(latent_step=0),
        dict(latent_min=50, latent_max=40),
        dict(latent_max=105),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        SearchSpace(**kwargs)


def test_degenerate_but_valid_grids_are_accepted():
    space = SearchSpace(min_layers=1, max_layers=1, width_min=50, width_max=50, width_step=7,
                        latent_min=3, latent_max=3, latent_step=1)
    assert space.widths == (50,) and space.latents == (3,)
    assert space.sample(np.random.default_rng(0)) == Genotype((50,), 3, (50,))


def test_float_grid_arguments_raise_value_error():
    with pytest.raises(ValueError):
        space = SearchSpace(width_step=25.0)
        space.widths  # noqa: B018 - where it fails today, with TypeError

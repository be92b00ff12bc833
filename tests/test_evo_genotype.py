"""evo.genotype: the paper's text form, validation, immutability, parameter count."""
import dataclasses

import numpy as np
import pytest

from evo.genotype import Genotype, GenotypeError, parse_genotype
from evo.space import SearchSpace

# Table I of the paper, plus a few more multi-layer genotypes of the default space.
TABLE_I = ["850|20|1000", "200,500|20|1000,650,50", "1000|60|700,750"]
MORE = [
    "50,100,150,200,250|100|1000,950,900,850,800",
    "1000,1000,1000,1000,1000|10|50,50,50,50,50",
    "300,250|90|450",
    "600|40|100,200,300,400",
]


@pytest.mark.parametrize("text", TABLE_I + MORE)
def test_paper_strings_round_trip_exactly(text):
    genotype = parse_genotype(text)
    assert str(genotype) == text
    assert parse_genotype(str(genotype)) == genotype
    assert Genotype.parse(text) == genotype


def test_table_i_fields_parse_to_the_right_genes():
    g = parse_genotype("200,500|20|1000,650,50")
    assert g.encoder == (200, 500)
    assert g.latent == 20
    assert g.decoder == (1000, 650, 50)
    assert g.depth == (2, 3)
    assert all(type(w) is int for w in (*g.encoder, g.latent, *g.decoder))
    assert parse_genotype("850|20|1000") == Genotype((850,), 20, (1000,))
    assert parse_genotype("1000|60|700,750") == Genotype((1000,), 60, (700, 750))


def test_round_trip_for_many_sampled_genotypes():
    space = SearchSpace()
    for seed in range(300):
        g = space.sample(np.random.default_rng(seed))
        text = str(g)
        assert parse_genotype(text) == g
        assert str(parse_genotype(text)) == text


def test_round_trip_for_arbitrary_positive_integers():
    rng = np.random.default_rng(1234)
    for _ in range(300):
        enc = tuple(int(w) for w in rng.integers(1, 10**6, size=int(rng.integers(1, 8))))
        dec = tuple(int(w) for w in rng.integers(1, 10**6, size=int(rng.integers(1, 8))))
        g = Genotype(enc, int(rng.integers(1, 10**4)), dec)
        assert parse_genotype(str(g)) == g
        assert " " not in str(g) and str(g).count("|") == 2


@pytest.mark.parametrize(
    "text, expected",
    [
        (" 850|20|1000 ", "850|20|1000"),
        ("\t850|20|1000\n", "850|20|1000"),
        ("850 | 20 | 1000", "850|20|1000"),
        ("200, 500|20|1000 ,650 , 50", "200,500|20|1000,650,50"),
        ("  200 ,500 |\t20\t| 1000,650,50  ", "200,500|20|1000,650,50"),
    ],
)
def test_whitespace_around_numbers_is_ignored(text, expected):
    g = parse_genotype(text)
    assert str(g) == expected


# (text, pieces that the message must name)
BAD_TEXTS = [
    ("", ["three", "got 1"]),
    ("   ", ["three", "got 1"]),
    ("850", ["three", "got 1"]),
    ("850|20", ["three", "got 2", "'850|20'"]),
    ("850|20|1000|5", ["three", "got 4"]),
    ("|20|1000", ["encoder", "''"]),
    ("850||1000", ["latent", "''"]),
    ("850|20|", ["decoder", "''"]),
    ("850,|20|1000", ["encoder", "''"]),
    ("850,,100|20|1000", ["encoder", "''"]),
    ("abc|20|1000", ["encoder", "'abc'"]),
    ("850|x|1000", ["latent", "'x'"]),
    ("850|20|1000,y", ["decoder", "'y'"]),
    ("8 50|20|1000", ["encoder", "'8 50'"]),
    ("-850|20|1000", ["encoder", "'-850'"]),
    ("850|-20|1000", ["latent", "'-20'"]),
    ("850|20|1000,-650", ["decoder", "'-650'"]),
    ("+850|20|1000", ["encoder", "'+850'"]),
    ("0|20|1000", ["encoder", "width 0"]),
    ("850|0|1000", ["latent", "0"]),
    ("850|20|1000,0", ["decoder", "width 0"]),
    ("850.5|20|1000", ["encoder", "'850.5'"]),
    ("850|2e1|1000", ["latent", "'2e1'"]),
    ("850|20.0|1000", ["latent", "'20.0'"]),
    ("850|20|1000,65.5", ["decoder", "'65.5'"]),
    ("850|20,30|1000", ["latent", "'20,30'"]),
    ("\uff18\uff15\uff10|20|1000", ["encoder"]),  # full-width digits: int() would take them
]


@pytest.mark.parametrize("text, pieces", BAD_TEXTS)
def test_bad_text_raises_genotype_error_naming_the_bad_piece(text, pieces):
    with pytest.raises(GenotypeError) as info:
        parse_genotype(text)
    message = str(info.value)
    for piece in pieces:
        assert piece in message, (piece, message)


def test_over_long_text_is_refused_before_parsing():
    text = ",".join(["50"] * 100) + "|20|1000"
    assert len(text) > 256
    with pytest.raises(GenotypeError) as info:
        parse_genotype(text)
    assert str(len(text)) in str(info.value) and "256" in str(info.value)
    # the limit itself is fine when the text is valid
    ok = ",".join(["5"] * 124) + "|20|1000"
    assert len(ok) <= 256
    assert parse_genotype(ok).depth == (124, 1)


@pytest.mark.parametrize(
    "value, type_name",
    [(None, "NoneType"), (850, "int"), (b"850|20|1000", "bytes"), (["850", "20", "1000"], "list"),
     (Genotype((850,), 20, (1000,)), "Genotype")],
)
def test_non_str_raises_genotype_error_naming_the_type(value, type_name):
    with pytest.raises(GenotypeError) as info:
        parse_genotype(value)
    assert type_name in str(info.value)


def test_genotype_error_is_a_value_error():
    assert issubclass(GenotypeError, ValueError)
    with pytest.raises(ValueError):
        parse_genotype("nope")


@pytest.mark.parametrize(
    "args, piece",
    [
        (([850], 20, (1000,)), "list"),
        (((850,), 20, [1000]), "list"),
        (((), 20, (1000,)), "encoder"),
        (((850,), 20, ()), "decoder"),
        (((0,), 20, (1000,)), "0"),
        (((850,), 20, (-5,)), "-5"),
        (((True,), 20, (1000,)), "True"),
        (((850.0,), 20, (1000,)), "850.0"),
        (((np.int64(850),), 20, (1000,)), "850"),
        (((850,), 0, (1000,)), "latent"),
        (((850,), 20.0, (1000,)), "latent"),
        (((850,), True, (1000,)), "latent"),
        (((850,), "20", (1000,)), "latent"),
    ],
)
def test_constructor_refuses_invalid_genes(args, piece):
    with pytest.raises(GenotypeError) as info:
        Genotype(*args)
    assert piece in str(info.value)


def test_genotype_is_frozen():
    g = parse_genotype("200,500|20|1000,650,50")
    for name, value in (("encoder", (100,)), ("latent", 30), ("decoder", (50,))):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(g, name, value)
    with pytest.raises((AttributeError, TypeError)):
        g.extra = 1  # slots: no new attributes either
    assert str(g) == "200,500|20|1000,650,50"


def test_genotype_is_hashable_and_equal_by_value():
    a = parse_genotype("200,500|20|1000,650,50")
    b = Genotype((200, 500), 20, (1000, 650, 50))
    c = parse_genotype(" 200, 500 | 20 | 1000,650,50 ")
    assert a == b == c and a is not b
    assert hash(a) == hash(b) == hash(c)
    assert len({a, b, c}) == 1
    assert {a: "x"}[b] == "x"
    for other in ("500,200|20|1000,650,50", "200,500|30|1000,650,50", "200,500|20|1000,650",
                  "1000,650,50|20|200,500"):
        assert parse_genotype(other) != a
    assert len({parse_genotype(t) for t in TABLE_I + MORE}) == len(TABLE_I + MORE)


def test_parameter_count_of_the_pytorch_example_vae():
    g = parse_genotype("400|20|400")
    expected = 784 * 400 + 400 + 2 * (400 * 20 + 20) + 20 * 400 + 400 + 400 * 784 + 784
    assert expected == 652_824
    assert g.parameter_count(784) == expected


def test_parameter_count_of_multi_layer_genotypes():
    g = parse_genotype("200,500|20|1000,650,50")
    expected = (
        (784 * 200 + 200) + (200 * 500 + 500)          # encoder hidden layers
        + 2 * (500 * 20 + 20)                           # mu and log-variance heads
        + (20 * 1000 + 1000) + (1000 * 650 + 650) + (650 * 50 + 50)  # decoder hidden layers
        + (50 * 784 + 784)                              # output layer
    )
    assert g.parameter_count(784) == expected
    g = parse_genotype("850|20|1000")
    assert g.parameter_count(784) == (784 * 850 + 850) + 2 * (850 * 20 + 20) + (20 * 1000 + 1000) + (1000 * 784 + 784)
    # CIFAR-10 flattened input
    g = parse_genotype("1000|60|700,750")
    n = 3072
    assert g.parameter_count(n) == ((n * 1000 + 1000) + 2 * (1000 * 60 + 60) + (60 * 700 + 700) + (700 * 750 + 750)
                                    + (750 * n + n))


def test_depth():
    assert parse_genotype("850|20|1000").depth == (1, 1)
    assert parse_genotype("50,100,150,200,250|100|1000,950").depth == (5, 2)

"""The search space as options and settings (issue 19.4): --min-layers/--max-layers, --width-min/-max/-step,
--latent-min/-max/-step on the command line and in a --config file's [search] table; stored in the run's
configuration (journal, result.json) and taken from there by a resume; the latent kept below the input
dimension of small data unless --latent-max is given; a combination that makes no grid is one line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evo.cmdline import validate as v
from evo.genotype import GenotypeError, parse_genotype
from evo.search_config import SearchConfig
from evo.space import SearchSpace, space_for


def flag(field: str) -> str:
    return f"--{field.replace('_', '-')}"


@pytest.mark.parametrize("features, latents", [
    (4, (1, 2, 3)),                          # the default grid has no value below 4: 1..D-1 step 1
    (11, tuple(range(1, 11))),               # one value (10) below 11 is too few: 1..10
    (21, (10, 20)),
    (30, (10, 20)),
    (64, (10, 20, 30, 40, 50, 60)),          # 8 x 8 digits
    (101, tuple(range(10, 101, 10))),        # the paper's grid, unchanged
    (784, tuple(range(10, 101, 10))),
    (None, tuple(range(10, 101, 10))),       # the data not read yet
])
def test_the_latent_is_kept_below_the_input_dimension(features, latents):
    space, note = space_for({}, features, flag)
    assert space.latents == latents
    assert all(latent < features for latent in latents) if features and features > 1 else True
    if latents == tuple(range(10, 101, 10)):
        assert note == ""
    else:
        assert note == (f"the data has {features} features: latent sizes {latents[0]}..{latents[-1]} step "
                        f"{latents[1] - latents[0]}, kept below the input dimension (give --latent-max to choose)")
    assert (space.min_layers, space.max_layers, space.widths) == (1, 5, tuple(range(50, 1001, 50)))


def test_the_cap_keeps_a_grid_the_user_chose_and_latent_max_turns_it_off():
    assert space_for({"latent_min": 2, "latent_step": 2}, 7, flag)[0].latents == (2, 4, 6)
    assert space_for({"latent_min": 1}, 4, flag)[0].latents == (1,)
    space, note = space_for({"latent_max": 50}, 4, flag)
    assert space.latents == (10, 20, 30, 40, 50) and note == ""


def test_a_maximum_not_given_is_the_largest_grid_value_up_to_the_default():
    space, _ = space_for({"width_step": 30, "latent_step": 7}, None, flag)
    assert space.widths[-1] == 980 and space.latents[-1] == 94
    assert space_for({"width_min": 8, "width_max": 64, "width_step": 8}, None, flag)[0].widths == tuple(
        range(8, 65, 8))


@pytest.mark.parametrize("given, features, message", [
    ({"width_step": 30, "width_max": 1000}, None,
     "--width-step 30 does not divide the range 50..1000 of widths (1000 is not 50 plus a multiple of 30); give "
     "--width-max 980 or 1010, or another step"),
    ({"width_min": 500, "width_max": 100}, None,
     "--width-min 500 is above --width-max 100; give a smaller --width-min or a larger --width-max"),
    ({"latent_min": 300}, None, "--latent-min 300 is above --latent-max 100 (the default)"),
    ({"min_layers": 3, "max_layers": 2}, None, "--min-layers 3 is above --max-layers 2"),
    ({"min_layers": 6}, None, "--min-layers 6 is above --max-layers 5"),
    ({"latent_min": 10}, 4, "--latent-min 10 is not below the input dimension 4"),
    ({"latent_step": 5}, 4, "--latent-min 10 (the default) is not below the input dimension 4"),
])
def test_a_combination_that_makes_no_grid_is_one_line_naming_the_options(given, features, message):
    with pytest.raises(ValueError) as err:
        space_for(given, features, flag)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_python_names_are_the_default():
    with pytest.raises(ValueError, match="width_min 500 is above width_max 100"):
        space_for({"width_min": 500, "width_max": 100})
    with pytest.raises(ValueError, match="unknown search space fields"):
        space_for({"widht_min": 5})


def test_the_space_travels_in_the_search_config():
    from evo.spec import TrainSpec
    from evo.strategies import StrategyOptions

    space = SearchSpace(min_layers=2, max_layers=3, width_min=8, width_max=64, width_step=8, latent_min=1,
                        latent_max=3, latent_step=1)
    config = SearchConfig(StrategyOptions(), TrainSpec(dataset="synthetic"), space)
    again = SearchConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.space == space and again.same_search(config)


def test_train_and_export_take_genotypes_of_the_widest_space_the_options_allow():
    assert v.trainable_genotype("2000,3000|500|4000") == parse_genotype("2000,3000|500|4000")
    with pytest.raises(GenotypeError, match="is too large: width 10001"):
        v.trainable_genotype("10001|20|100")
    with pytest.raises(GenotypeError, match="21 hidden layers"):
        v.trainable_genotype(",".join(["50"] * 21) + "|20|100")


# ------------------------------------------------------------------ through the command line

@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "four.csv"
    rows = np.random.default_rng(3).normal(size=(200, 4))
    path.write_text("a,b,c,d\n" + "".join(",".join(f"{x:.4f}" for x in row) + "\n" for row in rows))
    return path


def run(argv, capsys) -> tuple[int, str, str]:
    from evo.cli.app import main

    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    captured = capsys.readouterr()
    return status, captured.out, captured.err


SMALL = ["--in-process", "--population", "2", "--offspring", "2", "--generations", "2", "--epochs", "1",
         "--log-level", "warning"]


@pytest.mark.parametrize("argv, message", [
    (["--width-step", "30", "--width-max", "1000"], "--width-step 30 does not divide the range 50..1000"),
    (["--min-layers", "3", "--max-layers", "2"], "--min-layers 3 is above --max-layers 2"),
    (["--latent-min", "10"], "--latent-min 10 is not below the input dimension 4"),
    (["--width-max", "0"], "argument --width-max: expected a whole number from 1 to 10000"),
    (["--max-layers", "21"], "argument --max-layers: expected a whole number from 1 to 20"),
    (["--initial", "50|20|50"], "latent 20 not in 1..3 step 1"),
])
def test_bad_space_options_are_one_line_before_anything_is_created(table, tmp_path, monkeypatch, capsys, argv,
                                                                  message):
    monkeypatch.chdir(tmp_path)
    status, _, err = run(["search", *SMALL, "--dataset", str(table), "--strategy", "evolution", *argv], capsys)
    lines = [line for line in err.splitlines() if not line.startswith("evovae: note:")]
    assert status == 2 and len(lines) == 1 and message in lines[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_narrowed_space_from_options_and_a_settings_file_is_searched_journaled_and_resumed(table, tmp_path,
                                                                                            monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    settings = tmp_path / "space.toml"
    settings.write_text('[search]\nwidth-min = 8\nwidth-max = 64\nwidth-step = 8\nmax-layers = 2\n')
    status, _, err = run(["search", *SMALL, "--config", str(settings), "--dataset", str(table), "--min-layers",
                            "2", "--run-dir", "run"], capsys)
    assert status == 0, err
    notes = [line for line in err.splitlines() if line.startswith("evovae: note:")]
    assert notes == ["evovae: note: the data has 4 features: latent sizes 1..3 step 1, kept below the input "
                     "dimension (give --latent-max to choose)"]
    expected = {"min_layers": 2, "max_layers": 2, "width_min": 8, "width_max": 64, "width_step": 8,
                "latent_min": 1, "latent_max": 3, "latent_step": 1}
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["space"] == expected
    space = SearchSpace(**expected)
    assert len(result["evaluations"]) == 4 and all(space.contains(parse_genotype(e["genotype"]))
                                                   for e in result["evaluations"])
    # a resume takes the space from the journal and says the options given with it are ignored
    status, _, err = run(["search", "--resume", "run", "--in-process", "--generations", "3", "--width-max", "500",
                            "--latent-max", "50", "--log-level", "warning"], capsys)
    assert status == 0, err
    assert "--width-max, --latent-max are ignored" in err
    again = json.loads((tmp_path / "run" / "result.json").read_text())
    assert again["space"] == expected and len(again["evaluations"]) == 6
    assert all(space.contains(parse_genotype(e["genotype"])) for e in again["evaluations"])

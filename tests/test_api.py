"""The Python API (evovae/, docs/api.md): ``evovae.search`` on arrays, tensors and DataFrames held in memory -
resumable in its run directory, quiet, its refusals naming the parameter in Python's words - and ``Model``,
which takes raw data in the form it was trained on and applies the stored preprocessing."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import evovae
from evo.space import SearchSpace
from model_helpers import TABLE_COLUMNS, blob_images, image_model, people, table_model

SMALL = SearchSpace(max_layers=1, width_max=100)


def binary_rows(n: int = 300, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    prototypes = rng.random((4, d)) < 0.5
    return (prototypes[rng.integers(0, 4, n)] ^ (rng.random((n, d)) < 0.05)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ refusals

def refusal(**kwargs) -> evovae.OptionError:
    data = kwargs.pop("data", None)
    with pytest.raises(evovae.OptionError) as caught:
        evovae.search(binary_rows() if data is None else data, **kwargs)
    exc = caught.value
    assert "--" not in str(exc), str(exc)
    assert isinstance(exc, ValueError) and str(exc) == f"{exc.option}: {exc.message}"
    return exc


def test_every_refusal_names_the_parameter_in_python_words_and_creates_nothing(tmp_path):
    run_dir = tmp_path / "run"
    cases = [
        (dict(val_size=200), "val_size", "pass val_size=60 (at most 149)"),  # 300 rows, no test part of their own
        (dict(budget_epochs=0), "budget_epochs", ">= 1"),
        (dict(strategy="annealing"), "strategy", "tpe"),
        (dict(mode="asha", strategy="evolution", fidelities="3,1"), "fidelities", "increasing"),
        (dict(workers=-1), "workers", ">= 0"),
        (dict(threads=1.5), "threads", "integer"),
        (dict(epochs=0), "epochs", ">= 1"),
        (dict(initial=["5000|10|50"]), "initial", "outside the search space"),
        (dict(likelihood="gauss"), "likelihood", "bernoulli, gaussian"),
        (dict(columns=["a"]), "columns", "DataFrame"),
        (dict(data=np.arange(10.0)), "data", "reshape(-1, 1)"),
        (dict(data=np.array([[1.0, np.nan], [0.0, 1.0]])), "data", "NaN"),
        (dict(data=np.array([["a", "b"]])), "data", "numbers"),
        (dict(data=binary_rows() * 3, likelihood="bernoulli"), "likelihood", "likelihood='gaussian'"),
        (dict(data=tmp_path / "nowhere.npy"), "data", "no such file"),
        (dict(max_layers=2, space=SearchSpace()), "max_layers", "not both"),
        (dict(device="cuda:7"), "device", "cuda"),
        # a value of the wrong kind is named too, not a TypeError from inside
        (dict(image_size=28), "image_size", "(H, W)"),
        (dict(fidelities=3), "fidelities", "(1, 3, 9)"),
        (dict(initial="850|20|1000"), "initial", "a sequence of genotypes"),
        (dict(initial=[5]), "initial", "a sequence of genotypes"),
        (dict(cache=3), "cache", "a path"),
        (dict(on_report=5), "on_report", "a function"),
    ]
    table = tmp_path / "table.csv"
    table.write_text("a,b\n" + "".join(f"{i},{i % 7}\n" for i in range(300)))
    cases.append((dict(data=table, columns=["a", "c"]), "columns", "no column 'c'"))  # a file's too, not data
    for kwargs, option, words in cases:
        exc = refusal(run_dir=run_dir, **kwargs)
        assert exc.option == option and words in exc.message, (kwargs, str(exc))
        assert not run_dir.exists(), kwargs
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("mine")
    exc = refusal(run_dir=run_dir)
    assert exc.option == "run_dir" and "not empty" in exc.message
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]


def test_a_dataframe_is_checked_before_anything_is_written(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(people(50), columns=list(TABLE_COLUMNS)).assign(name=[f"p{i}" for i in range(50)])
    exc = refusal(data=frame, run_dir=tmp_path / "r")
    assert exc.option == "data" and "'name' is not numeric" in exc.message and "columns=" in exc.message
    exc = refusal(data=frame, columns=["height", "shoe"], run_dir=tmp_path / "r")
    assert exc.option == "columns" and "'shoe'" in exc.message
    gappy = frame.drop(columns="name")
    gappy.loc[7, "weight"] = None
    exc = refusal(data=gappy, run_dir=tmp_path / "r")
    assert exc.option == "data" and "'weight' has 1 missing" in exc.message and "row 7" in exc.message
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------ searching

@pytest.mark.slow  # a few searches of a few training epochs each
def test_an_array_search_is_written_once_resumes_and_exports(tmp_path):
    rows = binary_rows()
    settings = dict(budget_epochs=4, epochs=1, population=2, offspring=2, space=SMALL, seed=3)
    result = evovae.search(rows, run_dir=tmp_path / "run", **settings)
    assert result.stop_reason == "budget" and len(result.evaluations) == 4
    assert result.best is not None and result.best_loss == result.best.loss
    assert result.best_genotypes[0] == str(result.best.genotype)
    data = tmp_path / "run" / "data.npy"
    assert result.spec.dataset == str(data.absolute()) and result.spec.likelihood == "bernoulli"
    assert hashlib.sha256(data.read_bytes()).hexdigest() == result.spec.data_sha256
    assert np.array_equal(np.load(data), rows)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["stop_reason"] == "budget"

    again = evovae.search(torch.from_numpy(rows), run_dir=tmp_path / "run", **settings)  # the same data as a tensor
    assert again.summary["evaluated_now"] == 0 and again.best_genotypes == result.best_genotypes
    assert [e.loss for e in again.evaluations] == [e.loss for e in result.evaluations]

    exc = refusal(data=rows[:-1], run_dir=tmp_path / "run", **settings)
    assert exc.option == "run_dir" and "data (SHA-256)" in exc.message
    exc = refusal(data=rows, run_dir=tmp_path / "run", **{**settings, "seed": 4})
    assert exc.option == "run_dir" and "seed: 3 then, 4 now" in exc.message

    models = result.export(top=2, epochs=1)
    assert [m.genotype for m in models] == result.best_genotypes[:2]
    assert all(m.path == tmp_path / "run" / "models" / f"rank-{n}" for n, m in enumerate(models, 1))
    loaded = evovae.load_model(models[0].path)
    assert np.array_equal(loaded.encode(rows[:5]).mean, models[0].encode(rows[:5]).mean)


@pytest.mark.slow
def test_an_interrupted_search_resumes_to_the_search_an_uninterrupted_one_makes(tmp_path):
    settings = dict(strategy="evolution", generations=3, epochs=1, population=2, offspring=2, space=SMALL, seed=5)
    whole = evovae.search(binary_rows(), run_dir=tmp_path / "whole", **settings)

    def stop(report):
        if report.generation == 1:
            raise KeyboardInterrupt  # Ctrl-C in a notebook, after generation 1 was told

    with pytest.raises(KeyboardInterrupt):
        evovae.search(binary_rows(), run_dir=tmp_path / "cut", on_report=stop, **settings)
    assert not (tmp_path / "cut" / "result.json").exists()
    resumed = evovae.search(binary_rows(), run_dir=tmp_path / "cut", **settings)
    assert resumed.summary["evaluated_now"] < len(resumed.evaluations)
    assert [(str(e.genotype), e.loss) for e in resumed.population] == \
        [(str(e.genotype), e.loss) for e in whole.population]


@pytest.mark.slow
def test_a_dataframe_search_trains_a_table_model_in_its_own_units(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(people(500), columns=list(TABLE_COLUMNS)).assign(name="x")
    space = SearchSpace(max_layers=1, width_max=100, latent_min=1, latent_max=2, latent_step=1)
    result = evovae.search(frame, columns=list(TABLE_COLUMNS), budget_epochs=4, epochs=2, strategy="random",
                           population=2, offspring=2, space=space, run_dir=tmp_path / "run")
    assert result.spec.likelihood == "gaussian" and result.spec.columns == ",".join(TABLE_COLUMNS)
    written = pd.read_csv(tmp_path / "run" / "data.csv")
    assert list(written.columns) == list(TABLE_COLUMNS)
    assert np.array_equal(written.to_numpy(), frame[list(TABLE_COLUMNS)].to_numpy())  # repr: every float exact
    model = result.train_best(epochs=20)
    rows = model.reconstruct(frame)
    assert rows.shape == (500, 3) and abs(rows[:, 0].mean() - 170) < 5 and abs(rows[:, 2].mean() - 45) < 5


@pytest.mark.slow
def test_missing_values_in_a_dataframe_follow_the_missing_rule_and_the_latent_stays_below_the_columns(tmp_path):
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(people(300), columns=list(TABLE_COLUMNS))
    frame.loc[[3, 50, 51], "weight"] = None
    exc = refusal(data=frame, run_dir=tmp_path / "r")
    assert exc.option == "data" and "'weight' has 3 missing values" in exc.message and "missing='mean'" in exc.message
    settings = dict(budget_epochs=2, epochs=1, strategy="random", population=2, offspring=2, max_layers=1,
                    width_max=100)
    dropped = evovae.search(frame, missing="drop", run_dir=tmp_path / "drop", **settings)
    assert dropped.spec.missing == "drop" and dropped.spec.val_size == 59  # a fifth of the 297 complete rows
    space = dropped.config.space
    assert (space.latent_min, space.latent_max, space.latent_step) == (1, 2, 1)  # below the 3 columns
    assert ",".join(pd.read_csv(tmp_path / "drop" / "data.csv").columns) == ",".join(TABLE_COLUMNS)
    filled = evovae.search(frame, missing="mean", run_dir=tmp_path / "mean", latent_max=10, **settings)
    assert filled.config.space.latent_max == 10                                   # given: no cap
    model = filled.train_best(epochs=1)
    fill = model.info["data"]["missing"]["fill"]
    assert model.info["data"]["missing"]["rule"] == "mean" and abs(fill[1] - frame["weight"].mean()) < 3
    gappy = frame.loc[[3]]
    completed = gappy.fillna({"weight": fill[1]})
    assert np.allclose(model.encode(gappy).mean, model.encode(completed).mean, atol=1e-6)
    exc = refusal(data=frame, missing="sometimes", run_dir=tmp_path / "x")
    assert exc.option == "missing"


@pytest.mark.slow  # starts two worker processes
def test_local_workers_search_the_data_written_in_the_run_directory(tmp_path):
    settings = dict(budget_epochs=4, epochs=1, strategy="random", population=2, offspring=2, space=SMALL)
    result = evovae.search(binary_rows(), run_dir=tmp_path / "run", workers=2, **settings)
    assert result.stop_reason == "budget" and len(result.evaluations) == 4 and all(e.ok for e in result.evaluations)
    again = evovae.search(binary_rows(), run_dir=tmp_path / "run", **settings)  # resumed in this process
    assert again.summary["evaluated_now"] == 0


_QUIET_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import evovae
    from evo.space import SearchSpace
    rng = np.random.default_rng(0)
    rows = (rng.random((200, 8)) < 0.3).astype(np.float32)
    verbose = sys.argv[2] == "verbose"
    result = evovae.search(rows, budget_epochs=2, epochs=1, population=2, offspring=2,
                           space=SearchSpace(max_layers=1, width_max=100), run_dir=sys.argv[1], verbose=verbose)
    model = result.train_best(epochs=1, verbose=verbose)
    evovae.load_model(model.path).encode(rows)
""")


@pytest.mark.slow  # two processes that import torch and train
def test_the_library_prints_nothing_unless_asked(tmp_path):
    def run(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _QUIET_SCRIPT, str(tmp_path / mode), mode], capture_output=True,
                              text=True, timeout=240)

    quiet = run("quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "" and quiet.stderr == ""
    loud = run("verbose")
    assert loud.returncode == 0, loud.stderr
    assert "gen   0" in loud.stdout and "best" in loud.stdout                  # the progress lines, as the CLI's
    assert "search.stopped" in loud.stderr and "model.saved" in loud.stderr   # structlog at info, on stderr
    assert "train.epoch" not in loud.stdout


# ------------------------------------------------------------------------------------------------ the Model

@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"images": evovae.load_model(image_model(root)), "table": evovae.load_model(table_model(root)),
            "root": root}


def test_a_model_takes_pixels_in_any_of_their_forms_and_preprocesses_them(models):
    model = models["images"]
    images = blob_images(40, seed=9)
    assert model.input_shape == (6, 6) and model.likelihood == "bernoulli" and model.latent == 4
    codes = model.encode(images)
    assert codes.mean.shape == codes.log_var.shape == (40, 4)
    assert np.allclose(codes.var, np.exp(codes.log_var)) and np.allclose(codes.std ** 2, codes.var)
    mean, log_var = codes  # it unpacks
    with torch.no_grad():
        mu, logvar = model.vae.encode(torch.from_numpy(images.reshape(40, 36).astype(np.float32) / 255))
    assert np.allclose(mean, mu.numpy()) and np.allclose(log_var, logvar.numpy())
    for same in (images.astype(np.float32) / 255, images.reshape(40, 36), torch.from_numpy(images),
                 images[..., None].repeat(1, axis=-1).reshape(40, 6, 6)):
        assert np.allclose(model.encode(same).mean, mean, atol=1e-6)
    assert model.encode(images[0]).mean.shape == (1, 4)  # one example

    pictures = model.reconstruct(images)
    assert pictures.shape == (40, 6, 6) and pictures.min() >= 0 and pictures.max() <= 1
    assert model.decode(mean).shape == (40, 6, 6) and np.allclose(model.decode(mean), pictures, atol=1e-6)
    assert np.array_equal(model.sample(5, seed=2), model.sample(5, seed=2)) and model.sample(5).shape == (5, 6, 6)
    elbo, bound = model.elbo(images, seed=1), model.iw_bound(images, k=64, seed=1)
    assert elbo.shape == bound.shape == (40,) and np.array_equal(elbo, model.elbo(images, seed=1))
    assert (elbo < 0).all() and bound.mean() >= elbo.mean() - 0.5


def test_a_model_refuses_what_it_cannot_take_in_one_line(models):
    model = models["images"]
    cases = [
        (lambda: model.encode(np.zeros((3, 5, 5), np.uint8)), "x: examples of shape (5, 5); the model 50|4|50 was "
                                                              "trained on examples of shape (6, 6)"),
        (lambda: model.encode(np.full((2, 6, 6), 3.0)), "values run from 3 to 3"),
        (lambda: model.elbo(np.full((2, 36), np.nan)), "72 missing values (NaN) in 2 examples"),
        (lambda: model.elbo(np.full((2, 36), np.inf)), "infinite values"),
        (lambda: model.decode(np.zeros((2, 3))), "z: shape (2, 3)"),
        (lambda: model.sample(0), "n:"),
        (lambda: model.iw_bound(blob_images(2), k=0), "k:"),
        (lambda: model.encode(np.zeros((0, 6, 6))), "one or more examples"),
    ]
    for call, words in cases:
        with pytest.raises(evovae.InputError) as caught:
            call()
        assert words in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(evovae.ModelDirError, match="no such model directory"):
        evovae.load_model(models["root"] / "nowhere")


def test_a_table_model_takes_rows_in_their_own_units_by_column_name(models):
    pd = pytest.importorskip("pandas")
    model = models["table"]
    rows = people(30, seed=7)
    assert model.kind == "table" and model.columns == TABLE_COLUMNS and model.likelihood == "gaussian"
    mean, std = model.standardisation
    assert abs(mean[0] - 170) < 3 and abs(std[0] - 10) < 2
    codes = model.encode(rows)
    shuffled = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))[["age", "height", "weight"]].assign(note="-")
    assert np.allclose(model.encode(shuffled).mean, codes.mean, atol=1e-6)  # chosen by name, extras ignored
    with torch.no_grad():
        mu, _ = model.vae.encode(torch.from_numpy(((rows - mean) / std).astype(np.float32)))
    assert np.allclose(codes.mean, mu.numpy(), atol=1e-5)
    recon = model.reconstruct(shuffled)
    assert recon.shape == (30, 3) and abs(recon[:, 0].mean() - rows[:, 0].mean()) < 6  # cm again
    assert model.sample(4).shape == (4, 3)
    with pytest.raises(evovae.InputError, match="no column 'weight'; the model takes the columns height, weight, age"):
        model.encode(shuffled.drop(columns="weight"))
    with pytest.raises(evovae.InputError, match="rows of 2 values; the model takes rows of 3 columns"):
        model.encode(rows[:, :2])
    with pytest.raises(evovae.InputError, match="a table"):
        models["images"].encode(shuffled)


def test_missing_values_are_filled_as_training_filled_them_or_refused(models):
    import copy

    pd = pytest.importorskip("pandas")
    trained = models["table"]
    rows = people(6, seed=8)
    gappy = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    gappy.loc[[1, 4], "age"] = None
    with pytest.raises(evovae.InputError, match=r"2 missing values \(NaN\) in 2 examples \(the first in example 1\); "
                                                "the model was trained with the missing rule 'error'"):
        trained.encode(gappy)
    info = copy.deepcopy(trained.info)  # as model.json says after training with the missing rule 'mean'
    info["data"]["missing"] = {"rule": "mean", "fill": [170.0, 68.0, 45.0]}
    filling = evovae.Model(trained.vae, info)
    filled = rows.copy()
    filled[[1, 4], 2] = 45.0
    assert np.allclose(filling.encode(gappy).mean, trained.encode(filled).mean, atol=1e-6)

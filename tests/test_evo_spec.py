"""evo.spec: TrainSpec validation and round trip, and the content-derived task id."""
import json
import re

import pytest

from evo.genotype import parse_genotype
from evo.spec import DATASETS, TRAINER_VERSION, TrainSpec, task_id

G = parse_genotype("200,500|20|1000,650,50")


def test_defaults_follow_the_paper():
    spec = TrainSpec()
    assert spec.dataset == "fashion-mnist" and spec.epochs == 2 and spec.batch_size == 128 and spec.lr == 1e-3
    assert spec.trainer == TRAINER_VERSION
    assert {"mnist", "fashion-mnist"} <= set(DATASETS)


@pytest.mark.parametrize(
    "kwargs, piece",
    [
        (dict(dataset="imagenet"), "imagenet"),
        (dict(dataset="MNIST"), "MNIST"),
        (dict(epochs=0), "epochs"),
        (dict(epochs=-1), "epochs"),
        (dict(epochs=2.0), "epochs"),
        (dict(epochs=True), "epochs"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size="128"), "batch_size"),
        (dict(val_size=0), "val_size"),
        (dict(train_subset=-1), "train_subset"),
        (dict(lr=0), "lr"),
        (dict(lr=-1e-3), "lr"),
        (dict(lr=10), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(lr=float("inf")), "lr"),
        (dict(lr="0.001"), "lr"),
        (dict(seed=1.5), "seed"),
        (dict(seed=None), "seed"),
        (dict(split_seed="0"), "split_seed"),
        (dict(trainer=1.0), "trainer"),
    ],
)
def test_invalid_specs_raise_value_error_naming_the_field(kwargs, piece):
    with pytest.raises(ValueError) as info:
        TrainSpec(**kwargs)
    assert piece in str(info.value)


def test_valid_edge_values_are_accepted():
    for dataset in DATASETS:
        assert TrainSpec(dataset=dataset).dataset == dataset
    assert TrainSpec(epochs=1, batch_size=1, val_size=1, train_subset=0, lr=9.99, seed=-5).seed == -5


def test_bool_lr_is_refused():
    with pytest.raises(ValueError, match="lr must be a positive number"):
        TrainSpec(lr=True)


def test_to_dict_from_dict_round_trip():
    specs = [TrainSpec(), TrainSpec(dataset="mnist", epochs=5, batch_size=64, lr=3e-4, seed=9, train_subset=5000,
                                    val_size=2000, split_seed=4)]
    for spec in specs:
        data = spec.to_dict()
        assert set(data) == {"dataset", "epochs", "batch_size", "lr", "seed", "train_subset", "val_size",
                             "split_seed", "trainer"}
        assert TrainSpec.from_dict(data) == spec
        assert TrainSpec.from_dict(json.loads(json.dumps(data))) == spec
    assert TrainSpec.from_dict({}) == TrainSpec()
    assert TrainSpec.from_dict({"epochs": 5}).epochs == 5
    restored = TrainSpec.from_dict({"lr": 1})
    assert type(restored.lr) is float and restored.lr == 1.0


def test_from_dict_unknown_field_raises():
    with pytest.raises(ValueError) as info:
        TrainSpec.from_dict({**TrainSpec().to_dict(), "epoch": 3})
    assert "epoch" in str(info.value) and "unknown" in str(info.value)


def test_from_dict_validates():
    with pytest.raises(ValueError):
        TrainSpec.from_dict({"epochs": 0})


def test_replace():
    spec = TrainSpec()
    assert spec.replace(epochs=20) == TrainSpec(epochs=20)
    assert spec.epochs == 2                                    # frozen: replace builds a new one
    with pytest.raises(ValueError):
        spec.replace(colour="red")
    with pytest.raises(ValueError):
        spec.replace(dataset="imagenet")


def test_task_id_is_24_hex_chars_and_stable():
    spec = TrainSpec()
    first = task_id(G, spec)
    assert re.fullmatch(r"[0-9a-f]{24}", first)
    assert task_id(G, spec) == first
    assert task_id(parse_genotype(" 200, 500 | 20 | 1000,650,50 "), TrainSpec()) == first
    assert task_id(G, TrainSpec.from_dict(spec.to_dict())) == first


def test_task_id_changes_with_the_genotype_and_every_spec_field():
    base = TrainSpec()
    ids = {task_id(G, base)}
    for text in ("200,500|30|1000,650,50", "500,200|20|1000,650,50", "200,500|20|1000,650"):
        ids.add(task_id(parse_genotype(text), base))
    changes = dict(dataset="mnist", epochs=5, batch_size=64, lr=2e-3, seed=1, train_subset=100, val_size=5000,
                   split_seed=1, trainer=TRAINER_VERSION + 1)
    assert set(changes) == set(base.to_dict())                 # every field is varied
    for name, value in changes.items():
        ids.add(task_id(G, base.replace(**{name: value})))
    assert len(ids) == 1 + 3 + len(changes)


def test_equal_specs_have_equal_task_ids():
    by_int = TrainSpec(lr=1)
    by_float = TrainSpec(lr=1.0)
    assert by_int == by_float
    assert task_id(G, by_int) == task_id(G, TrainSpec.from_dict(by_int.to_dict()))
    assert task_id(G, by_int) == task_id(G, by_float)


# ---------------------------------------------------------------- fields added for own data and test reports

SHA = "ab" * 32
OWN = dict(dataset="/data/digits.npz", data_sha256=SHA)


def test_built_in_task_ids_and_wire_form_are_those_of_the_first_version():
    """Pinned from the spec before likelihood, data_sha256, columns, image_size, report_test, iw_samples."""
    assert task_id(G, TrainSpec()) == "92c7330ac1b13e1d995e9040"
    assert (task_id(G, TrainSpec(dataset="synthetic", epochs=1, val_size=200, train_subset=500))
            == "2022cedd64d809ba716835ee")
    assert TrainSpec().canonical == ('{"batch_size": 128, "dataset": "fashion-mnist", "epochs": 2, "lr": 0.001, '
                                     '"seed": 0, "split_seed": 0, "train_subset": 0, "trainer": 1, "val_size": 10000}')
    explicit = TrainSpec.from_dict({**TrainSpec().to_dict(), "likelihood": "bernoulli", "report_test": False,
                                    "iw_samples": 0, "data_sha256": "", "columns": "", "image_size": ""})
    assert explicit == TrainSpec() and explicit.to_dict() == TrainSpec().to_dict()


def test_new_fields_travel_when_set_and_round_trip():
    spec = TrainSpec(**OWN, columns=" a, b ", likelihood="gaussian", report_test=True, iw_samples=50,
                     val_size=100)
    data = spec.to_dict()
    assert {k: data[k] for k in ("likelihood", "data_sha256", "columns", "report_test", "iw_samples")} == {
        "likelihood": "gaussian", "data_sha256": SHA, "columns": "a,b", "report_test": True, "iw_samples": 50}
    assert "image_size" not in data                      # still at its default
    assert TrainSpec.from_dict(json.loads(json.dumps(data))) == spec
    retrain = TrainSpec().replace(epochs=20, report_test=True, iw_samples=5000)
    assert retrain.to_dict()["iw_samples"] == 5000 and task_id(G, retrain) != task_id(G, TrainSpec(epochs=20))


def test_own_data_is_named_by_its_fingerprint_not_its_path():
    here, there = TrainSpec(**OWN), TrainSpec(dataset="/mnt/copy/digits.npz", data_sha256=SHA)
    assert task_id(G, here) == task_id(G, there)           # the same content moved: the same task
    assert task_id(G, here) != task_id(G, TrainSpec(dataset=OWN["dataset"], data_sha256="cd" * 32))
    assert here.to_dict()["dataset"] == "/data/digits.npz"  # the wire still says where the head found it
    for change in (dict(columns="a"), dict(image_size="8,8"), dict(likelihood="gaussian")):
        assert task_id(G, here.replace(**change)) != task_id(G, here), change


@pytest.mark.parametrize(
    "kwargs, piece",
    [
        (dict(dataset="/data/x.npz"), "data_sha256"),                      # own data needs its fingerprint
        (dict(dataset="/data/x.npz", data_sha256="abc"), "data_sha256"),
        (dict(dataset="/data/x.npz", data_sha256=SHA.upper()), "data_sha256"),
        (dict(dataset="mnist", data_sha256=SHA), "only apply to data of your own"),
        (dict(dataset="mnist", columns="a"), "columns"),
        (dict(dataset=""), "dataset"),
        (dict(**OWN, columns="a,,b"), "empty name"),
        (dict(**OWN, columns="a,a"), "more than once"),
        (dict(**OWN, image_size="28"), "image_size"),
        (dict(**OWN, image_size="0,28"), "image_size"),
        (dict(likelihood="poisson"), "likelihood"),
        (dict(report_test=1), "report_test"),
        (dict(iw_samples=-1), "iw_samples"),
        (dict(iw_samples=10), "needs report_test"),
        (dict(iw_samples=5.0, report_test=True), "iw_samples"),
    ],
)
def test_invalid_new_fields_raise_value_error_naming_them(kwargs, piece):
    with pytest.raises(ValueError, match=re.escape(piece)):
        TrainSpec(**kwargs)


def test_image_size_is_normalised():
    assert TrainSpec(**OWN, image_size=" 28 x 14 ").image_size == "28,14"
    assert TrainSpec(**OWN, image_size="28,14").image_hw == (28, 14)

"""evo.measurement.Measurement: the one typed record of a training run's figures - what the wire carries
(``to_dict``), what the head reads back (``from_dict``), lenient where a worker says more or less, strict where
a known figure has the wrong type; non-finite figures are absent, curves end at their first non-finite point."""
import json
import math
from dataclasses import FrozenInstanceError, fields

import numpy as np
import pytest

from evo.measurement import Measurement

FULL = Measurement(loss=95.5, recon=70.0, kl=25.5, epochs=3, resumed_from=1, seconds=12.25, curve=(130.0, 101.0, 95.5),
                   train_curve=(140.0, 105.0, 97.0), params=123_456, device="cuda:0", test_loss=96.0,
                   test_recon=71.0, test_kl=25.0, test_iw_loss=94.0, fake=True)

NUMBERS = ("loss", "recon", "kl", "test_loss", "test_recon", "test_kl", "test_iw_loss")


def test_an_empty_measurement_has_nothing_measured():
    m = Measurement()
    assert all(getattr(m, key) is None for key in NUMBERS)
    assert (m.epochs, m.seconds, m.curve, m.train_curve, m.params, m.device, m.fake) == (0, 0.0, (), (), 0, "",
                                                                                          False)
    assert m.test == {} and not any(value is None for value in m.to_dict().values())
    assert Measurement.from_dict({}) == m == Measurement.from_dict(m.to_dict())


def test_to_dict_and_from_dict_round_trip():
    data = FULL.to_dict()
    assert data == {"loss": 95.5, "recon": 70.0, "kl": 25.5, "epochs": 3, "resumed_from": 1, "seconds": 12.25,
                    "curve": [130.0, 101.0, 95.5], "train_curve": [140.0, 105.0, 97.0], "params": 123_456,
                    "device": "cuda:0", "test_loss": 96.0, "test_recon": 71.0, "test_kl": 25.0,
                    "test_iw_loss": 94.0, "fake": True}
    assert set(data) == {f.name for f in fields(Measurement)}           # every field has its flat key
    assert Measurement.from_dict(data) == FULL
    assert Measurement.from_dict(json.loads(json.dumps(data, allow_nan=False))) == FULL   # through JSON
    assert isinstance(Measurement.from_dict(data).curve, tuple)


@pytest.mark.parametrize("measurement", [Measurement(), Measurement(loss=1.0), Measurement(epochs=2, seconds=0.5),
                                         Measurement(curve=(3.0,), device="cpu"),
                                         Measurement(test_iw_loss=80.0), Measurement(fake=True)])
def test_what_was_not_measured_is_left_out_and_comes_back_absent(measurement):
    data = measurement.to_dict()
    assert all(value is not None for value in data.values())
    assert data.get("fake", True) is True and data.get("device", "x") != ""   # no false flag, no empty device
    assert Measurement.from_dict(data) == measurement


def test_from_dict_ignores_keys_it_does_not_know():
    data = {**FULL.to_dict(), "gpu_temperature": 71, "worker_note": "hello", "nested": {"a": [1, 2]}, 3: "x"}
    assert Measurement.from_dict(data) == FULL
    assert Measurement.from_dict({"loss": 95.0, "test": {"loss": 1.0}}).test == {}   # a nested mapping: unknown
    assert not hasattr(Measurement.from_dict({"gpu_temperature": 71}), "gpu_temperature")


def test_from_dict_reads_the_nested_test_form():
    m = Measurement.from_dict({"loss": 95.0, "test.loss": 96.0, "test.recon": 70.0, "test.kl": 26.0,
                               "test.iw_loss": 94.5, "test.other": 1.0})
    assert (m.test_loss, m.test_recon, m.test_kl, m.test_iw_loss) == (96.0, 70.0, 26.0, 94.5)
    assert m.test == {"loss": 96.0, "recon": 70.0, "kl": 26.0, "iw_loss": 94.5}
    assert "test.loss" not in m.to_dict() and m.to_dict()["test_loss"] == 96.0
    # where both forms are given, the flat one (what to_dict makes) is read
    assert Measurement.from_dict({"test_loss": 1.0, "test.loss": 2.0}).test_loss == 1.0
    assert Measurement.from_dict({"test.loss": 2.0, "test_loss": 1.0}).test_loss == 1.0


def test_test_holds_only_the_measured_test_figures():
    assert FULL.test == {"loss": 96.0, "recon": 71.0, "kl": 25.0, "iw_loss": 94.0}
    assert Measurement(loss=1.0, test_loss=2.0).test == {"loss": 2.0}
    assert Measurement(test_loss=float("nan"), test_kl=3.0).test == {"kl": 3.0}


def test_with_test_sets_the_figures_test_names_and_keeps_the_rest():
    measured = Measurement(loss=1.0, epochs=3, test_kl=9.0).with_test({"loss": 2.0, "recon": 1.5, "iw_loss": 1.9})
    assert measured.test == {"loss": 2.0, "recon": 1.5, "kl": 9.0, "iw_loss": 1.9}
    assert (measured.loss, measured.epochs) == (1.0, 3)
    assert Measurement().with_test({"loss": float("inf")}).test == {}  # checked as the constructor checks
    with pytest.raises(TypeError, match="test_loss"):
        Measurement().with_test({"test_loss": 2.0})


@pytest.mark.parametrize("key, value", [
    *[(key, bad) for key in ("loss", "test_loss", "test_iw_loss") for bad in ("95.5", True, [1.0], {"x": 1})],
    ("seconds", "3"), ("seconds", False),
    ("epochs", 2.5), ("epochs", -1), ("epochs", True), ("epochs", "2"),
    ("params", 1.0), ("params", -5), ("params", "many"),
    ("curve", "1,2,3"), ("curve", 5.0), ("curve", ["1.0"]), ("curve", [1.0, True]),
    ("train_curve", b"\x00"), ("train_curve", 7),
    ("device", 0), ("device", ["cpu"]),
])
def test_a_known_key_of_the_wrong_type_is_refused_by_name(key, value):
    with pytest.raises(ValueError, match=f"'{key}'"):
        Measurement.from_dict({"loss": 1.0, key: value} if key != "loss" else {key: value})
    with pytest.raises(ValueError, match=f"'{key}'"):
        Measurement(**{key: value})


def test_the_nested_test_form_is_checked_by_the_name_it_is_read_as():
    with pytest.raises(ValueError, match="'test_loss'"):
        Measurement.from_dict({"test.loss": "96"})


@pytest.mark.parametrize("not_a_mapping", [None, [("loss", 1.0)], "loss=1.0", 95.5])
def test_from_dict_refuses_what_is_not_a_mapping(not_a_mapping):
    with pytest.raises(ValueError, match="a measurement is a mapping"):
        Measurement.from_dict(not_a_mapping)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), np.float64("nan")])
def test_non_finite_figures_are_dropped(bad):
    m = Measurement.from_dict(dict.fromkeys(NUMBERS, bad) | {"seconds": bad, "params": 10})
    assert all(getattr(m, key) is None for key in NUMBERS)
    assert m.seconds == 0.0 and m.params == 10 and m.test == {}
    data = m.to_dict()
    assert not set(NUMBERS) & set(data) and data["params"] == 10 and Measurement.from_dict(data) == m
    json.dumps(data, allow_nan=False)                                   # JSON-safe: no NaN reaches a journal


def test_numbers_of_any_real_type_are_floats_and_counts_ints():
    m = Measurement.from_dict({"loss": np.float32(95.5), "recon": 70, "kl": np.int64(25), "epochs": np.int64(3),
                               "params": np.int32(9), "seconds": 2})
    assert (m.loss, m.recon, m.kl, m.epochs, m.params, m.seconds) == (95.5, 70.0, 25.0, 3, 9, 2.0)
    assert [type(x) for x in (m.loss, m.recon, m.kl, m.seconds)] == [float] * 4
    assert type(m.epochs) is int and type(m.params) is int
    json.dumps(m.to_dict(), allow_nan=False)


def test_seconds_are_zero_unless_positive():
    assert Measurement(seconds=-1.0).seconds == 0.0 and Measurement(seconds=0).seconds == 0.0
    assert Measurement(seconds=None).seconds == 0.0 and Measurement(seconds=0.25).seconds == 0.25


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_curve_is_cut_at_its_first_non_finite_point(bad):
    m = Measurement.from_dict({"curve": [130.0, 101.0, bad, 95.0], "train_curve": [bad, 1.0]})
    assert m.curve == (130.0, 101.0)                                   # a diverged run keeps its finite epochs
    assert m.train_curve == ()
    assert Measurement(curve=[1.0, 2.0, None, 3.0]).curve == (1.0, 2.0)  # a null point ends it too
    assert Measurement(curve=np.array([3.0, 2.0, bad])).curve == (3.0, 2.0)
    assert Measurement.from_dict(m.to_dict()) == m
    assert m.to_dict()["curve"] == [130.0, 101.0] and not m.to_dict().get("train_curve")
    json.dumps(m.to_dict(), allow_nan=False)


def test_a_curve_of_ints_or_a_generator_is_a_tuple_of_floats():
    m = Measurement(curve=(x for x in (3, 2, 1)), train_curve=[np.float32(1.5)])
    assert m.curve == (3.0, 2.0, 1.0) and all(type(x) is float for x in m.curve)
    assert m.train_curve == (1.5,) and type(m.train_curve[0]) is float


def test_a_measurement_is_frozen_and_hashable():
    with pytest.raises(FrozenInstanceError):
        FULL.loss = 1.0
    assert hash(FULL) == hash(Measurement.from_dict(FULL.to_dict()))
    assert Measurement.from_dict({**FULL.to_dict(), "loss": 95.0}) != FULL


def test_fake_is_a_flag():
    assert Measurement.from_dict({"fake": 1}).fake is True and Measurement(fake=0).fake is False
    assert "fake" not in Measurement(fake=False).to_dict()
    assert math.isclose(Measurement.from_dict({"loss": 1e-300}).loss, 1e-300)

"""Codec: round trips, one test per kind of malformed input, and a seeded fuzz."""

from __future__ import annotations

import math
import random

import msgpack
import pytest

from transport.codec import decode, encode
from transport.protocol import (
    MAX_ERROR_LEN,
    MAX_GENOTYPE_LEN,
    PROTOCOL_VERSION,
    Heartbeat,
    ProtocolError,
    Ready,
    Result,
    Task,
)

READY = Ready("host-1-abc", 1)
TASK = Task(
    "g850.20.1000-e2-s0",
    1,
    "850|20|1000",
    {"epochs": 2, "lr": 0.001, "dataset": "fashion-mnist", "seed": 0, "cuda": True, "note": None},
    3600.0,
)
HEARTBEAT = Heartbeat("host-1-abc", TASK.task_id, 1, 0.25)
RESULT = Result(
    "host-1-abc",
    TASK.task_id,
    1,
    True,
    {"val_loss": 242.9, "bce": 230.1, "kl": 12.8, "epochs": 2, "curve": [260.0, 242.9], "gpu": "H100", "nan": None},
    "",
)
ALL = [READY, TASK, HEARTBEAT, RESULT]


def wire(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def as_map(msg) -> dict:
    return msgpack.unpackb(encode(msg), raw=False)


def expect_error(data: bytes, *fragments: str) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode(data)
    text = str(info.value)
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in {text!r}"
    return info.value


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("msg", ALL, ids=lambda m: type(m).__name__)
def test_round_trip(msg):
    data = encode(msg)
    assert isinstance(data, bytes)
    back = decode(data)
    assert back == msg
    assert type(back) is type(msg)


def test_wire_form_is_a_versioned_map():
    assert as_map(READY) == {"v": PROTOCOL_VERSION, "type": "ready", "worker_id": "host-1-abc", "slots": 1}
    assert as_map(HEARTBEAT)["type"] == "heartbeat"
    assert set(as_map(TASK)) == {"v", "type", "task_id", "attempt", "genotype", "spec", "lease_s"}
    assert set(as_map(RESULT)) == {"v", "type", "worker_id", "task_id", "attempt", "ok", "metrics", "error"}


def test_round_trip_edge_values():
    long_id = "a" * 128
    task = Task(long_id, 1000, "x" * MAX_GENOTYPE_LEN, {}, 1)  # int lease accepted, stored as float
    assert task.lease_s == 1.0 and isinstance(task.lease_s, float)
    assert decode(encode(task)) == task
    result = Result(long_id, long_id, 3, False, {}, "E" * MAX_ERROR_LEN)
    assert decode(encode(result)) == result
    beat = Heartbeat("w", "t", 1, 1)
    assert decode(encode(beat)).progress == 1.0
    # ints in a float list become floats
    assert Result("w", "t", 1, True, {"c": [1, 2.5]}).metrics == {"c": [1.0, 2.5]}


def test_messages_are_frozen_and_copy_their_dicts():
    spec = {"epochs": 2}
    task = Task("t", 1, "g", spec, 1.0)
    spec["epochs"] = 5
    assert task.spec == {"epochs": 2}
    with pytest.raises(AttributeError):
        task.attempt = 2  # type: ignore[misc]
    assert hash(task) == hash(Task("t", 1, "g", {"other": 1}, 1.0))  # dict fields left out of the hash


def test_decode_accepts_bytearray_and_memoryview():
    data = encode(RESULT)
    assert decode(bytearray(data)) == RESULT
    assert decode(memoryview(data)) == RESULT


# ------------------------------------------------------------------ construction errors


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda: Ready(""), "worker_id"),
        (lambda: Ready("has space"), "[A-Za-z0-9_.:-]"),
        (lambda: Ready("w", 0), "slots"),
        (lambda: Ready("w", True), "must be an int"),
        (lambda: Task("t" * 129, 1, "g", {}, 1.0), "task_id"),
        (lambda: Task("t", 0, "g", {}, 1.0), "attempt"),
        (lambda: Task("t", 1, "", {}, 1.0), "genotype"),
        (lambda: Task("t", 1, "g", {}, 0.0), "lease_s' must be > 0"),
        (lambda: Task("t", 1, "g", {}, math.inf), "finite"),
        (lambda: Task("t", 1, "g", {"a": [1]}, 1.0), "spec' entry 'a'"),
        (lambda: Task("t", 1, "g", {"a": math.nan}, 1.0), "NaN"),
        (lambda: Task("t", 1, "g", {1: 2}, 1.0), "bad key"),
        (lambda: Task("t", 1, "g", {"e": 2**63}, 1.0), "64-bit"),
        (lambda: Heartbeat("w", "t", 1, 1.5), "progress"),
        (lambda: Heartbeat("w", "t", 1, math.nan), "finite"),
        (lambda: Result("w", "t", 1, 1, {}), "'ok' must be a bool"),
        (lambda: Result("w", "t", 1, True, {"loss": math.nan}), "NaN"),
        (lambda: Result("w", "t", 1, True, {"c": [1.0, math.inf]}), "entry 'c' item 1"),
        (lambda: Result("w", "t", 1, True, {"c": [True]}), "must be a number"),
        (lambda: Result("w", "t", 1, True, {"d": {"x": 1}}), "metrics' entry 'd'"),
        (lambda: Result("w", "t", 1, False, {}, "e" * (MAX_ERROR_LEN + 1)), "error"),
    ],
)
def test_invalid_messages_cannot_be_built(build, fragment):
    with pytest.raises(ProtocolError) as info:
        build()
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_encode_rechecks_a_mutated_dict():
    task = Task("t", 1, "g", {"epochs": 2}, 1.0)
    task.spec["bad"] = object()
    with pytest.raises(ProtocolError, match="spec"):
        encode(task)


def test_encode_rejects_non_messages():
    with pytest.raises(TypeError):
        encode({"v": 1, "type": "ready"})


# ------------------------------------------------------------------ malformed input, one kind each


def test_not_msgpack():
    expect_error(b"\xc1", "not valid msgpack")


def test_empty_payload():
    expect_error(b"", "empty payload")


def test_truncated():
    data = encode(TASK)
    expect_error(data[: len(data) // 2], "not valid msgpack")


def test_trailing_bytes():
    expect_error(encode(READY) + b"\x00", "trailing bytes")


def test_not_a_map():
    expect_error(wire([1, 2, 3]), "must be a msgpack map", "list")


def test_non_str_keys():
    expect_error(wire({1: 2}), "not valid msgpack")  # strict_map_key refuses it
    expect_error(wire({b"v": 1}), "keys must be str")


def test_invalid_utf8():
    # a str (fixstr) holding bytes that are not UTF-8
    expect_error(b"\x81\xa1v\xa2\xff\xfe", "UTF-8")


def test_missing_version():
    expect_error(wire({"type": "ready", "worker_id": "w", "slots": 1}), "missing key 'v'")


def test_wrong_version():
    expect_error(wire({**as_map(READY), "v": 2}), "version 2 is not supported", "speaks version 1")


def test_version_must_be_int():
    expect_error(wire({**as_map(READY), "v": True}), "'v' must be an int")
    expect_error(wire({**as_map(READY), "v": "1"}), "'v' must be an int")


def test_missing_type():
    m = as_map(READY)
    del m["type"]
    expect_error(wire(m), "missing key 'type'")


def test_unknown_type():
    expect_error(wire({**as_map(READY), "type": "cancel"}), "unknown message type 'cancel'")


def test_type_must_be_str():
    expect_error(wire({**as_map(READY), "type": 3}), "'type' must be a str")


def test_missing_field():
    m = as_map(RESULT)
    del m["error"]
    expect_error(wire(m), "result: missing field(s) 'error'")


def test_unknown_field_rejected():
    expect_error(wire({**as_map(HEARTBEAT), "gpu": 0}), "heartbeat: unknown field(s) 'gpu'")


def test_bool_is_not_int():
    expect_error(wire({**as_map(TASK), "attempt": True}), "task: field 'attempt' must be an int", "bool")


def test_int_is_not_bool():
    expect_error(wire({**as_map(RESULT), "ok": 1}), "'ok' must be a bool")


def test_wrong_field_type():
    expect_error(wire({**as_map(TASK), "genotype": 850}), "'genotype' must be a str")
    expect_error(wire({**as_map(TASK), "spec": [1]}), "'spec' must be a map")
    expect_error(wire({**as_map(RESULT), "metrics": {"x": b"raw"}}), "metrics' entry 'x'")


def test_nan_rejected_on_the_wire():
    expect_error(wire({**as_map(HEARTBEAT), "progress": math.nan}), "finite")
    expect_error(wire({**as_map(RESULT), "metrics": {"val_loss": math.inf}}), "NaN and inf are not allowed")


def test_bad_task_id():
    expect_error(wire({**as_map(TASK), "task_id": "a/b"}), "task_id", "[A-Za-z0-9_.:-]")
    expect_error(wire({**as_map(TASK), "task_id": ""}), "task_id")
    expect_error(wire({**as_map(TASK), "task_id": "x" * 129}), "task_id")


def test_attempt_range():
    expect_error(wire({**as_map(TASK), "attempt": 0}), "'attempt' must be an int in [1,")
    expect_error(wire({**as_map(HEARTBEAT), "attempt": -1}), "attempt")


def test_progress_range():
    expect_error(wire({**as_map(HEARTBEAT), "progress": 1.01}), "must be in [0, 1]")
    expect_error(wire({**as_map(HEARTBEAT), "progress": -0.1}), "must be in [0, 1]")


def test_string_limits():
    expect_error(wire({**as_map(TASK), "genotype": "x" * (MAX_GENOTYPE_LEN + 1)}), "genotype", "characters long")
    expect_error(wire({**as_map(TASK), "spec": {"k" * 65: 1}}), "bad key")


def test_ext_types_rejected():
    expect_error(wire({**as_map(TASK), "spec": {"t": msgpack.ExtType(5, b"x")}}), "spec' entry 't'")
    timestamp = b"\xd6\xff\x00\x00\x00\x01"
    expect_error(b"\x81\xa1v" + timestamp, "'v' must be an int")


def test_deep_nesting():
    expect_error(b"\x91" * 100_000 + b"\xc0", "not valid msgpack")


def test_size_limit():
    big = Result("w", "t", 1, True, {"c": [0.5] * 60_000})
    data = encode(big)
    assert decode(data) == big
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024 bytes"):
        decode(data, max_bytes=1024)


@pytest.mark.parametrize("value", ["text", 5, None, [b"x"], object()])
def test_non_bytes_input(value):
    with pytest.raises(ProtocolError, match="expected bytes"):
        decode(value)  # type: ignore[arg-type]


# ------------------------------------------------------------------ fuzz


def _random_obj(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 3 or roll < 0.45:
        return rng.choice(
            [
                None,
                True,
                False,
                rng.randint(-(2**63), 2**64 - 1),
                rng.choice([0.0, -1.5, 1e308, math.nan, math.inf, rng.random()]),
                "".join(rng.choice("ab:.-_/ é\x00") for _ in range(rng.randint(0, 12))),
                rng.randbytes(rng.randint(0, 8)),
                msgpack.ExtType(rng.randint(0, 127), rng.randbytes(3)),
            ]
        )
    if roll < 0.7:
        return [_random_obj(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = ["v", "type", "worker_id", "slots", "task_id", "attempt", "genotype", "spec", "lease_s",
            "progress", "ok", "metrics", "error", "x"]
    return {rng.choice(keys): _random_obj(rng, depth + 1) for _ in range(rng.randint(0, 8))}


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if op < 0.4 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op < 0.7:
            del buf[rng.randrange(len(buf) + 1):]
        elif op < 0.85:
            buf.insert(rng.randrange(len(buf) + 1), rng.randrange(256))
        else:
            start = rng.randrange(len(buf) + 1)
            buf[start:start] = buf[start:start + rng.randint(1, 16)]
    return bytes(buf)


def _field_swap(rng: random.Random) -> bytes:
    m = as_map(rng.choice(ALL))
    key = rng.choice(list(m))
    m[key] = _random_obj(rng, 2)
    return wire(m)


def test_fuzz_decode_raises_only_protocol_error():
    rng = random.Random(20200714)
    valid = [encode(m) for m in ALL]
    decoded = rejected = 0
    for i in range(4000):
        kind = i % 4
        if kind == 0:
            data = rng.randbytes(rng.randint(0, 64))
        elif kind == 1:
            data = _mutate(rng, rng.choice(valid))
        elif kind == 2:
            data = _field_swap(rng)
        else:
            try:
                data = wire(_random_obj(rng))
            except (OverflowError, ValueError, TypeError):
                continue
        try:
            msg = decode(data)
        except ProtocolError as exc:
            assert str(exc)
            rejected += 1
        else:  # whatever decodes must be a whole, valid message that encodes back
            assert decode(encode(msg)) == msg
            decoded += 1
    assert rejected > 3000


# ------------------------------------------------------------------ worker-side helper


def test_wire_metrics_bends_train_results_into_shape():
    from transport.protocol import wire_metrics

    raw = {
        "genotype": "850|20|1000",
        "ok": False,
        "loss": math.nan,
        "curve": (260.0, 250.5, math.inf),
        "train_curve": [270.0],
        "params": 1234,
        "test": {"loss": 240.0, "recon": 230.0, "kl": 10.0},
        "empty": {},
    }
    metrics = wire_metrics(raw)
    assert metrics == {
        "genotype": "850|20|1000",
        "ok": False,
        "loss": None,
        "curve": [260.0, 250.5],
        "train_curve": [270.0],
        "params": 1234,
        "test.loss": 240.0,
        "test.recon": 230.0,
        "test.kl": 10.0,
    }
    result = Result("w", "t", 1, False, metrics, "training diverged in epoch 3")
    assert decode(encode(result)) == result

"""Wire messages of the evovae task protocol (version 1).

Four message types travel between the head node and the GPU workers:

* :class:`Ready`     worker -> ventilator  "I am idle, give me a task" (credit; also the idle heartbeat)
* :class:`Task`      ventilator -> worker  one genotype to train and evaluate
* :class:`Heartbeat` worker -> sink        "still working on (task_id, attempt)", with progress
* :class:`Result`    worker -> sink        the outcome of one attempt

Every message is a frozen dataclass that validates itself on construction, so an
invalid message can be neither built nor decoded: both raise :class:`ProtocolError`
with a sentence that says which field was wrong and why.  The rules are written out
for implementers of other workers in ``docs/protocol.md``.

Value rules (the same on both ends of the wire):

* identifiers (``task_id``, ``worker_id``): 1-128 characters of ``[A-Za-z0-9_.:-]``;
* ``bool`` is never accepted where an ``int`` or ``float`` is expected;
* floats must be finite: NaN and +-inf are rejected everywhere (use ``None`` in
  metrics for "no value", and report a diverged training run as ``ok=False``);
* float fields accept an ``int`` and store it as ``float``;
* ints must fit in a signed 64-bit integer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "PROTOCOL_VERSION",
    "ProtocolError",
    "Ready",
    "Task",
    "Heartbeat",
    "Result",
    "Message",
    "MESSAGE_TYPES",
    "ID_PATTERN",
    "MAX_ID_LEN",
    "MAX_GENOTYPE_LEN",
    "MAX_KEY_LEN",
    "MAX_SPEC_ITEMS",
    "MAX_SPEC_STR_LEN",
    "MAX_METRICS_ITEMS",
    "MAX_METRIC_STR_LEN",
    "MAX_METRIC_LIST_LEN",
    "MAX_ERROR_LEN",
    "MAX_SLOTS",
    "MAX_ATTEMPT",
    "wire_metrics",
]

PROTOCOL_VERSION = 1

ID_PATTERN = r"[A-Za-z0-9_.:-]{1,128}"
MAX_ID_LEN = 128
MAX_GENOTYPE_LEN = 4096
MAX_KEY_LEN = 64
MAX_SPEC_ITEMS = 64
MAX_SPEC_STR_LEN = 4096
MAX_METRICS_ITEMS = 256
MAX_METRIC_STR_LEN = 4096
MAX_METRIC_LIST_LEN = 65536
MAX_ERROR_LEN = 16384
MAX_SLOTS = 64
MAX_ATTEMPT = 1000

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_ID_RE = re.compile(ID_PATTERN)
_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class ProtocolError(ValueError):
    """A message (or a value meant for one) breaks the wire protocol.

    The message text says what was wrong, e.g.
    ``"task: field 'attempt' must be an int >= 1, got 0"``.
    """


# --------------------------------------------------------------------------- checks
# Each helper returns the (possibly normalised) value or raises ProtocolError.
# `where` is "<message type>: field '<name>'" so every error names its field.


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _check_id(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a str, got {_describe(value)}")
    if not _ID_RE.fullmatch(value):
        raise ProtocolError(
            f"{where} must be 1-{MAX_ID_LEN} characters of [A-Za-z0-9_.:-], got {_describe(value)}"
        )
    return value


def _check_str(where: str, value: Any, *, min_len: int, max_len: int) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{where} must be a str, got {_describe(value)}")
    if not min_len <= len(value) <= max_len:
        raise ProtocolError(
            f"{where} must be {min_len}-{max_len} characters long, got {len(value)}"
        )
    return value


def _check_int(where: str, value: Any, *, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(f"{where} must be an int, got {_describe(value)}")
    if not lo <= value <= hi:
        raise ProtocolError(f"{where} must be an int in [{lo}, {hi}], got {value}")
    return int(value)


def _check_float(where: str, value: Any) -> float:
    """A finite number (int or float, never bool), returned as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"{where} must be a number, got {_describe(value)}")
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ProtocolError(f"{where} is out of the 64-bit range: {value}")
        return float(value)
    if not math.isfinite(value):
        raise ProtocolError(f"{where} must be finite (NaN and inf are not allowed), got {value!r}")
    return float(value)


def _check_scalar(where: str, value: Any, *, max_str: int) -> Any:
    """str | int | float | bool | None, with ints in int64 and finite floats."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise ProtocolError(f"{where} is out of the 64-bit int range: {value}")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ProtocolError(
                f"{where} must be finite (NaN and inf are not allowed; use None), got {value!r}"
            )
        return float(value)
    if isinstance(value, str):
        if len(value) > max_str:
            raise ProtocolError(f"{where} is a str longer than {max_str} characters ({len(value)})")
        return value
    return _NOT_SCALAR


_NOT_SCALAR = object()


def _check_map(where: str, value: Any, *, max_items: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be a map (dict), got {_describe(value)}")
    if len(value) > max_items:
        raise ProtocolError(f"{where} has {len(value)} entries, at most {max_items} are allowed")
    for key in value:
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise ProtocolError(
                f"{where} has a bad key {_describe(key)}: keys must be 1-{MAX_KEY_LEN} "
                "characters of [A-Za-z0-9_.:-]"
            )
    return value


def _check_spec(where: str, value: Any) -> dict[str, Any]:
    _check_map(where, value, max_items=MAX_SPEC_ITEMS)
    out = {}
    for key, item in value.items():
        checked = _check_scalar(f"{where} entry {key!r}", item, max_str=MAX_SPEC_STR_LEN)
        if checked is _NOT_SCALAR:
            raise ProtocolError(
                f"{where} entry {key!r} must be str, int, float, bool or None, got {_describe(item)}"
            )
        out[key] = checked
    return out


def _check_metrics(where: str, value: Any) -> dict[str, Any]:
    _check_map(where, value, max_items=MAX_METRICS_ITEMS)
    out = {}
    for key, item in value.items():
        here = f"{where} entry {key!r}"
        if isinstance(item, (list, tuple)):
            if len(item) > MAX_METRIC_LIST_LEN:
                raise ProtocolError(
                    f"{here} is a list of {len(item)} numbers, at most {MAX_METRIC_LIST_LEN} are allowed"
                )
            out[key] = [_check_float(f"{here} item {i}", x) for i, x in enumerate(item)]
            continue
        checked = _check_scalar(here, item, max_str=MAX_METRIC_STR_LEN)
        if checked is _NOT_SCALAR:
            raise ProtocolError(
                f"{here} must be int, float, str, bool, None or a list of numbers, got {_describe(item)}"
            )
        out[key] = checked
    return out


def _check_bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{where} must be a bool, got {_describe(value)}")
    return value


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Ready:
    """worker -> ventilator: "I am idle, give me a task".

    Sent when the worker becomes idle and again every heartbeat interval while it stays
    idle (idle heartbeat / credit refresh).  Idempotent: many Ready collapse into one
    credit.  ``slots`` is how many tasks the worker could take; this broker version
    hands out at most one task per worker_id whatever it says.
    """

    worker_id: str
    slots: int = 1

    TYPE = "ready"

    def __post_init__(self) -> None:
        _check_id("ready: field 'worker_id'", self.worker_id)
        _set(self, "slots", _check_int("ready: field 'slots'", self.slots, lo=1, hi=MAX_SLOTS))


@dataclass(frozen=True)
class Task:
    """ventilator -> worker: train and evaluate one genotype.

    ``spec`` is a flat map str -> str | int | float | bool | None (epochs, seed,
    dataset, ...).  ``lease_s`` is how long the head waits for this attempt at most.
    """

    task_id: str
    attempt: int
    genotype: str
    spec: dict[str, Any] = field(hash=False)
    lease_s: float

    TYPE = "task"

    def __post_init__(self) -> None:
        _check_id("task: field 'task_id'", self.task_id)
        _set(self, "attempt", _check_int("task: field 'attempt'", self.attempt, lo=1, hi=MAX_ATTEMPT))
        _check_str("task: field 'genotype'", self.genotype, min_len=1, max_len=MAX_GENOTYPE_LEN)
        _set(self, "spec", _check_spec("task: field 'spec'", self.spec))
        lease = _check_float("task: field 'lease_s'", self.lease_s)
        if lease <= 0:
            raise ProtocolError(f"task: field 'lease_s' must be > 0, got {lease!r}")
        _set(self, "lease_s", lease)


@dataclass(frozen=True)
class Heartbeat:
    """worker -> sink: still working on (task_id, attempt); progress in [0, 1]."""

    worker_id: str
    task_id: str
    attempt: int
    progress: float

    TYPE = "heartbeat"

    def __post_init__(self) -> None:
        _check_id("heartbeat: field 'worker_id'", self.worker_id)
        _check_id("heartbeat: field 'task_id'", self.task_id)
        _set(self, "attempt", _check_int("heartbeat: field 'attempt'", self.attempt, lo=1, hi=MAX_ATTEMPT))
        progress = _check_float("heartbeat: field 'progress'", self.progress)
        if not 0.0 <= progress <= 1.0:
            raise ProtocolError(f"heartbeat: field 'progress' must be in [0, 1], got {progress!r}")
        _set(self, "progress", progress)


@dataclass(frozen=True)
class Result:
    """worker -> sink: the outcome of one attempt.

    ``ok=False`` means the worker ran the task and it failed in a way a retry will not
    fix (NaN loss, out of memory, bad genotype); the broker treats it as final.
    ``metrics`` maps str -> int | float | str | bool | None | list of floats.
    """

    worker_id: str
    task_id: str
    attempt: int
    ok: bool
    metrics: dict[str, Any] = field(hash=False)
    error: str = ""

    TYPE = "result"

    def __post_init__(self) -> None:
        _check_id("result: field 'worker_id'", self.worker_id)
        _check_id("result: field 'task_id'", self.task_id)
        _set(self, "attempt", _check_int("result: field 'attempt'", self.attempt, lo=1, hi=MAX_ATTEMPT))
        _check_bool("result: field 'ok'", self.ok)
        _set(self, "metrics", _check_metrics("result: field 'metrics'", self.metrics))
        _check_str("result: field 'error'", self.error, min_len=0, max_len=MAX_ERROR_LEN)


Message = Ready | Task | Heartbeat | Result

#: wire type name -> message class
MESSAGE_TYPES: dict[str, type] = {cls.TYPE: cls for cls in (Ready, Task, Heartbeat, Result)}


def field_names(cls: type) -> tuple[str, ...]:
    """The wire field names of a message class, in declaration order."""
    return tuple(f.name for f in fields(cls))


def wire_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Bend a worker's measurements into the shape ``Result.metrics`` accepts.

    For the worker side (e.g. a raw worker's own figures; gpuworker sends
    ``TrainResult.measurement.to_dict()``, flat already), not used by
    the codec, which stays strict.  It

    * flattens nested mappings into dotted keys: ``{"test": {"loss": 1.0}}`` becomes
      ``{"test.loss": 1.0}`` (an empty nested mapping disappears);
    * turns tuples into lists;
    * turns a non-finite float (NaN, +-inf) into None;
    * cuts a list of numbers before its first non-finite element (a diverged
      training curve keeps its finite epochs; the Result's ``error`` says why).

    Anything else is passed through, so the Result constructor still rejects values
    the protocol cannot carry (ProtocolError).
    """
    out: dict[str, Any] = {}

    def put(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                put(f"{prefix}.{key}" if prefix else str(key), item)
            return
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        elif isinstance(value, (list, tuple)):
            kept = []
            for item in value:
                if isinstance(item, float) and not math.isfinite(item):
                    break
                kept.append(item)
            value = kept
        out[prefix] = value

    for key, value in metrics.items():
        put(str(key), value)
    return out

"""What one training run measured: :class:`Measurement`, the one typed record of a result's figures.

The trainer (gpuworker) makes it, the wire carries ``to_dict()`` (the flat keys of protocol v1's
``Result.metrics``: ``loss``, ``recon``, ``kl``, ``curve``, ... and ``test_loss`` ...), the head reads it back
with ``from_dict`` and keeps it inside each :class:`~evo.evaluation.Evaluation`; journals, caches, reports and
experiments read its fields, never string keys. Losses are negative ELBOs in nats per example.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

__all__ = ["Measurement"]


def _number(key: str, value: Any) -> float | None:
    """A finite float, or None for a missing or non-finite value (a diverged run's loss is not a number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"measurement field {key!r} must be a number or null, got {type(value).__name__}")
    value = float(value)
    return value if math.isfinite(value) else None


def _count(key: str, value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"measurement field {key!r} must be an integer >= 0, got {value!r}")
    return int(value)


def _curve(key: str, value: Any) -> tuple[float, ...]:
    """A curve as floats, cut before its first non-finite point (a diverged run keeps its finite epochs)."""
    if value is None:
        return ()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"measurement field {key!r} must be a list of numbers, got {type(value).__name__}")
    out: list[float] = []
    for item in value:
        number = _number(key, item)
        if number is None:
            break
        out.append(number)
    return tuple(out)


def _seconds(value: Any) -> float:
    number = _number("seconds", value)
    return number if number is not None and number > 0 else 0.0


@dataclass(frozen=True)
class Measurement:
    """The figures of one training run (all optional: a failed run has some, a lost one none).

    ``loss``, ``recon``, ``kl``: the validation negative ELBO after the last epoch and its two parts.
    ``epochs``: the epochs the model has trained (a diverged run stops early), counted from epoch 0;
    ``resumed_from``: the epochs of the checkpoint a continued run started from (0: from scratch), so this run
    trained ``epochs - resumed_from``.
    ``seconds``: training time (the epochs and their validation, not the test measurement).
    ``curve``, ``train_curve``: validation and training loss per epoch. ``params``: the model's parameters.
    ``device``: where it trained. ``test_*``: the test split, when measured (``test_iw_loss``: the negative
    importance-weighted bound). ``fake``: made by a fake worker (tests, benchmarks), not by training.
    """

    loss: float | None = None
    recon: float | None = None
    kl: float | None = None
    epochs: int = 0
    resumed_from: int = 0
    seconds: float = 0.0
    curve: tuple[float, ...] = ()
    train_curve: tuple[float, ...] = ()
    params: int = 0
    device: str = ""
    test_loss: float | None = None
    test_recon: float | None = None
    test_kl: float | None = None
    test_iw_loss: float | None = None
    fake: bool = False

    def __post_init__(self) -> None:
        for key in ("loss", "recon", "kl", "test_loss", "test_recon", "test_kl", "test_iw_loss"):
            object.__setattr__(self, key, _number(key, getattr(self, key)))
        for key in ("curve", "train_curve"):
            object.__setattr__(self, key, _curve(key, getattr(self, key)))
        object.__setattr__(self, "epochs", _count("epochs", self.epochs))
        object.__setattr__(self, "resumed_from", _count("resumed_from", self.resumed_from))
        object.__setattr__(self, "params", _count("params", self.params))
        object.__setattr__(self, "seconds", _seconds(self.seconds))
        if not isinstance(self.device, str):
            raise ValueError(f"measurement field 'device' must be text, got {type(self.device).__name__}")
        object.__setattr__(self, "fake", bool(self.fake))

    @property
    def test(self) -> dict[str, float]:
        """The test figures that were measured, by their short names (``loss``, ``recon``, ``kl``, ``iw_loss``)."""
        found = {"loss": self.test_loss, "recon": self.test_recon, "kl": self.test_kl, "iw_loss": self.test_iw_loss}
        return {key: value for key, value in found.items() if value is not None}

    def with_test(self, figures: Mapping[str, float]) -> Measurement:
        """This measurement with the test figures ``figures``, by their short names as :attr:`test` gives them
        (``loss``, ``recon``, ``kl``, ``iw_loss``; the ones not given are kept). TypeError for another name."""
        unknown = sorted(set(figures) - {"loss", "recon", "kl", "iw_loss"})
        if unknown:
            raise TypeError(f"not a test figure: {', '.join(unknown)}")
        return replace(self, test_loss=figures.get("loss", self.test_loss),
                       test_recon=figures.get("recon", self.test_recon), test_kl=figures.get("kl", self.test_kl),
                       test_iw_loss=figures.get("iw_loss", self.test_iw_loss))

    def to_dict(self) -> dict[str, Any]:
        """Flat, msgpack- and JSON-friendly values: the keys of protocol v1's ``Result.metrics`` (a figure that
        was not measured, None, is left out, as are ``fake`` and ``device`` when unset; curves are lists)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name in ("fake", "device", "resumed_from") and not value):
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        """The inverse of ``to_dict``, lenient where a worker may say more or less: keys it does not know are
        ignored (a raw worker may report its own), a missing figure is absent, a non-finite one is absent.
        ValueError for a known key of the wrong type. Reads the nested ``test.loss`` form too (what
        ``transport.wire_metrics`` makes of a nested mapping)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"a measurement is a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for key, value in data.items():
            if isinstance(key, str) and key.startswith("test.") and f"test_{key[5:]}" in known:
                values.setdefault(f"test_{key[5:]}", value)
        return cls(**values)

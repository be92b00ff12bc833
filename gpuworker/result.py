"""What one training run reports: :class:`TrainResult` (torch-free, so a fake worker needs no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

from evo.measurement import Measurement

__all__ = ["TrainResult"]


@dataclass(frozen=True)
class TrainResult:
    """``genotype`` (text) trained: ``ok``, its figures (``measurement``: losses in nats per example, curves,
    epochs trained, seconds, test figures when measured), and ``error``, why not when not ``ok`` (diverged,
    out of memory, a runtime error)."""

    genotype: str
    ok: bool
    measurement: Measurement = field(default_factory=Measurement)
    error: str = ""

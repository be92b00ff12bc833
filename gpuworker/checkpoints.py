"""Checkpoints that let a promoted candidate continue instead of training again from scratch.

Training is prefix-stable: a run of E2 epochs passes through exactly the state a run of E1 < E2 epochs ends
in (the same spec, seed and data). A :class:`CheckpointStore` keeps that state - the model's weights, Adam's
moments, the global and the shuffling RNG states, the curves so far - under a key of the genotype and the
spec without its epochs, one file per epoch count. A task at E2 epochs that finds a checkpoint at E1 < E2
loads it and trains E2 - E1 epochs; its result is bit for bit the one a from-scratch run gives on the same
device (tests/test_gpuworker_checkpoints.py). A worker without the checkpoint (another node, a store that
was cleared) trains from scratch and gets the same result: workers stay stateless for correctness, the store
only saves compute. Files are written to a temporary name and renamed, so a killed worker leaves no half
checkpoint; a checkpoint that cannot be read is ignored (and removed) and the run starts from scratch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import torch

from evo.genotype import Genotype
from evo.spec import TrainSpec, prefix_id

__all__ = ["Checkpoint", "CheckpointStore"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Checkpoint:
    """The training state after ``epochs`` epochs."""

    epochs: int
    state: dict[str, Any]


class CheckpointStore:
    """Checkpoints under ``root/KEY/EPOCHS.pt`` (KEY: the genotype and the spec, epochs left out), at most
    ``max_bytes`` in all: past it, the oldest are removed (a promotion that finds none trains from scratch)."""

    #: the default bound: about 200 checkpoints of a 1000-wide, 5-layer VAE (weights and Adam's moments)
    MAX_BYTES = 4 << 30

    def __init__(self, root: str | Path, max_bytes: int = MAX_BYTES) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes

    @staticmethod
    def key(genotype: Genotype, spec: TrainSpec) -> str:
        """The genotype and the spec without its epochs: evo.spec.prefix_id."""
        return prefix_id(genotype, spec)

    def _dir(self, genotype: Genotype, spec: TrainSpec) -> Path:
        return self.root / self.key(genotype, spec)

    def latest_before(self, genotype: Genotype, spec: TrainSpec, device: torch.device) -> Checkpoint | None:
        """The checkpoint with the most epochs below ``spec.epochs``, if any can be read."""
        directory = self._dir(genotype, spec)
        if not directory.is_dir():
            return None
        found = sorted((int(p.stem), p) for p in directory.glob("*.pt") if p.stem.isdigit())
        for epochs, path in reversed(found):
            if epochs >= spec.epochs:
                continue
            try:
                state = torch.load(path, map_location=device, weights_only=True)
            except Exception as exc:  # unreadable (a disk error, a foreign file): start from scratch
                log.warning("checkpoint.unreadable", path=str(path), error=f"{type(exc).__name__}: {exc}")
                path.unlink(missing_ok=True)
                continue
            return Checkpoint(epochs, state)
        return None

    def save(self, genotype: Genotype, spec: TrainSpec, checkpoint: Checkpoint) -> None:
        """Keep ``checkpoint`` (atomically); the ones with fewer epochs are superseded and removed. A store
        that cannot be written (a full disk) is logged and skipped: it only saves compute."""
        directory = self._dir(genotype, spec)
        path = directory / f"{checkpoint.epochs}.pt"
        partial = directory / f".{checkpoint.epochs}.{os.getpid()}.partial"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint.state, partial)
            os.replace(partial, path)
        except OSError as exc:
            try:
                partial.unlink(missing_ok=True)
            except OSError:
                pass  # the directory itself could not be made
            log.warning("checkpoint.not_saved", path=str(path), error=exc.strerror or str(exc))
            return
        for older in directory.glob("*.pt"):
            if older.stem.isdigit() and int(older.stem) < checkpoint.epochs:
                older.unlink(missing_ok=True)
        self._bound()

    def _bound(self) -> None:
        """Remove the oldest checkpoints while the store holds more than ``max_bytes``."""
        files = []
        for path in self.root.glob("*/*.pt"):
            try:
                info = path.stat()
            except OSError:
                continue  # removed meanwhile (another worker sharing the store)
            files.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

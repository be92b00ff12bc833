"""What a worker does with a task: train a VAE, or (for tests and benchmarks) fake it.

An evaluator is ``evaluator(genotype, spec, progress) -> TrainResult``: ``ok``, the
:class:`~evo.measurement.Measurement` (``loss``: the validation negative ELBO in nats
per example) and the error when not ok.
Only :func:`torch_evaluator` imports torch, and only when it is built, so a
fake worker starts in a fraction of a second.
"""
from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

import structlog

from evo.genotype import Genotype
from evo.measurement import Measurement
from evo.spec import TrainSpec, prefix_id

from .result import TrainResult

__all__ = ["Evaluator", "Interrupted", "WorkerUnfit", "fake_evaluator", "fake_loss", "torch_evaluator"]

log = structlog.get_logger(__name__)

Progress = Callable[[float], None]
Evaluator = Callable[[Genotype, TrainSpec, Progress], TrainResult]


class Interrupted(Exception):
    """Raised inside an evaluation when the worker was asked to stop."""


class WorkerUnfit(Exception):
    """This worker cannot evaluate anything (e.g. its node lacks the data set):
    the task is not the problem, so no result is sent and the head re-sends it."""


def torch_evaluator(device: str | None = None, data_root: str | None = None, download: bool = False,
                    stop: threading.Event | None = None, checkpoints: str | None = None) -> Evaluator:
    """Train and validate the VAE for real (CUDA when present, else CPU); with ``checkpoints`` (a directory),
    promoted candidates continue from the checkpoints kept there (gpuworker/checkpoints.py)."""
    from .checkpoints import CheckpointStore
    from .data import DataError
    from .train import evaluate

    store = CheckpointStore(checkpoints) if checkpoints else None

    def run(genotype: Genotype, spec: TrainSpec, progress: Progress) -> TrainResult:
        def report(fraction: float) -> None:
            if stop is not None and stop.is_set():
                raise Interrupted("worker stopping")
            progress(fraction)

        try:
            return evaluate(genotype, spec, device=device, data_root=data_root, download=download,
                            progress=report, checkpoints=store)
        except DataError as exc:
            raise WorkerUnfit(str(exc)) from None

    return run


def _fake_resume(checkpoints: str | None, genotype: Genotype, spec: TrainSpec) -> int:
    """The most epochs below ``spec.epochs`` a fake checkpoint marks for this genotype and spec (0: none)."""
    if not checkpoints:
        return 0
    mark = Path(checkpoints) / prefix_id(genotype, spec)
    done = [int(p.stem) for p in mark.glob("*.pt") if p.stem.isdigit()] if mark.is_dir() else []
    return max((e for e in done if e < spec.epochs), default=0)


def _fake_mark(path: Path) -> None:
    """Mark a fake checkpoint; one that cannot be written (a full or read-only disk) is logged and skipped, as
    the real store does (gpuworker/checkpoints.py): it only saves compute, and is no failure of the genotype."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError as exc:
        log.warning("checkpoint.not_saved", path=str(path), error=exc.strerror or str(exc))


def _unit(genotype: Genotype, salt: str) -> float:
    """A number in (0, 1] fixed by the genotype: reproducible fake randomness."""
    digest = hashlib.sha256(f"{salt}:{genotype}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") + 1) / 2**64


def fake_loss(genotype: Genotype, epochs: int = 2) -> float:
    """A cheap, deterministic stand-in for a validation loss, smooth in the genotype, falling with the epochs
    trained (deeper networks learn more slowly, so a low fidelity ranks them worse than a high one); at 2
    epochs it is ``100 + sum of widths / 100 + latent / 10``."""
    layers = len(genotype.encoder) + len(genotype.decoder)
    slow = 40.0 * (1 + layers / 5) * (1 / epochs - 1 / 2)
    return 100.0 + sum(genotype.encoder) / 100 + sum(genotype.decoder) / 100 + genotype.latent / 10 + slow


def fake_evaluator(sleep_s: float = 0.0, durations: str = "fixed", poison: Collection[str] = (),
                   stop: threading.Event | None = None, per_epoch: bool = False,
                   checkpoints: str | None = None) -> Evaluator:
    """A worker that computes :func:`fake_loss` after sleeping.

    ``durations``: ``fixed`` sleeps ``sleep_s``; ``pareto`` sleeps ``sleep_s``
    times a Pareto(alpha=1.5) draw fixed by the genotype (heavy-tailed, capped
    at 50x). ``per_epoch``: the sleep is per epoch asked (a 9-epoch task takes nine
    times a 1-epoch one), as real training does. ``checkpoints``: a directory where
    the fake worker marks the epochs it "trained" of each genotype, so a promotion
    continues as with the real trainer (sleeps and reports only the epochs after the
    mark: ``resumed_from``). A genotype in ``poison`` kills the worker process
    (SIGKILL), as a genotype that crashes the GPU driver would.
    """
    if durations not in ("fixed", "pareto"):
        raise ValueError(f"durations must be fixed or pareto, got {durations!r}")
    poisoned = set(poison)

    def run(genotype: Genotype, spec: TrainSpec, progress: Progress) -> TrainResult:
        if str(genotype) in poisoned:
            os.kill(os.getpid(), signal.SIGKILL)
        resumed = _fake_resume(checkpoints, genotype, spec)
        duration = sleep_s * ((spec.epochs - resumed) if per_epoch else 1)
        if durations == "pareto":
            duration *= min(50.0, _unit(genotype, "duration") ** (-1 / 1.5))
        started = time.perf_counter()
        end = started + duration
        waiter = stop or threading.Event()
        while (now := time.perf_counter()) < end:  # one wait per quarter second: precise, and stoppable
            progress((now - started) / duration)
            if waiter.wait(min(0.25, end - now)):
                raise Interrupted("worker stopping")
        loss = fake_loss(genotype, spec.epochs)
        curve = tuple(fake_loss(genotype, epoch) for epoch in range(1, spec.epochs + 1))
        if checkpoints:
            _fake_mark(Path(checkpoints) / prefix_id(genotype, spec) / f"{spec.epochs}.pt")
        return TrainResult(str(genotype), True, Measurement(
            loss=loss, recon=loss - 10.0, kl=10.0, curve=curve, seconds=time.perf_counter() - started,
            epochs=spec.epochs, resumed_from=resumed, fake=True))

    return run

"""Training in the head's own process (``evovae search --in-process``, ``evovae.search(..., workers=0)``):
gpuworker's trainer behind the head's :class:`~evo.head.evaluators.InProcessEvaluator`, promotions continued
from the run's checkpoint store, or results told in the order N simulated workers would deliver them."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gpuworker.result import TrainResult

    from ..genotype import Genotype
    from ..head.evaluators import InProcessEvaluator, SimulatedEvaluator
    from ..spec import TrainSpec

__all__ = ["in_process_evaluator"]


def in_process_evaluator(checkpoints: Path | None, *, device: str | None = None, threads: int | None = None,
                         data_root: str | None = None, download: bool = False,
                         simulate_workers: int = 0) -> InProcessEvaluator | SimulatedEvaluator:
    """The trainer in this process. ``checkpoints``: the run's checkpoint store (promotions continue from it;
    None: every task from scratch). ``threads``: torch's threads (None leaves them as they are, 0 the default
    for this machine). ``simulate_workers`` N > 0: results come in the order N workers would deliver them."""
    from gpuworker.checkpoints import CheckpointStore
    from gpuworker.train import evaluate, set_threads

    from ..head.evaluators import InProcessEvaluator, SimulatedEvaluator

    if threads is not None:
        set_threads(threads or None)
    store = CheckpointStore(checkpoints) if checkpoints is not None else None

    def train(genotype: Genotype, task_spec: TrainSpec) -> TrainResult:
        return evaluate(genotype, task_spec, device=device, data_root=data_root, download=download,
                        checkpoints=store)

    if simulate_workers:
        return SimulatedEvaluator(train, simulate_workers)
    return InProcessEvaluator(train)

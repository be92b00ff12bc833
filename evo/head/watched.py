"""An evaluator watched: any :class:`~evo.head.tasks.AsyncEvaluator`, with a callback after every poll (what
finished, often nothing), so a live display follows the results and samples the workers while the head waits,
from the head's own thread."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from .tasks import AsyncEvaluator, Finished, Task

__all__ = ["WatchedEvaluator"]


class WatchedEvaluator:
    """``inner``, calling ``polled(finished)`` after each of its polls."""

    def __init__(self, inner: AsyncEvaluator, polled: Callable[[list[Finished]], None]) -> None:
        self.inner = inner
        self.polled = polled

    @property
    def pending(self) -> int:
        return self.inner.pending

    def submit(self, tasks: Sequence[Task]) -> None:
        self.inner.submit(tasks)

    def poll(self, timeout_s: float) -> list[Finished]:
        finished = self.inner.poll(timeout_s)
        self.polled(finished)
        return finished

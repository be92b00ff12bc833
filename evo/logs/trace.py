"""``evovae logs trace``: every record about one task (or one genotype's tasks), in time order.

Time order across processes is only as good as their clocks (and the head logs ``task.dispatched``
once the send went through, a moment after the worker may already have logged ``task.received``),
so a worker's record of an attempt is never shown before the head's dispatch of that attempt.
"""
from __future__ import annotations

from .reading import Logs, Record

__all__ = ["MIN_PREFIX", "trace"]

#: The shortest task-id prefix that is looked up (a shorter one matches nothing).
MIN_PREFIX = 6


def trace(logs: Logs, query: str) -> list[Record]:
    """Every record about one task, in time order.

    ``query`` is a task id, a unique prefix of one (:data:`MIN_PREFIX` characters or more), or a
    genotype (``850|20|1000``: the lines of every task of that genotype).
    """
    ids = {r.get("task_id") for r in logs.records if isinstance(r.get("task_id"), str)}
    if "|" in query:
        wanted = {r.get("task_id") for r in logs.records if r.get("genotype") == query} - {None}
    elif query in ids:
        wanted = {query}
    elif len(query) >= MIN_PREFIX:
        wanted = {tid for tid in ids if tid.startswith(query)}
    else:
        wanted = set()
    return _causal([r for r in logs.records if r.get("task_id") in wanted])


def _causal(records: list[Record]) -> list[Record]:
    """``records`` in time order, each worker record of an attempt after the head dispatched it."""
    sent = {(r.get("task_id"), r.get("attempt")): r.time for r in records
            if r.role != "worker" and r.event == "task.dispatched"}  # the head: a search's, an experiment's

    def key(r: Record) -> tuple[float, int, int]:
        at = sent.get((r.get("task_id"), r.get("attempt"))) if r.role == "worker" else None
        if at is not None and r.time <= at:
            return at, 1, r.order  # just after the dispatch it answers
        return r.time, 0, r.order

    return sorted(records, key=key)

"""``evovae logs trace``: every record about one task (or one genotype's tasks), in time order."""
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
    return [r for r in logs.records if r.get("task_id") in wanted]

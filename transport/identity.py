"""Results bound to identity: which sender may speak for a worker id or about a task.

With CURVE (``bind=True``) the identity of a sender is the public key its connection
authenticated with, and

* a Result or Heartbeat about a task is accepted only from a key that was handed that
  task (any of its attempts), whether the task is still in flight or already completed or
  given up (a result for a finished task from its holder is a duplicate; from any other key
  it is forged);
* a worker id belongs to the key of its first Ready until the worker is dropped: a Ready,
  Heartbeat or Result claiming that id from another key does not touch it.

A message that breaks these rules is dropped, counted (``identity_mismatches``) and logged
as the security event ``security.identity_mismatch`` with the key, the claimed worker id,
the peer address and the state of the task (rate-limited per key and message type). In plain
mode (``bind=False``) nothing is authenticated, so the worker id is the identity, as before:
heartbeats count only from the worker running the attempt, and any Result completes a pending
task.

Pure: no sockets, no clock (``now`` is passed in).
"""

from __future__ import annotations

import structlog

from transport.outcomes import BrokerStats, Sender
from transport.throttle import RateLimiter

__all__ = ["Identities"]

log = structlog.get_logger(__name__)


class Identities:
    """The identity rules above, for one broker."""

    def __init__(self, bind: bool, stats: BrokerStats) -> None:
        self.bind = bind
        self.stats = stats
        self._limit = RateLimiter(per_key=5, total=20, window_s=1.0)

    def may_claim(self, worker_id: str, registered: str | None, sender: Sender, now: float) -> bool:
        """May ``sender`` send a Ready as ``worker_id``, registered to key ``registered``?"""
        if not self.bind or registered == sender.key:
            return True
        self._mismatch(sender, worker_id, now, message="ready", task_id=None, task_state=None,
                       reason="this worker id belongs to another key")
        return False

    def speaks_for(self, registered: str | None, sender: Sender) -> bool:
        """Does a sink message from ``sender`` keep a worker registered to ``registered`` alive?"""
        return not self.bind or registered == sender.key

    def may_report(self, holders: set[str | None], sender: Sender, worker_id: str, task_id: str, message: str,
                   now: float, *, task_state: str) -> bool:
        """May ``sender`` send a Result or Heartbeat about a task handed to ``holders``? ``task_state``:
        ``queued``, ``running`` or ``orphaned`` (in flight), ``completed`` or ``failed`` (given up)."""
        if not self.bind or sender.key in holders:
            return True
        if not holders:
            reason = "task not handed out by this head yet"
        elif task_state == "completed":
            reason = "task already completed: it was handed to another key"
        elif task_state == "failed":
            reason = "task already given up: it was handed to another key"
        else:
            reason = "task handed to another key"
        self._mismatch(sender, worker_id, now, message=message, task_id=task_id, task_state=task_state,
                       reason=reason)
        return False

    def _mismatch(self, sender: Sender, worker_id: str, now: float, *, message: str, **fields: object) -> None:
        self.stats.identity_mismatches += 1
        if self._limit.allow((sender.key, message), now):
            log.warning("security.identity_mismatch", key=sender.key, worker_id=worker_id, address=sender.address,
                        message=message, mismatches=self.stats.identity_mismatches, **fields)

    def flush(self, now: float, *, force: bool = False) -> None:
        """Log what the rate limit held back (one line per key and message type)."""
        for held, count in self._limit.summary(now, force=force):
            key, message = held if isinstance(held, tuple) else (held, None)  # ("others", N) past the busiest
            log.warning("security.identity_mismatch.suppressed", key=key, message=message, count=count)

    def next_flush(self) -> float:
        return self._limit.next_summary()

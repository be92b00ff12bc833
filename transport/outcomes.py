"""What the broker reports and hands out: :class:`Done` and :class:`Failed` outcomes, the
:class:`Dispatch` of a task to a worker, and the :class:`BrokerStats` counters. Values
only (frozen dataclasses, and the counters): no sockets, no clock."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from transport.protocol import Result

__all__ = ["BrokerStats", "Dispatch", "Done", "Failed", "PLAIN", "Sender"]


@dataclass(frozen=True)
class Done:
    """A task finished: the first Result received for it (``result.ok`` may be False).
    ``peer_key``: the CURVE public key (Z85 text) that sent it; None in plain mode."""

    task_id: str
    result: Result
    peer_key: str | None = None


@dataclass(frozen=True)
class Sender:
    """Who a message came from, as the head's sockets saw it: the CURVE public key (Z85
    text; None in plain mode) and the peer's address."""

    key: str | None = None
    address: str = "?"


PLAIN = Sender()  # a message in plain mode, from an address nobody asked for


@dataclass(frozen=True)
class Failed:
    """The broker gave up on a task: ``attempts`` attempts were lost; ``reason`` names the
    cause of each (lease over, worker silent, worker asked for work without a result)."""

    task_id: str
    attempts: int
    reason: str


@dataclass(frozen=True)
class Dispatch:
    """A hand-out to make: send the task to ``identity``, then report how it went."""

    task_id: str
    attempt: int
    genotype: str
    spec: dict[str, Any] = dataclasses.field(hash=False)
    lease_s: float
    worker_id: str
    identity: bytes

    def wire(self) -> dict[str, Any]:
        """The Task message's fields (validated at submit: pack them without re-checking)."""
        return {"task_id": self.task_id, "attempt": self.attempt, "genotype": self.genotype,
                "spec": self.spec, "lease_s": self.lease_s}


@dataclass
class BrokerStats:
    """Counters since the broker started (all ints)."""

    submitted: int = 0
    dispatched: int = 0  # Task messages sent (first attempts and resends)
    completed: int = 0  # Done outcomes (ok or not)
    task_errors: int = 0  # Done outcomes with result.ok False
    resends: int = 0  # attempts re-queued after a lost attempt
    duplicates: int = 0  # results for tasks already done (late attempt, replay, duplicate)
    late_results: int = 0  # results for tasks that had already Failed
    unknown_results: int = 0  # results for task ids this broker never had
    failures: int = 0  # Failed outcomes
    bad_frames: int = 0  # frames rejected (shape, msgpack, schema, wrong socket)
    heartbeats: int = 0  # heartbeats applied to a running attempt
    stale_heartbeats: int = 0  # heartbeats for attempts not running (ignored)
    stale_readies: int = 0  # Ready messages on a connection the worker has replaced (ignored)
    workers_seen: int = 0  # distinct worker ids ever seen
    workers_lost: int = 0  # times a worker was dropped for silence or an unreachable socket
    handshake_failures: int = 0  # CURVE only: connections refused at the handshake (plaintext, wrong keys, not allowed)
    identity_mismatches: int = 0  # CURVE only: messages about a task or worker id from a key not handed it (dropped)
    revoked_messages: int = 0  # CURVE only: messages from a key removed from the allow-list (dropped)
    connections_refused: int = 0  # connections closed at once: over the cap per peer address, or of a revoked key
    accept_failures: int = 0  # connections the head could not accept (out of file descriptors)

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

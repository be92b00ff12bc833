"""ZeroMQ + msgpack transport between the evovae head node and its GPU workers.

Imports only the standard library, zmq, msgpack and structlog (never torch, never evo).
The wire protocol is written out in docs/protocol.md.

* :mod:`transport.protocol`  message dataclasses (Ready, Task, Heartbeat, Result), ProtocolError
* :mod:`transport.codec`     encode / decode (strict schema check)
* :mod:`transport.leases`    the broker's bookkeeping as a pure state machine (credit, leases, resends)
* :mod:`transport.identity`  which CURVE key may report on which task and speak for which worker id
* :mod:`transport.outcomes`  Done, Failed, Dispatch, BrokerStats
* :mod:`transport.broker`    head side: Broker (ventilator + sink sockets and the poll loop)
* :mod:`transport.inbox`     the head's frame checks: shape, schema, socket, a revoked key
* :mod:`transport.auth`      CURVE on the head's sockets, the ZAP allow-list, socket monitors
* :mod:`transport.keys`      CURVE settings (CurveServer, CurveClient) and the head's security policy
* :mod:`transport.keyfiles`  CURVE key files: written all or nothing, read only if nobody else could change them
* :mod:`transport.endpoints` endpoint rules (sink port, loopback, where a local process connects)
* :mod:`transport.throttle`  the one log rate limiter
* :mod:`transport.channel`   worker side: WorkerChannel
"""

from transport.broker import Broker
from transport.channel import WorkerChannel
from transport.codec import decode, encode
from transport.outcomes import BrokerStats, Done, Failed
from transport.protocol import (
    PROTOCOL_VERSION,
    Heartbeat,
    Message,
    ProtocolError,
    Ready,
    Result,
    Task,
    wire_metrics,
)

__all__ = [
    "PROTOCOL_VERSION",
    "Broker",
    "BrokerStats",
    "Done",
    "Failed",
    "Heartbeat",
    "Message",
    "ProtocolError",
    "Ready",
    "Result",
    "Task",
    "WorkerChannel",
    "decode",
    "encode",
    "wire_metrics",
]

"""msgpack codec for the protocol messages, with a strict schema check.

Wire form of every message: one msgpack map ::

    {"v": 1, "type": "ready" | "task" | "heartbeat" | "result", <every field of that type>}

Decoding rules (see docs/protocol.md for the full table):

* the payload must be exactly one msgpack object (trailing bytes are an error), and
  that object a map whose keys are all str;
* ``"v"`` must equal :data:`~transport.protocol.PROTOCOL_VERSION` (an int, not a bool);
* ``"type"`` must name a known message type;
* the map must hold exactly ``v``, ``type`` and every field of that type: a missing
  field is an error, and so is an unknown one (a new field means a new version);
* every field passes the checks of its dataclass (types, ranges, lengths, finiteness).

:func:`decode` raises :class:`~transport.protocol.ProtocolError` and nothing else,
whatever bytes it is given, and never returns a half-valid message.
"""

from __future__ import annotations

from typing import Any

import msgpack

from transport.protocol import (
    MESSAGE_TYPES,
    PROTOCOL_VERSION,
    Message,
    ProtocolError,
    field_names,
)

__all__ = ["encode", "decode", "pack_checked", "DEFAULT_MAX_MESSAGE_BYTES"]

#: the size limit the broker applies by default (``zmq.MAXMSGSIZE``); decode's own default
DEFAULT_MAX_MESSAGE_BYTES = 1 << 20

_FIELDS = {name: field_names(cls) for name, cls in MESSAGE_TYPES.items()}
_CLASS_TO_TYPE = {cls: name for name, cls in MESSAGE_TYPES.items()}


def encode(msg: Message) -> bytes:
    """Encode one message as a msgpack map (``v``, ``type`` and its fields).

    The message is re-validated first (its dict fields are mutable), so the bytes
    produced always decode.  Raises ProtocolError for an invalid message and TypeError
    for an object that is not a message.
    """
    type_name = _CLASS_TO_TYPE.get(type(msg))
    if type_name is None:
        raise TypeError(f"encode() takes a Ready, Task, Heartbeat or Result, got {type(msg).__name__}")
    values = {name: getattr(msg, name) for name in _FIELDS[type_name]}
    # re-run the dataclass checks: catches a spec/metrics dict mutated after construction
    checked = MESSAGE_TYPES[type_name](**values)
    wire: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": type_name}
    wire.update((name, getattr(checked, name)) for name in _FIELDS[type_name])
    return msgpack.packb(wire, use_bin_type=True)


def pack_checked(type_name: str, fields: dict[str, Any]) -> bytes:
    """Encode fields that were already validated (e.g. by building the message once
    earlier) without checking them again: the hot path of the broker's hand-out."""
    wire: dict[str, Any] = {"v": PROTOCOL_VERSION, "type": type_name}
    wire.update(fields)
    return msgpack.packb(wire, use_bin_type=True)


def decode(data: bytes | bytearray | memoryview, *, max_bytes: int | None = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """Decode and validate one message; raise ProtocolError for anything else.

    ``data`` may be bytes, bytearray or memoryview.  ``max_bytes`` (None: no limit)
    rejects larger payloads before unpacking.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"expected bytes, got {type(data).__name__}")
    try:
        size = memoryview(data).nbytes
    except Exception as exc:  # a memoryview of something odd
        raise ProtocolError(f"unreadable buffer: {exc}") from None
    if size == 0:
        raise ProtocolError("empty payload (a message is one msgpack map)")
    if max_bytes is not None and size > max_bytes:
        raise ProtocolError(f"payload of {size} bytes exceeds the limit of {max_bytes} bytes")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except msgpack.ExtraData as exc:
        raise ProtocolError(f"trailing bytes after the msgpack object ({len(exc.extra)} extra)") from None
    except UnicodeDecodeError:
        raise ProtocolError("not valid msgpack: a str holds invalid UTF-8") from None
    except msgpack.StackError:
        raise ProtocolError("not valid msgpack: nested too deeply") from None
    except msgpack.FormatError:
        raise ProtocolError("not valid msgpack: reserved or invalid type byte") from None
    except Exception as exc:  # OutOfData, ValueError, TypeError, ...
        detail = f": {exc}" if str(exc) else ""
        raise ProtocolError(f"not valid msgpack ({type(exc).__name__}{detail})") from None
    try:
        return _from_wire(obj)
    except ProtocolError:
        raise
    except Exception as exc:  # defensive: a check that failed in an unforeseen way
        raise ProtocolError(f"invalid message ({type(exc).__name__}: {exc})") from None


def _from_wire(obj: Any) -> Message:
    if not isinstance(obj, dict):
        raise ProtocolError(f"a message must be a msgpack map, got {type(obj).__name__}")
    for key in obj:
        if not isinstance(key, str):
            raise ProtocolError(f"map keys must be str, got {type(key).__name__} {key!r:.40}")
    if "v" not in obj:
        raise ProtocolError("missing key 'v' (protocol version)")
    version = obj["v"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProtocolError(f"'v' must be an int, got {type(version).__name__}")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version} is not supported (this side speaks version {PROTOCOL_VERSION})"
        )
    if "type" not in obj:
        raise ProtocolError("missing key 'type'")
    type_name = obj["type"]
    if not isinstance(type_name, str):
        raise ProtocolError(f"'type' must be a str, got {type(type_name).__name__}")
    cls = MESSAGE_TYPES.get(type_name)
    if cls is None:
        known = ", ".join(sorted(MESSAGE_TYPES))
        raise ProtocolError(f"unknown message type {type_name[:40]!r} (known: {known})")
    expected = _FIELDS[type_name]
    missing = [name for name in expected if name not in obj]
    if missing:
        raise ProtocolError(f"{type_name}: missing field(s) {', '.join(repr(m) for m in missing)}")
    unknown = sorted(set(obj) - set(expected) - {"v", "type"})
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ProtocolError(f"{type_name}: unknown field(s) {shown}{more}")
    return cls(**{name: obj[name] for name in expected})

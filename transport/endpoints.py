"""Endpoint rules, in one place: which sink goes with a ventilator, which endpoints only
this machine can reach, and where a local process connects to reach a wildcard bind."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback_endpoint", "local_endpoint", "sink_endpoint"]


def sink_endpoint(ventilator: str) -> str:
    """The sink endpoint by convention when none is given: the ventilator's port + 1
    (``tcp://head:5557`` -> ``tcp://head:5558``). ValueError when there is no port."""
    head, _, port = ventilator.rpartition(":")
    if not head or not port.isdigit():
        raise ValueError(f"cannot derive the sink endpoint from {ventilator!r} (no port): give it explicitly")
    return f"{head}:{int(port) + 1}"


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for endpoints only this machine can reach: tcp on 127.0.0.0/8, ::1 or
    localhost, and ipc:// or inproc://. A wildcard (``*``, 0.0.0.0, ``[::]``), an interface
    name or any other address is not loopback."""
    transport, sep, rest = endpoint.partition("://")
    if not sep:
        return False
    if transport in ("ipc", "inproc"):
        return True
    if transport != "tcp":
        return False
    host = rest.rsplit(":", 1)[0] if ":" in rest else rest
    if ";" in host:  # tcp://source;dest: the bound address is the last part
        host = host.rsplit(";", 1)[1]
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_endpoint(bound: str) -> str:
    """Where a process on this machine connects to reach a socket bound at ``bound``
    (a wildcard bind is reached on loopback: ``tcp://*:5557`` -> ``tcp://127.0.0.1:5557``)."""
    for wildcard in ("//*:", "//0.0.0.0:"):
        bound = bound.replace(wildcard, "//127.0.0.1:")
    return bound.replace("//[::]:", "//[::1]:")

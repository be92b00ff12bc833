"""CURVE key files for the transport: generate them, load them safely, and the settings
that :class:`transport.broker.Broker` (``curve=CurveServer``) and
:class:`transport.channel.WorkerChannel` (``curve=CurveClient``) take.

Key files are ZeroMQ certificates as pyzmq's ``zmq.auth.create_certificates`` writes
them: ``NAME.key`` holds the public key (share it), ``NAME.key_secret`` holds the key
pair (keep it on its machine, mode 0600)::

    evovae keys generate --dir keys head worker-gpu0
    evovae keys show keys/head.key

The head loads its secret file (:func:`load_server_secret`, which refuses a file that
group or others can read) and an allow-list of worker public keys
(:func:`load_allowlist`, refusing directories and files others can write); a worker loads
its own secret file and the head's public file. The file rules live in
:mod:`transport.keyfiles`; see docs/protocol.md, "Security".
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import structlog
import zmq

from transport.endpoints import is_loopback_endpoint
from transport.keyfiles import KeyFileError, check_key, generate, load_allowlist, load_public, load_secret, write_public

__all__ = ["CurveClient", "CurveServer", "PathLike", "head_curve", "load_server_secret", "local_worker_keys"]

PathLike = Union[str, "os.PathLike[str]"]

log = structlog.get_logger(__name__)


def load_server_secret(path: PathLike) -> tuple[bytes, bytes]:
    """The head's (public_key, secret_key) from its secret certificate: see :func:`load_secret`."""
    return load_secret(path)


def _check_pair(public: bytes, secret: bytes, what: str) -> None:
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{what}: the public key does not belong to the secret key")


@dataclass(frozen=True)
class CurveServer:
    """The head's side of CURVE: its key pair and the public keys of the workers it admits.

    Keys are Z85 text (40 bytes). ``allowed`` must not be empty: a CURVE broker with an
    empty allow-list would admit nobody.
    """

    public_key: bytes
    secret_key: bytes
    allowed: frozenset[bytes]
    allow_from: tuple[PathLike, ...] = ()  # the directories / files the allow-list was read from (for reloaded())
    extra: frozenset[bytes] = frozenset()  # keys admitted besides those files (allowing()); kept by reloaded()

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_from", tuple(str(p) for p in self.allow_from))
        object.__setattr__(self, "extra", frozenset(check_key(k, "allowed client key") for k in self.extra))
        object.__setattr__(self, "public_key", check_key(self.public_key, "server public key"))
        object.__setattr__(self, "secret_key", check_key(self.secret_key, "server secret key"))
        _check_pair(self.public_key, self.secret_key, "server key pair")
        allowed = frozenset(check_key(k, "allowed client key") for k in self.allowed)
        if not allowed:
            raise KeyFileError("the allow-list of worker public keys is empty: no worker could connect")
        object.__setattr__(self, "allowed", allowed)

    @classmethod
    def from_files(cls, secret_file: PathLike, allow: PathLike | Iterable[PathLike]) -> CurveServer:
        """``secret_file``: the head's NAME.key_secret (mode 0600); ``allow``: a directory of
        worker public keys (``*.key``) or a list of such files."""
        public, secret = load_server_secret(secret_file)
        sources = (allow,) if isinstance(allow, (str, os.PathLike)) else tuple(allow)
        return cls(public, secret, load_allowlist(sources), allow_from=sources)

    def allowing(self, *public_keys: bytes) -> CurveServer:
        """A copy that also admits these client public keys (e.g. a local worker's), now and
        after :meth:`reloaded`."""
        extra = self.extra | frozenset(public_keys)
        return dataclasses.replace(self, allowed=self.allowed | extra, extra=extra)

    def reloaded(self) -> CurveServer:
        """A copy with the allow-list read again from ``allow_from`` (plus ``extra``).
        KeyFileError if the files are unusable now, or if there is nothing to read."""
        if not self.allow_from:
            raise KeyFileError("this allow-list was not read from files (CurveServer.from_files): nothing to reload")
        return dataclasses.replace(self, allowed=load_allowlist(self.allow_from) | self.extra)

    def __repr__(self) -> str:  # never show the secret key in a log or a traceback
        return f"CurveServer(public_key={self.public_key!r}, allowed={len(self.allowed)} keys)"


@dataclass(frozen=True)
class CurveClient:
    """A worker's side of CURVE: its key pair and the head's public key (Z85 text)."""

    public_key: bytes
    secret_key: bytes
    server_key: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", check_key(self.public_key, "client public key"))
        object.__setattr__(self, "secret_key", check_key(self.secret_key, "client secret key"))
        object.__setattr__(self, "server_key", check_key(self.server_key, "server public key"))
        _check_pair(self.public_key, self.secret_key, "client key pair")

    @classmethod
    def from_files(cls, secret_file: PathLike, server_public_file: PathLike) -> CurveClient:
        """``secret_file``: this worker's NAME.key_secret (mode 0600);
        ``server_public_file``: the head's public NAME.key."""
        public, secret = load_secret(secret_file)
        return cls(public, secret, load_public(server_public_file))

    def __repr__(self) -> str:
        return f"CurveClient(public_key={self.public_key!r}, server_key={self.server_key!r})"


# ---------------------------------------------------------------------- the head's policy


def head_curve(
    bind: str,
    sink: str,
    *,
    server_key_secret: PathLike | None,
    allow: PathLike | None,
    insecure: bool,
) -> CurveServer | None:
    """The head's security from its options (``--server-key-secret --allow --insecure``).

    * ``server_key_secret`` and ``allow`` (both or neither): CURVE, returns a CurveServer;
    * neither: plain TCP (None), but only if both endpoints are loopback (the local demo)
      or ``insecure`` is set (logged as a warning, ``auth.insecure``).

    KeyFileError (a ValueError, one line) for conflicting options, unusable key files, or a
    plain bind that other machines could reach without ``insecure``.
    """
    if insecure and (server_key_secret or allow):
        raise KeyFileError("--insecure excludes --server-key-secret and --allow")
    if bool(server_key_secret) != bool(allow):
        raise KeyFileError("CURVE needs both --server-key-secret FILE (the head's secret key) and --allow DIR "
                           "(the workers' public keys)")
    if server_key_secret and allow:  # both or neither (checked above)
        return CurveServer.from_files(server_key_secret, allow)
    exposed = [e for e in (bind, sink) if not is_loopback_endpoint(e)]
    if exposed and not insecure:
        raise KeyFileError(
            f"refusing to bind {exposed[0]} without encryption: give --server-key-secret FILE --allow DIR "
            f"(see evovae keys --help), or --insecure for plain TCP on a trusted network"
        )
    if insecure:
        log.warning("auth.insecure", bind=bind, sink=sink, exposed=bool(exposed),
                    reason="--insecure: plain TCP; any host that reaches these ports can take tasks and send results")
    return None


def local_worker_keys(curve: CurveServer, directory: PathLike) -> tuple[CurveServer, list[str]]:
    """Keys for worker processes the head starts itself (``--local-workers``) under CURVE.

    Writes a fresh key pair and the head's public key into ``directory`` (make it private,
    e.g. ``tempfile.mkdtemp()``, and remove it when the workers are stopped). Returns the
    head's settings extended to admit that key, and the worker options that use it
    (``--server-key FILE --key FILE``).
    """
    _, secret = generate(directory, "local-worker")
    server_public = write_public(Path(directory) / "head.key", curve.public_key)
    public, _ = load_secret(secret)
    return curve.allowing(public), ["--server-key", str(server_public), "--key", str(secret)]

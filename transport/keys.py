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
(:func:`load_allowlist`); a worker loads its own secret file and the head's public file.
See docs/protocol.md, "Security".
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

import structlog
import zmq
import zmq.auth
from zmq.utils import z85

from transport.endpoints import is_loopback_endpoint  # re-exported: its old home

__all__ = [
    "CurveClient",
    "CurveServer",
    "KeyFileError",
    "generate",
    "head_curve",
    "is_loopback_endpoint",
    "local_worker_keys",
    "load_allowlist",
    "load_public",
    "load_secret",
    "load_server_secret",
    "read_public_key",
    "write_public",
]

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEY_LINE = re.compile(rb"^(public|secret)-key\s*=\s*(.*)$")
_MAX_CERT_BYTES = 64 * 1024

PathLike = Union[str, "os.PathLike[str]"]

log = structlog.get_logger(__name__)


class KeyFileError(ValueError):
    """A key file or key that cannot be used; the message names the file and the fix."""


# ---------------------------------------------------------------------- settings


def _check_key(key: bytes | str, what: str) -> bytes:
    """A CURVE key in Z85 text (40 characters) -> bytes; KeyFileError otherwise."""
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    if not isinstance(key, bytes) or len(key) != 40:
        raise KeyFileError(f"{what} must be a 40-character Z85 CURVE key, got {len(key) if isinstance(key, bytes) else type(key).__name__}")
    try:
        raw = z85.decode(key)
    except Exception:
        raise KeyFileError(f"{what} is not valid Z85 text") from None
    if len(raw) != 32:
        raise KeyFileError(f"{what} does not decode to 32 bytes")
    return key


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
    allowed: frozenset

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", _check_key(self.public_key, "server public key"))
        object.__setattr__(self, "secret_key", _check_key(self.secret_key, "server secret key"))
        _check_pair(self.public_key, self.secret_key, "server key pair")
        allowed = frozenset(_check_key(k, "allowed client key") for k in self.allowed)
        if not allowed:
            raise KeyFileError("the allow-list of worker public keys is empty: no worker could connect")
        object.__setattr__(self, "allowed", allowed)

    @classmethod
    def from_files(cls, secret_file: PathLike, allow: PathLike | Iterable[PathLike]) -> CurveServer:
        """``secret_file``: the head's NAME.key_secret (mode 0600); ``allow``: a directory of
        worker public keys (``*.key``) or a list of such files."""
        public, secret = load_server_secret(secret_file)
        return cls(public, secret, load_allowlist(allow))

    def allowing(self, *public_keys: bytes) -> CurveServer:
        """A copy that also admits these client public keys (e.g. a local worker's)."""
        return dataclasses.replace(self, allowed=self.allowed | frozenset(public_keys))

    def __repr__(self) -> str:  # never show the secret key in a log or a traceback
        return f"CurveServer(public_key={self.public_key!r}, allowed={len(self.allowed)} keys)"


@dataclass(frozen=True)
class CurveClient:
    """A worker's side of CURVE: its key pair and the head's public key (Z85 text)."""

    public_key: bytes
    secret_key: bytes
    server_key: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "public_key", _check_key(self.public_key, "client public key"))
        object.__setattr__(self, "secret_key", _check_key(self.secret_key, "client secret key"))
        object.__setattr__(self, "server_key", _check_key(self.server_key, "server public key"))
        _check_pair(self.public_key, self.secret_key, "client key pair")

    @classmethod
    def from_files(cls, secret_file: PathLike, server_public_file: PathLike) -> CurveClient:
        """``secret_file``: this worker's NAME.key_secret (mode 0600);
        ``server_public_file``: the head's public NAME.key."""
        public, secret = load_secret(secret_file)
        return cls(public, secret, load_public(server_public_file))

    def __repr__(self) -> str:
        return f"CurveClient(public_key={self.public_key!r}, server_key={self.server_key!r})"


# ---------------------------------------------------------------------- files


def generate(directory: PathLike, name: str) -> tuple[Path, Path]:
    """Write a new key pair as ``directory/NAME.key`` (public, 0644) and
    ``directory/NAME.key_secret`` (secret, 0600). Returns (public_path, secret_path).

    The directory is created (0700) if missing. Existing key files are never overwritten
    (KeyFileError). The files are written inside a private (0700) scratch directory and
    moved into place, so the secret key is never readable by others, not even briefly.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyFileError(f"bad key name {name!r}: use 1-64 characters of A-Z a-z 0-9 _ . - (not starting with . _ -)")
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise KeyFileError(f"{folder} is not a directory")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    public_path = folder / f"{name}{PUBLIC_SUFFIX}"
    secret_path = folder / f"{name}{SECRET_SUFFIX}"
    for path in (public_path, secret_path):
        if os.path.lexists(path):
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key (remove it first)")
    scratch = tempfile.mkdtemp(prefix=".evovae-keys-", dir=folder)  # mode 0700
    try:
        new_public, new_secret = zmq.auth.create_certificates(scratch, name)
        os.chmod(new_secret, 0o600)
        os.chmod(new_public, 0o644)
        os.rename(new_secret, secret_path)
        os.rename(new_public, public_path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    mode = stat.S_IMODE(os.stat(secret_path).st_mode)
    if mode != 0o600:
        raise KeyFileError(f"{secret_path} has mode {mode:04o}, not 0600 (does this file system keep modes?)")
    return public_path, secret_path


def write_public(path: PathLike, public_key: bytes) -> Path:
    """Write a public certificate file (mode 0644) holding ``public_key`` (Z85)."""
    key = _check_key(public_key, "public key").decode("ascii")
    target = Path(path)
    text = f"#   ZeroMQ CURVE Public Certificate (written by evovae)\n\nmetadata\ncurve\n    public-key = \"{key}\"\n"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    return target


def _parse_certificate(data: bytes, path: PathLike) -> tuple[bytes | None, bytes | None]:
    """(public, secret) from certificate text; either may be None if the line is absent.
    Same syntax as zmq.auth.load_certificate: ``public-key = "Z85"`` lines."""
    public = secret = None
    for line in data.splitlines():
        match = _KEY_LINE.match(line.strip())
        if match is None:
            continue
        value = match.group(2).strip(b" \t'\"")
        if match.group(1) == b"public":
            public = public or value
        else:
            secret = secret or value
    if public is not None:
        public = _check_key(public, f"the public key in {path}")
    if secret is not None:
        secret = _check_key(secret, f"the secret key in {path}")
    return public, secret


def _read(path: PathLike, *, private: bool) -> bytes:
    """Read a small regular file; with ``private``, refuse one that group/others can access."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO must not hang us
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key file") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot open: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise KeyFileError(f"{path} is not a regular file")
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(st.st_mode)
        if private and mode & 0o077:
            raise KeyFileError(
                f"secret key file {path} is accessible to group/others (mode {mode:04o}); "
                f"run: chmod 600 {shlex.quote(str(path))}"
            )
        data = f.read(_MAX_CERT_BYTES + 1)
    if len(data) > _MAX_CERT_BYTES:
        raise KeyFileError(f"{path} is too large to be a key certificate")
    return data


def load_secret(path: PathLike) -> tuple[bytes, bytes]:
    """(public_key, secret_key), Z85, from a secret certificate (NAME.key_secret).

    Refuses (KeyFileError) a file that group or others can read or write, a file that is
    not a secret certificate (e.g. the public NAME.key), and a mismatched key pair.
    """
    public, secret = _parse_certificate(_read(path, private=True), path)
    if secret is None:
        raise KeyFileError(
            f"{path} is not a secret key certificate (no secret-key line); give the {SECRET_SUFFIX} file "
            f"written by `evovae keys generate`"
        )
    if public is None:
        raise KeyFileError(f"{path} has a secret key but no public-key line")
    _check_pair(public, secret, str(path))
    return public, secret


def load_server_secret(path: PathLike) -> tuple[bytes, bytes]:
    """The head's (public_key, secret_key) from its secret certificate: see :func:`load_secret`."""
    return load_secret(path)


def load_public(path: PathLike) -> bytes:
    """The public key (Z85) of a public certificate (NAME.key).

    A file that holds a secret key is refused: secret keys are not to be handed around.
    """
    public, secret = _parse_certificate(_read(path, private=False), path)
    if secret is not None:
        raise KeyFileError(
            f"{path} holds a secret key; give the public certificate ({PUBLIC_SUFFIX}) instead, and keep "
            f"the secret one private"
        )
    if public is None:
        raise KeyFileError(f"{path} is not a key certificate (no public-key line)")
    return public


def read_public_key(path: PathLike) -> bytes:
    """The public key (Z85) in a key file, public or secret (what ``evovae keys show`` prints)."""
    public, _ = _parse_certificate(_read(path, private=False), path)
    if public is None:
        raise KeyFileError(f"{path} is not a key certificate (no public-key line)")
    return public


def load_allowlist(directory_or_files: PathLike | Iterable[PathLike]) -> frozenset:
    """The client public keys (Z85) to admit: every ``*.key`` file of a directory, or the
    given files. KeyFileError if a file is not a public certificate, or if none is found."""
    if isinstance(directory_or_files, (str, os.PathLike)):
        sources = [Path(directory_or_files)]
    else:
        sources = [Path(p) for p in directory_or_files]
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.name.endswith(PUBLIC_SUFFIX) and p.is_file())
        elif source.exists():
            files.append(source)
        else:
            raise KeyFileError(f"{source}: no such allow-list directory or key file")
    if not files:
        where = ", ".join(str(s) for s in sources) or "(nothing given)"
        raise KeyFileError(f"no worker public keys (*{PUBLIC_SUFFIX}) in {where}: no worker could connect")
    return frozenset(load_public(f) for f in files)


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
    if server_key_secret:
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

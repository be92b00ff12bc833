"""CURVE key files: write them, and read them only when nobody else could have changed them.

Key files are ZeroMQ certificates as pyzmq's ``zmq.auth.create_certificates`` writes
them: ``NAME.key`` holds the public key (share it), ``NAME.key_secret`` holds the key
pair (keep it on its machine, mode 0600). What is refused, each with one line that
names the file and the fix:

* a secret key file that group or others can read or write;
* a public key file, or an allow-list directory, that group or others can write (anyone
  who can write there could admit a worker or swap the head's key);
* a public key file given where the secret one is expected, and the other way round;
* a pair whose two keys do not belong together, a file that is not a certificate.

:mod:`transport.keys` builds the head's and the workers' CURVE settings on these files.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import zmq
import zmq.auth
from zmq.utils import z85

__all__ = [
    "KeyFileError",
    "PUBLIC_SUFFIX",
    "SECRET_SUFFIX",
    "check_key",
    "generate",
    "generate_many",
    "load_allowlist",
    "load_public",
    "load_secret",
    "read_public_key",
    "write_public",
]

PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_KEY_LINE = re.compile(rb"^(public|secret)-key\s*=\s*(.*)$")
_MAX_CERT_BYTES = 64 * 1024

PathLike = Union[str, "os.PathLike[str]"]


class KeyFileError(ValueError):
    """A key file or key that cannot be used; the message names the file and the fix."""


def check_key(key: bytes | str, what: str) -> bytes:
    """A CURVE key in Z85 text (40 characters) -> bytes; KeyFileError otherwise."""
    if isinstance(key, str):
        key = key.encode("ascii", "replace")
    if not isinstance(key, bytes) or len(key) != 40:
        got = len(key) if isinstance(key, bytes) else type(key).__name__
        raise KeyFileError(f"{what} must be a 40-character Z85 CURVE key, got {got}")
    try:
        raw = z85.decode(key)
    except Exception:
        raise KeyFileError(f"{what} is not valid Z85 text") from None
    if len(raw) != 32:
        raise KeyFileError(f"{what} does not decode to 32 bytes")
    return key


# ---------------------------------------------------------------------- writing


def generate(directory: PathLike, name: str) -> tuple[Path, Path]:
    """Write a new key pair as ``directory/NAME.key`` (public, 0644) and
    ``directory/NAME.key_secret`` (secret, 0600). Returns (public_path, secret_path).
    See :func:`generate_many`."""
    return generate_many(directory, [name])[0]


def generate_many(directory: PathLike, names: Sequence[str]) -> list[tuple[Path, Path]]:
    """A key pair for each name, all or nothing: if any name is bad, given twice or already
    has a key file, nothing is written (KeyFileError). Existing key files are never
    overwritten, not even by a file that appears meanwhile.

    The directory is created (0700) if missing. The files are written inside a private
    (0700) scratch directory and linked into place, so the secret key is never readable by
    others, not even briefly.
    """
    names = list(names)
    for name in names:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise KeyFileError(f"bad key name {name!r}: use 1-64 characters of A-Z a-z 0-9 _ . - "
                               f"(not starting with . _ -)")
    if len(set(names)) != len(names):
        raise KeyFileError("a NAME is given twice")
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise KeyFileError(f"{folder} is not a directory")
    targets = [(folder / f"{n}{PUBLIC_SUFFIX}", folder / f"{n}{SECRET_SUFFIX}") for n in names]
    for path in (p for pair in targets for p in pair):
        if os.path.lexists(path):
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key (remove it first); "
                               f"nothing was written")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".evovae-keys-", dir=folder)  # mode 0700
    placed: list[Path] = []
    try:
        for name, (public_path, secret_path) in zip(names, targets, strict=True):
            new_public, new_secret = zmq.auth.create_certificates(scratch, name)
            os.chmod(new_secret, 0o600)
            os.chmod(new_public, 0o644)
            for new, path in ((new_secret, secret_path), (new_public, public_path)):
                _place(Path(new), path)
                placed.append(path)
    except BaseException:
        for path in placed:  # all or nothing
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for _, secret_path in targets:
        mode = stat.S_IMODE(os.stat(secret_path).st_mode)
        if mode != 0o600:
            raise KeyFileError(f"{secret_path} has mode {mode:04o}, not 0600 (does this file system keep modes?)")
    return targets


def _place(new: Path, path: Path) -> None:
    """Move ``new`` to ``path`` unless ``path`` exists (a hard link does not overwrite)."""
    try:
        os.link(new, path)
    except FileExistsError:
        raise KeyFileError(f"{path} appeared while the keys were written; refusing to overwrite it; "
                           f"nothing was written") from None
    except OSError as exc:  # no hard links on this file system: check, then rename
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
        os.rename(new, path)


def write_public(path: PathLike, public_key: bytes) -> Path:
    """Write a public certificate file (mode 0644) holding ``public_key`` (Z85)."""
    key = check_key(public_key, "public key").decode("ascii")
    target = Path(path)
    text = f"#   ZeroMQ CURVE Public Certificate (written by evovae)\n\nmetadata\ncurve\n    public-key = \"{key}\"\n"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
    return target


# ---------------------------------------------------------------------- reading


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
        public = check_key(public, f"the public key in {path}")
    if secret is not None:
        secret = check_key(secret, f"the secret key in {path}")
    return public, secret


def _read(path: PathLike) -> tuple[bytes, int]:
    """(content, mode bits) of a small regular file."""
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
        data = f.read(_MAX_CERT_BYTES + 1)
    if len(data) > _MAX_CERT_BYTES:
        raise KeyFileError(f"{path} is too large to be a key certificate")
    return data, stat.S_IMODE(st.st_mode)


def _refuse_writable(path: PathLike, mode: int, what: str, why: str) -> None:
    if mode & 0o022:
        raise KeyFileError(f"{what} {path} is writable by group/others (mode {mode:04o}): {why}; "
                           f"run: chmod go-w {shlex.quote(str(path))}")


def load_secret(path: PathLike) -> tuple[bytes, bytes]:
    """(public_key, secret_key), Z85, from a secret certificate (NAME.key_secret).

    Refuses (KeyFileError) a file that is not a secret certificate (e.g. the public
    NAME.key), a file that group or others can read or write, and a mismatched key pair.
    """
    data, mode = _read(path)
    public, secret = _parse_certificate(data, path)
    if secret is None:
        if public is not None:
            raise KeyFileError(f"{path} is a public key file, not a secret key certificate: give the "
                               f"{SECRET_SUFFIX} file that `evovae keys generate` wrote next to it")
        raise KeyFileError(f"{path} is not a secret key certificate (no secret-key line); give the "
                           f"{SECRET_SUFFIX} file written by `evovae keys generate`")
    if mode & 0o077:
        raise KeyFileError(f"secret key file {path} is accessible to group/others (mode {mode:04o}); "
                           f"run: chmod 600 {shlex.quote(str(path))}")
    if public is None:
        raise KeyFileError(f"{path} has a secret key but no public-key line")
    if zmq.curve_public(secret) != public:
        raise KeyFileError(f"{path}: the public key does not belong to the secret key")
    return public, secret


def load_public(path: PathLike) -> bytes:
    """The public key (Z85) of a public certificate (NAME.key).

    Refused: a file that holds a secret key (secret keys are not to be handed around) and
    a file that group or others can write (they could swap the key).
    """
    data, mode = _read(path)
    public, secret = _parse_certificate(data, path)
    if secret is not None:
        raise KeyFileError(f"{path} holds a secret key; give the public certificate ({PUBLIC_SUFFIX}) instead, "
                           f"and keep the secret one private")
    if public is None:
        raise KeyFileError(f"{path} is not a key certificate (no public-key line)")
    _refuse_writable(path, mode, "public key file", "anyone who can write it can swap the key")
    return public


def read_public_key(path: PathLike) -> bytes:
    """The public key (Z85) in a key file, public or secret (what ``evovae keys show`` prints)."""
    public, _ = _parse_certificate(_read(path)[0], path)
    if public is None:
        raise KeyFileError(f"{path} is not a key certificate (no public-key line)")
    return public


def load_allowlist(directory_or_files: PathLike | Iterable[PathLike]) -> frozenset[bytes]:
    """The client public keys (Z85) to admit: every ``*.key`` file of a directory, or the
    given files. KeyFileError if a file is not a public certificate, if a directory or file
    is writable by group or others, or if no key is found."""
    if isinstance(directory_or_files, (str, os.PathLike)):
        sources = [Path(directory_or_files)]
    else:
        sources = [Path(p) for p in directory_or_files]
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            _refuse_writable(source, stat.S_IMODE(source.stat().st_mode), "allow-list directory",
                             "anyone who can write there can admit a worker")
            files += sorted(p for p in source.iterdir() if p.name.endswith(PUBLIC_SUFFIX) and p.is_file())
        elif source.exists():
            files.append(source)
        else:
            raise KeyFileError(f"{source}: no such allow-list directory or key file")
    if not files:
        where = ", ".join(str(s) for s in sources) or "(nothing given)"
        raise KeyFileError(f"no worker public keys (*{PUBLIC_SUFFIX}) in {where}: no worker could connect")
    return frozenset(load_public(f) for f in files)

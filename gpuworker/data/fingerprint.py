"""Fingerprints of data by content (stdlib only).

A file's fingerprint is the SHA-256 of its bytes. A folder's is the SHA-256 of a canonical listing of the
files that are read from it: one line ``<sha256 of the file>  <path relative to the folder, with />`` per
file, sorted by path, each ending in a newline (the format of ``sha256sum``; the same folder on two
machines, or after a copy, has the same fingerprint; a renamed, added, removed or changed image changes it).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["digest", "listing", "listing_digest"]


def digest(data: bytes) -> str:
    """SHA-256 of ``data`` as 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def listing(entries: Iterable[tuple[str, str]]) -> str:
    """The canonical listing of ``(relative path, sha256)`` pairs."""
    return "".join(f"{sha}  {path}\n" for path, sha in sorted(entries))


def listing_digest(entries: Iterable[tuple[str, str]]) -> str:
    """A folder's fingerprint: the SHA-256 of :func:`listing`."""
    return digest(listing(entries).encode("utf-8"))

"""What every data module shares (stdlib only: importable anywhere): the exception and the data root."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataError", "default_root"]


class DataError(RuntimeError):
    """A data set that cannot be used as asked: missing, unreadable, of the wrong shape or content, or not the
    copy the head fingerprinted. The message is one line naming the file and what to do."""


def default_root() -> Path:
    """Where data sets are looked for unless ``--data-root`` says otherwise: ``$EVOVAE_DATA_ROOT``, else
    ``~/.cache/evovae/data``."""
    return Path(os.environ.get("EVOVAE_DATA_ROOT") or Path.home() / ".cache" / "evovae" / "data")

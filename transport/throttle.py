"""The one log throttle of the transport: a burst of warnings about the same peer (bad
frames, refused handshakes, forged results) becomes a few lines plus a count per peer.

Pure: no clock of its own (every call takes ``now``), no logging; thread-safe, because the
ZAP handler's thread and the broker's thread may share one::

    limiter = RateLimiter(per_key=5, total=20, window_s=1.0)
    if limiter.allow(("sink", sender), now):
        log.warning("frame.rejected", ...)
    for key, count in limiter.summary(now):      # once a window: what was held back, per key
        log.warning("frame.rejected.suppressed", socket=key[0], sender=key[1], count=count)
"""

from __future__ import annotations

import math
import threading
from collections.abc import Hashable

__all__ = ["RateLimiter", "SUMMARY_LINES"]

SUMMARY_LINES = 10  # summary() names the keys with the most suppressed lines; the rest are lumped together


class RateLimiter:
    """At most ``per_key`` lines per key and ``total`` lines in all per window of ``window_s``
    seconds; what is held back is counted per key until :meth:`summary` hands it out."""

    def __init__(self, *, per_key: int, total: int, window_s: float) -> None:
        if per_key < 1 or total < per_key or not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"bad throttle settings: per_key={per_key}, total={total}, window_s={window_s}")
        self.per_key = per_key
        self.total = total
        self.window_s = float(window_s)
        self._lock = threading.Lock()
        self._start = -math.inf
        self._lines: dict[Hashable, int] = {}
        self._lines_total = 0
        self._suppressed: dict[Hashable, int] = {}
        self._held_since = math.inf  # when the first line held back since the last summary was

    def allow(self, key: Hashable, now: float) -> bool:
        """True: log this line. False: it is counted for the next summary instead."""
        with self._lock:
            if now - self._start >= self.window_s:
                self._start = now
                self._lines.clear()
                self._lines_total = 0
            used = self._lines.get(key, 0)
            if used < self.per_key and self._lines_total < self.total:
                self._lines[key] = used + 1
                self._lines_total += 1
                return True
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            self._held_since = min(self._held_since, now)
            return False

    def summary(self, now: float, *, force: bool = False) -> list[tuple[Hashable, int]]:
        """The suppressed counts since the last summary, most first, once a window has passed
        since the first of them was held back (``force``: now, e.g. at close). At most
        :data:`SUMMARY_LINES` entries: past that, the last entry is ``("others", N)`` with N
        the lines of all the remaining keys."""
        with self._lock:
            if not self._suppressed or (not force and now - self._held_since < self.window_s):
                return []
            self._held_since = math.inf
            counts = sorted(self._suppressed.items(), key=lambda kv: (-kv[1], str(kv[0])))
            self._suppressed = {}
        if len(counts) > SUMMARY_LINES:
            rest = sum(n for _, n in counts[SUMMARY_LINES - 1:])
            counts = [*counts[: SUMMARY_LINES - 1], ("others", rest)]
        return counts

    def next_summary(self) -> float:
        """When :meth:`summary` next has something to say (inf: nothing is held back)."""
        with self._lock:
            return self._held_since + self.window_s

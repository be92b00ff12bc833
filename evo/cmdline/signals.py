"""SIGINT and SIGTERM as a :class:`threading.Event`: the one way the commands learn to stop.

``with stop_signals() as stop:`` installs a handler that records the signal and sets
``stop.event``; leaving the block puts the previous handlers back. The handler does nothing
else - no logging, no printing: it may interrupt a log write, and the logger's lock is not
re-entrant. Nor does it take the event's lock: a handler runs in the main thread between two
bytecodes, possibly while that thread holds the very lock ``Event.set`` takes (inside
``stop.event.wait()``, or inside an earlier handler's ``set`` when two signals come at once, as
SLURM's scancel and the batch script's forwarded SIGTERM do), and would wait for it forever. So
the handler writes a byte to a pipe, and a relay thread started with the block sets the event.
Outside the main thread (where Python cannot install handlers) the event is still there, only
never set by a signal.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

__all__ = ["StopSignals", "stop_signals"]

DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopSignals:
    """The stop event and the signals received so far (first one first)."""

    event: threading.Event = field(default_factory=threading.Event)
    received: list[int] = field(default_factory=list)
    _wake: int | None = field(default=None, repr=False)  # the relay pipe's write end, while a block is open

    @property
    def stopped(self) -> bool:
        return bool(self.received)

    @property
    def name(self) -> str:
        """The first signal's name (``SIGTERM``), or an empty string when none came."""
        return signal.Signals(self.received[0]).name if self.received else ""

    @property
    def exit_status(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (1 when none came)."""
        return 128 + self.received[0] if self.received else 1

    def _handle(self, signum: int, _frame: object) -> None:
        self.received.append(signum)  # no lock taken (see the module's docstring)
        if self._wake is None:
            self.event.set()
            return
        try:
            os.write(self._wake, b"\0")  # non-blocking: a full pipe means the relay has been woken already
        except OSError:
            pass

    def _relay(self, read_end: int) -> None:
        """Set the event each time the handler writes (until the write end is closed)."""
        try:
            while os.read(read_end, 64):
                self.event.set()
        finally:
            os.close(read_end)


@contextmanager
def stop_signals(signals: tuple[signal.Signals, ...] = DEFAULT_SIGNALS) -> Iterator[StopSignals]:
    """Route ``signals`` to a fresh :class:`StopSignals` for the duration of the block."""
    stop = StopSignals()
    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | signal.Handlers | None] = {}
    relay = None
    if threading.current_thread() is threading.main_thread():
        read_end, stop._wake = os.pipe()
        os.set_blocking(stop._wake, False)
        relay = threading.Thread(target=stop._relay, args=(read_end,), name="stop-signals", daemon=True)
        relay.start()
        for sig in signals:
            previous[sig] = signal.signal(sig, stop._handle)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():  # None: a handler not installed from Python
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if relay is not None and stop._wake is not None:
            wake, stop._wake = stop._wake, None
            os.close(wake)  # the relay reads the end of the pipe and stops
            relay.join(5.0)

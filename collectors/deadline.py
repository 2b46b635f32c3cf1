"""Time limits for reads from the MTA: a queue read that hangs or drips must end, and shutdown
must never wait for it."""

from __future__ import annotations

import threading
import time

#: Longest single wait inside a read, so that a stop request is noticed quickly.
SLICE = 0.25


class ReadTimeout(TimeoutError):
    """A read did not finish within its deadline."""


class ReadCancelled(Exception):
    """A read was abandoned because the agent is stopping."""


class Deadline:
    """The end of one read, and the agent's stop signal that cuts it short.

    Readers wait in slices (``wait()``) and call ``check()`` between them.
    """

    def __init__(self, seconds: float, stop: threading.Event | None = None) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds
        self._stop = stop

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self._end - time.monotonic()

    def check(self) -> None:
        """Raise ``ReadCancelled`` when stopping, ``ReadTimeout`` when the time is up."""
        if self._stop is not None and self._stop.is_set():
            raise ReadCancelled("the agent is stopping")
        if self.remaining() <= 0:
            raise ReadTimeout(f"timed out after {self.seconds:g} s")

    def wait(self) -> float:
        """How long the next blocking wait may last: a slice, never past the end."""
        return max(0.001, min(SLICE, self.remaining()))

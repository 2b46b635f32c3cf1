"""Small helpers shared by the test modules (sinks, clocks, waiting, ports)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Recorder:
    """A tailer sink that keeps every batch (list.append is atomic, so threads may share it)."""

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[bytes]]] = []

    def __call__(self, source: str, lines: list[bytes]) -> None:
        self.batches.append((source, list(lines)))

    def lines(self, source: str | None = None) -> list[bytes]:
        """Every delivered line, in order; only ``source``'s when given."""
        return [line for s, batch in self.batches for line in batch if source in (None, s)]


class FakeClock:
    """A clock the test moves by setting ``now``."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def append(path: Path, data: bytes) -> None:
    """Append ``data`` to ``path`` the way a logger does."""
    with open(path, "ab") as f:
        f.write(data)


def wait_until(predicate: Callable[[], T], timeout: float = 30, what: str = "condition",
               interval: float = 0.01) -> T:
    """Poll ``predicate()`` until it is truthy and return its value; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

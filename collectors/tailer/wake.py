"""inotify wake-ups (watchdog) for the tailer's poll loop.

Correctness never depends on them: the poll pass alone follows every file. An event on a tailed
path only makes the next pass start now instead of after ``poll_interval``. A directory that
cannot be watched (missing at start, inotify limits reached) is retried every
``RETRY_SECONDS``; meanwhile it is simply polled.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

log = logging.getLogger("mtaq.tailer")

#: Seconds between retries of inotify watches on directories that could not be watched.
RETRY_SECONDS = 10.0

# Our own open()/close() of a file would otherwise wake the loop, which then reads nothing.
_WAKE_EVENTS: list[type[FileSystemEvent]] = [
    FileModifiedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
]


class _WakeHandler(FileSystemEventHandler):
    """Wakes the poll loop on events that touch one of the tailed paths."""

    def __init__(self, paths: set[str], wake: Callable[[], None]) -> None:
        super().__init__()
        self._paths = paths
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        """Wake on writes, creation, rotation or deletion of a tailed file."""
        for p in (event.src_path, getattr(event, "dest_path", "")):
            if p and os.fsdecode(p) in self._paths:
                self._wake()
                return


class Waker:
    """Watches the directories of ``paths`` and calls ``wake`` when a tailed file changes."""

    def __init__(self, paths: set[str], wake: Callable[[], None], poll_interval: float) -> None:
        self._handler = _WakeHandler(paths, wake)
        self._poll_interval = poll_interval
        self._unwatched = {os.path.dirname(p) for p in paths}
        self._retry_at = 0.0
        self._observer = Observer()
        self._observer.daemon = True

    def start(self) -> None:
        """Start the observer (raises ``OSError`` when inotify is unavailable) and the watches."""
        self._observer.start()
        self.retry()

    @property
    def incomplete(self) -> bool:
        """Whether some directory is not watched yet."""
        return bool(self._unwatched)

    def retry(self) -> None:
        """Watch directories not watched yet, at most every ``RETRY_SECONDS``."""
        now = time.monotonic()
        if now < self._retry_at:
            return
        self._retry_at = now + RETRY_SECONDS
        for directory in sorted(self._unwatched):
            try:
                self._observer.schedule(self._handler, directory, recursive=False, event_filter=_WAKE_EVENTS)
            except OSError as exc:
                log.info("cannot watch %s (%s); polling it every %.2fs", directory, exc, self._poll_interval)
            else:
                self._unwatched.discard(directory)

    def stop(self, timeout: float) -> None:
        """Stop the observer."""
        self._observer.stop()
        self._observer.join(timeout)

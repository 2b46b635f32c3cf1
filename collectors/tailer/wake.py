"""inotify wake-ups for the tailer's poll loop (``collectors.inotify``: the kernel's own events).

Correctness never depends on them: the poll pass alone follows every file. An event on a tailed
path only makes the next pass start now instead of after ``poll_interval``. A directory that
cannot be watched (missing at start, inotify limits reached) or that went away is (re)tried every
``RETRY_SECONDS``; meanwhile it is simply polled.

One thread reads every event queued at once and wakes the loop once for all of them, at most once
per ``COALESCE_SECONDS``: syslog writes each line on its own, and a wake-up per line would cost a
pass per line. (watchdog, used before, ran each event through three threads:
a third of the agent's CPU at 1,000 lines/s.)
"""

from __future__ import annotations

import logging
import math
import os
import select
import threading
import time
from collections.abc import Callable, Iterable

from collectors import inotify as I

log = logging.getLogger("mtaq.tailer")

#: Seconds between retries of inotify watches on directories that could not be watched.
RETRY_SECONDS = 10.0
#: Seconds after a wake-up during which further events join the next one.
COALESCE_SECONDS = 0.02

# Writes, creation, renames and deletion in the directory, and the directory itself going away;
# not opens, reads or read-only closes: the tailer's own would wake it.
_EVENTS = (I.IN_MODIFY | I.IN_CLOSE_WRITE | I.IN_CREATE | I.IN_DELETE | I.IN_MOVED_FROM | I.IN_MOVED_TO
           | I.IN_DELETE_SELF | I.IN_MOVE_SELF | I.IN_ONLYDIR)


class Waker:
    """Watches the directories of ``paths`` and calls ``wake`` when a tailed file changes."""

    def __init__(self, paths: set[str], wake: Callable[[], None], poll_interval: float) -> None:
        self._names: dict[str, frozenset[str]] = {
            directory: frozenset(os.path.basename(p) for p in paths if os.path.dirname(p) == directory)
            for directory in {os.path.dirname(p) for p in paths}}
        self._wake = wake
        self._poll_interval = poll_interval
        self._lock = threading.Lock()  # _watched and _unwatched: retry() runs on the tailer's thread
        self._watched: dict[int, str] = {}  # watch descriptor -> directory
        self._unwatched = set(self._names)
        self._retry_at = 0.0
        self._inotify: I.Inotify | None = None
        self._stop_r = self._stop_w = -1
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching (raises ``OSError`` when inotify is unavailable)."""
        self._inotify = I.Inotify()
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, args=(self._inotify,), name="mtaq-tailer-wake",
                                        daemon=True)
        self._thread.start()
        self.retry()

    @property
    def incomplete(self) -> bool:
        """Whether some directory is not watched (yet, or any more)."""
        with self._lock:
            return bool(self._unwatched)

    def retry(self) -> None:
        """Watch directories not watched, at most every ``RETRY_SECONDS``."""
        now = time.monotonic()
        if now < self._retry_at or self._inotify is None:
            return
        self._retry_at = now + RETRY_SECONDS
        with self._lock:
            for directory in sorted(self._unwatched):
                try:
                    wd = self._inotify.add_watch(directory, _EVENTS)
                except OSError as exc:
                    log.info("cannot watch %s (%s); polling it every %.2fs", directory, exc, self._poll_interval)
                else:
                    self._watched[wd] = directory
                    self._unwatched.discard(directory)

    def stop(self, timeout: float) -> None:
        """Stop the thread and every watch."""
        if self._thread is None or self._inotify is None:
            return
        os.write(self._stop_w, b"x")
        self._thread.join(timeout)
        if not self._thread.is_alive():  # else it may still read them: leave them to the process's end
            for fd in (self._stop_r, self._stop_w):
                os.close(fd)
            self._inotify.close()
        self._thread = None

    def _run(self, inotify: I.Inotify) -> None:
        poller = select.poll()
        poller.register(inotify.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        pending = False  # a tailed file changed since the last wake-up
        last_wake = -COALESCE_SECONDS
        while True:
            # No timer while nothing is pending: an idle or quiet log costs no wake-up of this thread.
            timeout = None
            if pending:
                timeout = max(0, math.ceil((last_wake + COALESCE_SECONDS - time.monotonic()) * 1000))
            ready = poller.poll(timeout)
            if any(fd == self._stop_r for fd, _ in ready):
                return
            if ready and self._touches_a_tailed_file(inotify, inotify.read()):
                pending = True
            if pending and (now := time.monotonic()) >= last_wake + COALESCE_SECONDS:
                self._wake()
                pending, last_wake = False, now

    def _touches_a_tailed_file(self, inotify: I.Inotify, events: Iterable[I.Event]) -> bool:
        """Whether ``events`` (all of them are read) concern a tailed path or a watched directory itself."""
        touched = False
        with self._lock:
            for wd, mask, name in events:
                directory = self._watched.get(wd)
                if mask & I.IN_Q_OVERFLOW:
                    touched = True  # events were lost: a pass finds out what changed
                elif directory is None:
                    continue
                elif mask & I.IN_IGNORED:  # the directory went away: watch it again when it is back
                    del self._watched[wd]
                    self._unwatched.add(directory)
                    touched = True
                elif mask & I.IN_MOVE_SELF:  # the watch would follow the directory to its new name
                    inotify.rm_watch(wd)  # IN_IGNORED follows
                    touched = True
                elif mask & I.IN_DELETE_SELF or name in self._names[directory]:
                    touched = True
        return touched

"""What changed in an MTA's spool since the last scan, as inotify tells it; and when a scan must
walk the whole spool instead.

Each change that matters to a queue reader is an event on the file's directory. Postfix: cleanup
creates a file and makes it complete with ``fchmod`` (``IN_ATTRIB``); qmgr, ``postsuper
-h/-H/-r`` move it between queues by ``rename`` (``IN_MOVED_FROM``/``IN_MOVED_TO``); qmgr sets a
deferred message's next retry time with ``utime`` (``IN_ATTRIB``); delivery agents mark
recipients done in place (``IN_CLOSE_WRITE``); ``postsuper -e`` changes the mode (``IN_ATTRIB``);
delivered and deleted messages are unlinked (``IN_DELETE``); the defer service appends to a
message's defer log (``IN_CLOSE_WRITE`` in ``defer/``) and qmgr removes it. Exim: a -H file is
written under a temporary name and renamed into place (``IN_MOVED_TO``), also when a delivery
attempt or ``exim -Mf`` changes it; an attempt creates and removes a -J journal
(``IN_CREATE``/``IN_DELETE``) and appends to the message log (``IN_CLOSE_WRITE`` in ``msglog/``);
a finished message's files are unlinked (``IN_DELETE``).

``SpoolWatch`` keeps the names of those files (``QUEUE`` directories) and of changed logs
(``DEFER`` directories: Postfix's ``defer/``, Exim's ``msglog/``), and a full walk is asked for
whenever the names may be incomplete: the kernel dropped events (``IN_Q_OVERFLOW``), a watched
directory went away (``IN_IGNORED``), a hashed subdirectory or queue directory appeared (it is not
watched yet), or more names changed than are worth keeping. A thread drains the kernel's queue as
events come, so that it does not overflow between scans of a busy queue. ``ChangeTracker`` decides,
scan by scan, between a walk and an update from those names.
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from dataclasses import dataclass, field

from collectors import inotify as I

log = logging.getLogger("mtaq.spool")

#: Events on a queue directory or a ``defer/`` directory that can change what a file contributes.
#: ``IN_EXCL_UNLINK``: nothing more about a file once it is unlinked.
FILE_EVENTS = (I.IN_CREATE | I.IN_ATTRIB | I.IN_CLOSE_WRITE | I.IN_MOVED_FROM | I.IN_MOVED_TO | I.IN_DELETE
               | I.IN_DELETE_SELF | I.IN_MOVE_SELF | I.IN_ONLYDIR | I.IN_EXCL_UNLINK)
#: Events on the queue directory itself: a queue directory that appears.
ROOT_EVENTS = I.IN_CREATE | I.IN_MOVED_TO | I.IN_DELETE_SELF | I.IN_MOVE_SELF | I.IN_ONLYDIR
_LOST = I.IN_DELETE_SELF | I.IN_MOVE_SELF | I.IN_UNMOUNT
#: Changed names kept between two scans at most; past that a walk is cheaper than the names.
MAX_CHANGES = 100_000

QUEUE, DEFER, ROOT = "queue", "defer", "root"
#: Walk the whole spool at least this often, as a safety net, when inotify tracks it.
DEFAULT_FULL_SCAN_INTERVAL = 3600.0


@dataclass(slots=True)
class Changes:
    """What ``SpoolWatch.take()`` found: ``walk`` (why a full walk is needed, or None), the
    (directory, name) of each queue file that changed, those among them that were written to (a
    same-size rewrite within one clock tick keeps the file's identity: they are read again
    whatever it says) and the queue ids whose defer log changed."""

    walk: str | None = None
    files: set[tuple[str, str]] = field(default_factory=set)
    written: set[tuple[str, str]] = field(default_factory=set)
    defer_logs: set[str] = field(default_factory=set)


class SpoolWatch:
    """inotify watches on one queue's directories (``watch()`` each before listing it) and the
    changes seen since the last ``take()``. Raises ``OSError`` when inotify is unavailable."""

    def __init__(self, root: str, queue_names: tuple[str, ...], *, max_changes: int = MAX_CHANGES) -> None:
        self.root = root
        self.queue_names = frozenset(queue_names)
        self.max_changes = max_changes
        self._inotify = I.Inotify()
        self._wake_r, self._wake_w = os.pipe()
        self._paths: dict[int, tuple[str, str]] = {}  # watch descriptor -> (directory, kind)
        self._lock = threading.Lock()
        self._changes = Changes()
        self.closed = False  # after close(), every call does nothing (a scan may still be running)
        self._thread = threading.Thread(target=self._run, name=f"mtaq-spool-watch {root}", daemon=True)
        self._thread.start()

    def watch(self, path: str, kind: str) -> None:
        """Watch the directory ``path`` (``QUEUE``, ``DEFER`` or ``ROOT``). A directory that is gone
        is not watched (its listing finds nothing either); ``OSError`` for anything else, such as
        ``fs.inotify.max_user_watches`` reached."""
        with self._lock:
            if self.closed:
                return
            try:
                wd = self._inotify.add_watch(path, ROOT_EVENTS if kind == ROOT else FILE_EVENTS)
            except FileNotFoundError:
                return
            self._paths[wd] = (path, kind)

    def take(self) -> Changes:
        """The changes since the last call (everything the kernel has queued until now included)."""
        with self._lock:
            if self.closed:
                return Changes(walk="inotify closed")
            self._drain()
            changes, self._changes = self._changes, Changes()
        return changes

    def give_back(self, changes: Changes) -> None:
        """Changes taken by a scan that did not finish: the next ``take()`` returns them again."""
        with self._lock:
            if self.closed:
                return
            self._changes.walk = self._changes.walk or changes.walk
            if self._changes.walk is None:
                self._changes.files |= changes.files
                self._changes.written |= changes.written
                self._changes.defer_logs |= changes.defer_logs
                self._check_size()

    def close(self) -> None:
        """Stop the thread and remove every watch."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._inotify.close()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._inotify.fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._wake_r in ready:
                return
            with self._lock:
                if not self.closed:
                    self._drain()

    def _walk_needed(self, why: str) -> None:
        if self._changes.walk is None:
            self._changes = Changes(walk=why)  # the walk looks at every file: no names needed

    def _check_size(self) -> None:
        if len(self._changes.files) + len(self._changes.defer_logs) > self.max_changes:
            self._walk_needed(f"more than {self.max_changes} changes")

    def _drain(self) -> None:
        """Turn the queued events into changes (the lock held)."""
        for wd, mask, name in self._inotify.read():
            if mask & I.IN_Q_OVERFLOW:
                self._walk_needed("inotify queue overflow")
            elif mask & I.IN_IGNORED:
                if self._paths.pop(wd, None) is not None:
                    self._walk_needed("a watched directory went away")
            elif (watched := self._paths.get(wd)) is None:
                continue
            elif mask & _LOST:
                self._walk_needed("a watched directory went away")
            elif mask & I.IN_ISDIR:
                path, kind = watched
                hashed = name in self.queue_names if kind == ROOT else len(name) == 1
                if mask & (I.IN_CREATE | I.IN_MOVED_TO) and hashed:
                    self._walk_needed(f"new directory {path}/{name}")
            elif self._changes.walk is None:
                path, kind = watched
                if kind == QUEUE:
                    self._changes.files.add((path, name))
                    if mask & I.IN_CLOSE_WRITE:
                        self._changes.written.add((path, name))
                elif kind == DEFER:
                    self._changes.defer_logs.add(name)
                else:
                    continue
                self._check_size()


class ChangeTracker:
    """Whether the next scan of one spool walks it or looks only at what inotify saw change.

    ``subject`` (``postfix instance NAME``) names the spool in the one warning logged when inotify
    is unavailable; ``root`` and ``hashed`` are ``SpoolWatch``'s; ``inotify`` off: every scan
    walks; ``full_scan_interval``: walk at least this often (0: only when needed). A reader calls
    ``take()`` at the start of a scan, ``watch()`` for each directory before it lists it, and
    ``done()`` or ``undone()`` at its end.
    """

    def __init__(self, subject: str, root: str, hashed: tuple[str, ...], *, inotify: bool,
                 full_scan_interval: float) -> None:
        self.subject = subject
        self.root = root
        self.hashed = hashed
        self.inotify = inotify
        self.full_scan_interval = full_scan_interval
        self.watcher: SpoolWatch | None = None
        self.problem: str | None = None  # why inotify is not used (logged once)
        self.warm = False  # a walk has completed: the reader's cache holds every queued message
        self._last_walk = 0.0

    def describe(self) -> str:
        """How changes are found, for the reader's ``source()``."""
        if self.problem:
            return f"every scan stats every file: inotify unavailable ({self.problem})"
        if not self.inotify:
            return "every scan stats every file (inotify off)"
        every = f"every {self.full_scan_interval:g} s" if self.full_scan_interval else "only when needed"
        return f"inotify, full walk {every}"

    @property
    def watching(self) -> bool:
        """Whether changes are being tracked now."""
        return self.watcher is not None and not self.watcher.closed

    def take(self) -> Changes:
        """What this scan must look at: a walk (and why), or the changes inotify saw."""
        started = self.inotify and not self.problem and not self.watching and self._start()
        changes = self.watcher.take() if self.watching else Changes(walk="no inotify")  # type: ignore[union-attr]
        if not self.warm:
            changes.walk = "nothing cached yet"  # the first scan, or a first walk that did not finish
        elif started:
            changes.walk = "inotify watches set"
        elif changes.walk is None and self.full_scan_interval and \
                time.monotonic() - self._last_walk >= self.full_scan_interval:
            changes.walk = "periodic"
        return changes

    def watch(self, path: str, kind: str) -> None:
        """Watch the directory ``path`` if changes are tracked; when a watch cannot be added (e.g.
        ``fs.inotify.max_user_watches`` reached), every scan walks from now on."""
        if self.watching:
            try:
                self.watcher.watch(path, kind)  # type: ignore[union-attr]
            except OSError as exc:
                self._failed(exc)

    def done(self, changes: Changes) -> None:
        """The scan of ``changes`` completed."""
        if changes.walk is not None:
            self.warm = True
            self._last_walk = time.monotonic()

    def undone(self, changes: Changes) -> None:
        """The scan of ``changes`` did not complete: the next one gets them again."""
        if self.watcher is not None:
            self.watcher.give_back(changes)

    def close(self) -> None:
        """Stop tracking changes (the inotify thread and its watches)."""
        if self.watcher is not None:
            self.watcher.close()  # a scan still running finds it closed: its calls do nothing

    def _start(self) -> bool:
        """Start tracking changes; when inotify is unavailable, say why once and walk every scan."""
        try:
            self.watcher = SpoolWatch(self.root, self.hashed)
        except OSError as exc:
            self._failed(exc)
            return False
        return True

    def _failed(self, exc: OSError) -> None:
        self.close()
        if self.problem is None:
            log.warning("%s: inotify unavailable (%s): every queue scan stats every file "
                        "(raise fs.inotify.max_user_watches or set spool_inotify: false)", self.subject, exc)
        self.problem = str(exc)

"""Postfix's queue read from its directories (``queue_source: spool``): what showq lists, rescanned
in proportion to what changed.

showq opens every queue file on every listing: a million-message queue costs a million opens per
scan, exactly when the disk is busiest. This reader walks the same directories in showq's order
(``maildrop``, ``active``, ``incoming``, ``deferred``, ``hold``; one-character hashed
subdirectories at any depth) with ``os.scandir``, and remembers per queue id the file's identity
(inode, size, mtime in ns and the forced-expire bit of its mode) beside the message's compact
contribution to the totals (``QueueLedger``). What a file contributes is decoded as showq decodes
it (``collectors/postfix/queue_file.py``). A file that ends before its sender record is
undecodable: showq leaves it out, and here it is counted in
``mtaq_queue_skipped_messages{reason="malformed"}``.

A scan is one of two kinds:

- a **walk** ``stat``s every file and reads the new and changed ones; a message that moved between
  queues (hold, release) is re-counted without being read. Defer logs are re-read only when they
  can have changed: qmgr removes a message's defer log when it takes the message into the active
  queue, and sets the mtime of a message it defers again, so a deferred or held file whose
  identity did not change has the same defer log as at its last read; a message in the active
  queue has its defer log ``stat``ed. The first walk, when nothing is cached, reads the files in
  worker processes (``processes``), so that it uses every core, as showq and its reader do.
- an **update** looks only at the files inotify named since the last scan (``spool_watch.py``):
  one ``stat`` each, a read for the new and changed ones, and a re-read of each message whose
  defer log changed. Its cost follows the changes, not the queue.

Walks happen at the first scan, whenever inotify may have missed something (a lost event queue, a
lost watch, a new hashed subdirectory, more changes than are worth tracking), every
``full_scan_interval`` seconds as a safety net, and on every scan where inotify is unavailable
(logged once; then ``source()`` says so).

``files_per_second`` caps the files a scan opens, so that a scan during an incident never competes
with delivery; a scan that runs out of time keeps what it read, and the next one goes on from there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from collectors.deadline import Deadline
from collectors.postfix.queue_file import (
    IDENTITY,
    QUEUE_ID,
    BatchEntry,
    MessageFields,
    QueueFiles,
    ReadBudget,
    hash_path,
    identity,
    ready,
)
from collectors.postfix.spool_workers import ReadWorkers, WorkerError
from collectors.queue_model import UNDECODABLE, QueueLedger, QueueMessage, QueueRecipient
from collectors.spool_watch import DEFAULT_FULL_SCAN_INTERVAL, Changes, ChangeTracker
from collectors.spool_watch import DEFER as WATCH_DEFER
from collectors.spool_watch import QUEUE as WATCH_QUEUE
from collectors.spool_watch import ROOT as WATCH_ROOT

log = logging.getLogger("mtaq.postfix")

#: showq's order; ``maildrop`` is flat, the others may be hashed.
SPOOL_QUEUES = ("maildrop", "active", "incoming", "deferred", "hold")
DEFER = "defer"
ACTIVE = "active"
MAILDROP = "maildrop"
DEFAULT_DUP_FILTER_LIMIT = 1000
DEFAULT_EMPTY_ADDRESS = "MAILER-DAEMON"
#: A cached entry: the file's identity followed by the message's contribution.
_ID = IDENTITY.size
#: Below this many files to read, worker processes cost more to start than they save.
POOL_MIN_FILES = 5000
#: Queue files per worker task: small enough that a deadline or a stop is noticed quickly, and that
#: two tasks fit in a pipe.
_BATCH = 500


def worker_count() -> int:
    """The CPUs this process may run on (its affinity mask, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _contribution(ledger: QueueLedger, fields: MessageFields | None) -> bytes:
    """What a message read from the spool contributes (an undecodable one: ``UNDECODABLE``)."""
    if fields is None:
        return UNDECODABLE
    arrival, size, sender, recipients, _ = fields
    return ledger.encode_listed(sender, recipients, arrival, size)


@dataclass(slots=True)
class ScanStats:
    """What the last ``scan()`` did: whether it walked the queue (and why), the worker processes
    it read with, files ``stat``ed, files read, messages moved without a read, messages gone."""

    walk: str | None = None
    workers: int = 0
    files: int = 0
    read: int = 0
    moved: int = 0
    removed: int = 0


@dataclass(slots=True)
class _Directory:
    """A directory being walked: the entries cached before (taken out as they are found again),
    the entries found, and the worker tasks still reading some of its files."""

    queue: str
    old: dict[str, bytes]
    fresh: dict[str, bytes]
    pending: int = 0
    listed: bool = False


class SpoolQueueReader:
    """One Postfix instance's queue from its directories: ``read()`` lists every message (as
    showq would), ``scan()`` updates a ``QueueLedger`` with what changed since the last scan.
    ``inotify``: track changes between walks (else every scan is a walk); ``full_scan_interval``:
    walk at least this often (0: only when needed); ``processes``: worker processes for the first
    walk (None: one per CPU; 1: none)."""

    def __init__(self, name: str, queue_directory: str, *, files_per_second: float = 0,
                 dup_filter_limit: int = DEFAULT_DUP_FILTER_LIMIT, empty_address: str = DEFAULT_EMPTY_ADDRESS,
                 inotify: bool = True, full_scan_interval: float = DEFAULT_FULL_SCAN_INTERVAL,
                 processes: int | None = None) -> None:
        self.name = name
        self.root = queue_directory
        self.files_per_second = files_per_second
        self.dup_filter_limit = dup_filter_limit
        self.empty_address = empty_address
        self.processes = processes or worker_count()
        self.source_info = ("spool", queue_directory)
        # Per directory, per queue id: identity + contribution of each message last seen there.
        self._dirs: dict[str, dict[str, bytes]] = {}
        self._queue_of: dict[str, str] = {}
        self._depths: dict[str, set[int]] = {}  # queue -> depths of its directories seen
        self._defer_ids: dict[str, bytes] = {}  # queue id -> its defer log's identity, active messages only
        self._ledger: QueueLedger | None = None
        self._files = QueueFiles(queue_directory, 1, dup_filter_limit, empty_address)
        self.tracker = ChangeTracker(f"postfix instance {name}", queue_directory, (*SPOOL_QUEUES, DEFER),
                                     inotify=inotify, full_scan_interval=full_scan_interval)
        self.stats = ScanStats()

    def source(self) -> str:
        """The queue directory, how changes are found and the read budget."""
        budget = f"at most {self.files_per_second:g} files/s" if self.files_per_second > 0 else "no read budget"
        return f"spool {self.root} (incremental: {self.tracker.describe()}; {budget})"

    def preflight(self) -> list[str]:
        """Why the queue directories cannot be read from here: missing (Postfix may create them
        later) or without read access."""
        if not os.path.isdir(self.root):
            return [f"postfix instance {self.name}: queue directory {self.root} does not exist"]
        return self.access_problems()

    def access_problems(self) -> list[str]:
        """Queue directories that exist but cannot be read from here (a deployment problem)."""
        return [f"postfix instance {self.name}: no read access to {path} (the spool source needs Postfix's uid "
                "or root)" for path in (os.path.join(self.root, queue) for queue in (*SPOOL_QUEUES, DEFER))
                if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK)]

    def close(self) -> None:
        """Stop tracking changes (the inotify thread and its watches)."""
        self.tracker.close()

    # -- walking --------------------------------------------------------------------------

    def _directories(self, queue: str) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
        """Each directory of ``queue`` with its other entries; one-character subdirectories are
        hashed directories, walked after their parent (``mail_scan_dir_next``). Each is watched
        before it is listed, so that a change made after the listing is an event."""
        top = os.path.join(self.root, queue)
        pending = [top]
        depths = self._depths.setdefault(queue, set())
        while pending:
            path = pending.pop()
            self.tracker.watch(path, WATCH_QUEUE)
            try:
                listing = os.scandir(path)
            except FileNotFoundError:
                continue  # Postfix creates its queue directories when it starts
            depths.add(path.count("/") - top.count("/"))
            files = []
            with listing:
                for entry in listing:
                    if len(entry.name) == 1 and queue != MAILDROP and entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        files.append(entry)
            yield path, files

    def _defer_depth(self) -> int:
        """How deep ``defer/`` is hashed (``hash_queue_depth`` if ``defer`` is in ``hash_queue_names``):
        found from the directory itself, so that no Postfix binary is needed."""
        depth, path = 0, os.path.join(self.root, DEFER)
        while True:
            try:
                listing = os.scandir(path)
            except FileNotFoundError:
                return depth
            with listing:
                # Hashed directories hold a few dozen subdirectories; an unhashed one holds files.
                subdirectory = next((e.path for _, e in zip(range(64), listing, strict=False)
                                     if len(e.name) == 1 and e.is_dir(follow_symlinks=False)), None)
            if subdirectory is None:
                return depth
            depth, path = depth + 1, subdirectory

    def _watch_defer_logs(self) -> None:
        """Watch ``defer/`` and its hashed subdirectories (their files are not listed)."""
        if not self.tracker.watching:
            return
        level = [os.path.join(self.root, DEFER)]
        for depth in range(self._files.defer_depth + 1):
            below = []
            for path in level:
                self.tracker.watch(path, WATCH_DEFER)
                if depth < self._files.defer_depth:
                    try:
                        with os.scandir(path) as listing:
                            below += [e.path for e in listing if len(e.name) == 1 and e.is_dir(follow_symlinks=False)]
                    except FileNotFoundError:
                        continue
            level = below

    def _check_root(self) -> None:
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"queue directory {self.root} does not exist")

    # -- reading one message ----------------------------------------------------------------

    def _message(self, queue: str, path: str, queue_id: str, st: os.stat_result,
                 budget: ReadBudget | None = None) -> QueueMessage | None:
        """The message of the queue file at ``path`` as showq lists it; None when undecodable.
        Raises ``FileNotFoundError`` when the file went away."""
        fields = self._files.message(path, queue_id, st, budget)
        if fields is None:
            return None
        arrival, size, sender, recipients, forced = fields
        return QueueMessage(queue, queue_id, arrival, size, sender,
                            tuple(QueueRecipient(address, reason) for address, reason in recipients), forced)

    # -- full listing -------------------------------------------------------------------------

    def read(self, deadline: Deadline) -> Iterator[QueueMessage]:
        """Every queued message, each file read afresh (what showq would list); undecodable files
        are left out, as showq leaves them out."""
        self._check_root()
        self._files = QueueFiles(self.root, self._defer_depth(), self.dup_filter_limit, self.empty_address)
        budget = ReadBudget(self.files_per_second, deadline)
        for queue in SPOOL_QUEUES:
            for _, entries in self._directories(queue):
                for entry in entries:
                    deadline.check()
                    try:
                        st = entry.stat(follow_symlinks=False)
                        if not ready(st.st_mode) or not QUEUE_ID.fullmatch(entry.name):
                            continue
                        message = self._message(queue, entry.path, entry.name, st, budget)
                    except FileNotFoundError:
                        continue  # moved or delivered since the directory was listed
                    if message is not None:
                        yield message

    # -- incremental scan ---------------------------------------------------------------------

    def scan(self, deadline: Deadline, ledger: QueueLedger) -> None:
        """Bring ``ledger`` up to date with the queue: walk it, or look only at what inotify says
        changed (see the module docstring). Whenever it stops (deadline, error), the ledger holds
        exactly the contributions of the entries remembered, so the next scan goes on from there."""
        if ledger is not self._ledger:  # a new ledger starts from nothing
            self._dirs.clear()
            self._defer_ids.clear()
            self.tracker.warm = False
            self._ledger = ledger
        self._check_root()
        self._files = QueueFiles(self.root, self._defer_depth(), self.dup_filter_limit, self.empty_address)
        budget = ReadBudget(self.files_per_second, deadline)
        changes = self.tracker.take()
        self.stats = ScanStats(walk=changes.walk)
        gone: dict[str, tuple[str, bytes]] = {}  # queue id -> (directory, entry) no longer there
        done = False
        try:
            if changes.walk is None:
                self._update(changes, gone, ledger, budget)
            else:
                self._walk(gone, ledger, budget)
            done = True
        finally:
            self.stats.removed = len(gone)
            while gone:  # no longer where they were, and not found elsewhere
                _, (path, entry) = gone.popitem()
                ledger.remove(entry[_ID:], self._queue_of[path], bool(entry[_ID - 1]))
            if not done:
                self.tracker.undone(changes)
        self.tracker.done(changes)
        active = {name for path, names in self._dirs.items() if self._queue_of[path] == ACTIVE for name in names}
        self._defer_ids = {name: v for name, v in self._defer_ids.items() if name in active}

    def _walk(self, gone: dict[str, tuple[str, bytes]], ledger: QueueLedger, budget: ReadBudget) -> None:
        """Look at every file; the first walk reads in worker processes when there is enough to read."""
        walked: set[str] = set()
        self.tracker.watch(self.root, WATCH_ROOT)
        self._watch_defer_logs()
        listings = ((queue, path, entries) for queue in SPOOL_QUEUES for path, entries in self._directories(queue))
        if self.tracker.warm or self.processes < 2:
            for queue, path, entries in listings:
                walked.add(path)
                self._queue_of[path] = queue
                self._walk_directory(queue, path, entries, gone, ledger, budget)
        else:
            try:
                self._first_walk(listings, walked, gone, ledger, budget)
            except WorkerError as exc:  # e.g. no Python to start here: the next scans read in this process
                log.warning("postfix instance %s: %s; reading the queue in the agent's process from now on",
                            self.name, exc)
                self.processes = 1
                raise
        for path in [p for p in self._dirs if p not in walked]:  # a directory that went away
            gone.update((name, (path, entry)) for name, entry in self._dirs.pop(path).items())

    def _walk_directory(self, queue: str, path: str, entries: list[os.DirEntry[str]],
                        gone: dict[str, tuple[str, bytes]], ledger: QueueLedger, budget: ReadBudget) -> None:
        """The hot loop of a walk: one ``stat`` per file; unchanged entries are carried over as they are."""
        directory = _Directory(queue, self._dirs.get(path, {}), {})
        check = budget.deadline.check
        completed = False
        self.stats.files += len(entries)
        try:
            for count, entry in enumerate(entries):
                if not count & 1023:
                    check()
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                self._visit(directory, path, entry.name, st, gone, ledger, budget)
            completed = True
        finally:
            self._finish(path, directory, gone, completed)

    def _finish(self, path: str, directory: _Directory, gone: dict[str, tuple[str, bytes]], completed: bool) -> None:
        """The directory's entries are now those found; the cached ones not found are gone (or,
        when the walk stopped before the end, still counted as before)."""
        if completed:
            gone.update((name, (path, entry)) for name, entry in directory.old.items())
        else:
            directory.fresh.update(directory.old)
        self._dirs[path] = directory.fresh

    def _visit(self, directory: _Directory, path: str, name: str, st: os.stat_result,
               gone: dict[str, tuple[str, bytes]], ledger: QueueLedger, budget: ReadBudget,
               force: bool = False) -> None:
        """One file found in ``directory``: carried over when unchanged, else settled."""
        if not ready(st.st_mode):
            return  # still being written, or not a queue file
        key = identity(st)
        cached = directory.old.pop(name, None)
        if cached is not None and not force and directory.queue != ACTIVE and cached.startswith(key):
            directory.fresh[name] = cached
        elif cached is not None or QUEUE_ID.fullmatch(name):
            try:
                self._settle(directory.queue, path, name, st, key, cached, directory.fresh, gone, ledger, budget,
                             force)
            except BaseException:
                if cached is not None:
                    directory.fresh[name] = cached  # still counted as it was
                raise

    def _settle(self, queue: str, path: str, name: str, st: os.stat_result, key: bytes, cached: bytes | None,
                fresh: dict[str, bytes], gone: dict[str, tuple[str, bytes]], ledger: QueueLedger,
                budget: ReadBudget, force: bool) -> None:
        """Count a file that is not an unchanged entry of its directory: one that moved here is moved
        in the ledger without being read; a new or changed one is read. Nothing changes until the
        file has been read, so that an interrupted read leaves the ledger as it was."""
        previous, previous_path = cached, path
        if previous is None:
            previous_path, previous = self._elsewhere(name, gone)
        entry = previous
        if force or previous is None or not previous.startswith(key) or \
                (queue == ACTIVE and not self._same_defer_log(name)):
            try:
                fields = self._files.message(f"{path}/{name}", name, st, budget)
            except FileNotFoundError:
                entry = None  # gone since its directory was listed
            else:
                entry = key + _contribution(ledger, fields)
            self.stats.read += 1
        elif previous_path != path:
            self.stats.moved += 1
        defer_identity = self._files.defer_identity(name) if queue == ACTIVE and entry is not None else None
        # Nothing below raises: the ledger and the cache change together.
        if previous is not None:
            if previous_path != path and gone.pop(name, None) is None:
                del self._dirs[previous_path][name]
            ledger.remove(previous[_ID:], self._queue_of[previous_path], bool(previous[_ID - 1]))
        if entry is not None:
            ledger.add(entry[_ID:], queue, bool(entry[_ID - 1]))
            fresh[name] = entry
        if defer_identity is not None:
            self._defer_ids[name] = defer_identity

    def _elsewhere(self, name: str, gone: dict[str, tuple[str, bytes]]) -> tuple[str, bytes | None]:
        """Where a queue id new to its directory was before: a directory walked earlier in this
        scan (``gone``), or, once the cache is complete, one still to be walked (a message
        released from hold is walked in ``deferred`` before ``hold``). Only saves a read."""
        moved = gone.get(name)
        if moved is not None:
            return moved
        if self.tracker.warm:
            for path in self._candidates(name):
                entry = self._dirs.get(path, {}).get(name)
                if entry is not None:
                    return path, entry
        return "", None

    def _candidates(self, name: str) -> Iterator[str]:
        """The directories where a message ``name`` can be, at the hash depths seen in each queue."""
        for queue in SPOOL_QUEUES:
            for depth in self._depths.get(queue, ()):
                yield os.path.join(self.root, queue, hash_path(name, depth)).rstrip("/")

    def _same_defer_log(self, queue_id: str) -> bool:
        """Whether an active message's defer log is the one it had when it was last read here."""
        known = self._defer_ids.get(queue_id)
        return known is not None and known == self._files.defer_identity(queue_id)

    # -- the first walk, in worker processes --------------------------------------------------

    def _first_walk(self, listings: Iterator[tuple[str, str, list[os.DirEntry[str]]]], walked: set[str],
                    gone: dict[str, tuple[str, bytes]], ledger: QueueLedger, budget: ReadBudget) -> None:
        """A walk with nothing (or little) cached: once a directory has ``POOL_MIN_FILES`` files
        not cached, those are read ``_BATCH`` at a time by worker processes while this one lists
        directories, compares the cached files and counts what the workers read. Few tasks are in
        flight, so memory stays bounded whatever the queue size."""
        deadline = budget.deadline
        workers: ReadWorkers | None = None
        open_dirs: dict[str, _Directory] = {}
        rate = self.files_per_second / self.processes

        def count(results: Iterator[tuple[str, list[BatchEntry]]]) -> None:
            for path, batch in results:
                directory = open_dirs[path]
                self._count_batch(directory, path, batch, ledger)
                directory.pending -= 1
                if directory.listed and not directory.pending:
                    self._finish(path, open_dirs.pop(path), gone, True)

        completed = False
        try:
            for queue, path, entries in listings:
                walked.add(path)
                self._queue_of[path] = queue
                cached = self._dirs.get(path, {})
                unread = [entry.name for entry in entries
                          if entry.name not in cached and QUEUE_ID.fullmatch(entry.name)]
                if workers is None and len(unread) >= POOL_MIN_FILES:
                    workers = ReadWorkers(self.processes)
                    self.stats.workers = self.processes
                if workers is None:
                    self._walk_directory(queue, path, entries, gone, ledger, budget)
                    continue
                directory = open_dirs[path] = _Directory(queue, cached, {})
                self.stats.files += len(entries)
                for n, entry in enumerate(entries):
                    if not n & 1023:
                        deadline.check()
                    if entry.name in cached:
                        try:
                            self._visit(directory, path, entry.name, entry.stat(follow_symlinks=False), gone, ledger,
                                        budget)
                        except FileNotFoundError:
                            continue
                for at in range(0, len(unread), _BATCH):
                    names = unread[at:at + _BATCH]
                    directory.pending += 1
                    count(workers.submit(path, self._files, path, names, rate, deadline))
                    self.stats.read += len(names)
                directory.listed = True
                if not directory.pending:
                    self._finish(path, open_dirs.pop(path), gone, True)
            if workers is not None:
                count(workers.results(deadline))
            completed = True
        finally:
            if workers is not None:
                workers.close()
            for path, directory in open_dirs.items():
                self._finish(path, directory, gone, completed)

    def _count_batch(self, directory: _Directory, path: str, batch: list[BatchEntry], ledger: QueueLedger) -> None:
        """Count what a worker read: each file is new here (cached ones are compared in this process)."""
        queue, fresh, add = directory.queue, directory.fresh, ledger.add
        for name, key, fields in batch:
            entry = key + _contribution(ledger, fields)
            add(entry[_ID:], queue, bool(key[-1]))
            fresh[name] = entry

    # -- an update from inotify's changes -----------------------------------------------------

    def _update(self, changes: Changes, gone: dict[str, tuple[str, bytes]], ledger: QueueLedger,
                budget: ReadBudget) -> None:
        """Look only at the files that changed: each is ``stat``ed where inotify saw it, and is
        counted there, moved, read again or gone; a message whose defer log changed is read again
        wherever it is now."""
        check = budget.deadline.check
        rereads = changes.defer_logs
        for count, (path, name) in enumerate(changes.files):
            if not count & 255:
                check()
            self._look_at(path, name, gone, ledger, budget, name in rereads or (path, name) in changes.written)
        for name in rereads - {name for _, name in changes.files}:
            check()
            path = None if name in gone else next((p for p in self._candidates(name) if name in self._dirs.get(p, {})),
                                                  None)
            if path is not None:  # else not queued (any more), or not complete yet: read when it is
                self._look_at(path, name, gone, ledger, budget, True)

    def _look_at(self, path: str, name: str, gone: dict[str, tuple[str, bytes]], ledger: QueueLedger,
                 budget: ReadBudget, force: bool) -> None:
        """One file inotify named: the walk's ``_visit`` for a directory of one."""
        queue = self._queue_of.get(path)
        if queue is None:
            return  # not a directory a walk found (cannot happen: watches come from walks)
        self.stats.files += 1
        cache = self._dirs.setdefault(path, {})
        directory = _Directory(queue, {name: cache.pop(name)} if name in cache else {}, cache)
        try:
            st = os.stat(f"{path}/{name}", follow_symlinks=False)
        except FileNotFoundError:
            st = None
        try:
            if st is not None:
                self._visit(directory, path, name, st, gone, ledger, budget, force)
        finally:
            # Not there (any more), or not a complete queue file: gone from here, unless found
            # elsewhere later in this update.
            gone.update((n, (path, entry)) for n, entry in directory.old.items())

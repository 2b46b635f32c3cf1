"""Follow log files (and stdin) through rotation, truncation and restarts, MTA-agnostic.

The Postfix and Exim log collectors hand a :class:`Tailer` their paths and a ``sink``; the tailer
turns bytes into batches of raw lines and keeps its own counters (``stats``). It never parses.

How a file is followed (``SPEC.md`` §9, ``postfix-anchors.md`` §5 row 2 and §10.2):

- Correctness comes from the poll pass alone (:meth:`Tailer.poll_once`): read the open fd to EOF,
  then ``stat()`` the path and compare device/inode and size with the fd. inotify (watchdog) only
  wakes the loop early; when it cannot watch a directory the loop simply polls.
- Rename + create (logrotate ``create``, ``postfix logrotate``'s ``maillog_file.YYYYMMDD-HHMMSS``):
  when the path names a new inode, the old fd is drained to EOF first, then the new file is read
  from offset 0. The old fd stays open and is drained on every pass for ``rotate_grace`` seconds
  after it last grew, because the writer (rsyslog until its postrotate HUP, postlogd until
  reopened) may keep appending to it for a while; then its final partial line is flushed as a
  line and it is closed.
- Copytruncate: the same inode becoming shorter than our offset means truncation; the held
  partial line is flushed and the file is re-read from 0. Lines appended between our last pass and
  the truncation exist only in logrotate's copy: copytruncate itself loses them, and we never read
  the copy, so nothing is counted twice. A file truncated and regrown past our offset between two
  passes cannot be told from growth; the poll interval bounds that window.
- Deleted file: the old fd keeps being drained; once the path reappears it is read from 0. A
  deleted file that stays idle for ``rotate_grace`` is closed so its disk space can be freed.
- Missing or unreadable path: the error is kept in ``stats[source].last_error`` and the open is
  retried on every pass; the tailer recovers by itself.
- Lines longer than ``max_line_bytes`` are delivered cut to that length and the rest of the line
  is discarded, so memory stays bounded and the consumer counts them as unparsed.

Checkpoint and delivery guarantee: ``checkpoint_path`` holds JSON ``{path: {inode, dev, offset,
...}}``, written atomically (temp file, fsync, ``os.replace``, directory fsync) at most every
``checkpoint_interval`` seconds after a batch, and on :meth:`Tailer.stop`. The offset recorded for
a file is only ever the end of lines that ``sink()`` has already returned from, so a crash never
skips a line: delivery is *at least once*, and after a crash the lines of the last
uncheckpointed interval are delivered again. After a clean :meth:`Tailer.stop` the checkpoint is
exact and nothing is delivered twice. A held partial line is not part of the offset, so a restart
re-reads it and delivers it whole. On restart a checkpointed inode that is no longer at the path is
searched for among the path's siblings (``mail.log.1``, ``mail.log-20240101``,
``maillog.20240101-120000``) and drained from its offset before the new file is read from 0. A
fingerprint (CRC of the file's first bytes) guards against a recycled inode number.

Limits, by design: a file that is created and rotated away (or deleted) between two passes is
never opened, so its lines are lost (two rotations within one ``poll_interval``; inotify makes
this unlikely, not impossible). Lines a writer appends to a rotated file more than
``rotate_grace`` seconds after it last grew are not read. Rotated files are looked for on
restart only in the path's own directory (not logrotate's ``olddir``) and only uncompressed.
Use one checkpoint file per Tailer: each write replaces the whole file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import stat
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import IO, Any, Literal

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

Sink = Callable[[str, list[bytes]], None]
Clock = Callable[[], float]

#: Source name meaning "read standard input".
STDIN = "-"
#: Bytes per ``read()``: large enough that splitting dominates syscall overhead.
READ_SIZE = 1 << 20
#: How many leading bytes of a file the restart fingerprint covers.
FINGERPRINT_BYTES = 1024
#: Per-source byte budget of one background pass, so one busy file cannot starve the others.
PASS_BUDGET = 64 << 20
#: Seconds between retries of inotify watches on directories that could not be watched.
WATCH_RETRY_SECONDS = 10.0
#: Stdin chunks buffered between the reader thread and the pass; a full queue pushes back on
#: the writer instead of buffering without bound.
STDIN_QUEUE_CHUNKS = 16

# Our own open()/close() of a file would otherwise wake the loop, which then reads nothing.
_WAKE_EVENTS: list[type[FileSystemEvent]] = [
    FileModifiedEvent,
    FileCreatedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    FileClosedEvent,
]


@dataclass
class SourceStats:
    """Counters for one source; the log collectors export them (``mtaq_log_*``).

    Also readable like a dict (``stats["mail.log"]["lines"]``).
    """

    lines: int = 0  # lines handed to sink()
    bytes: int = 0  # bytes read, newlines included
    reopens: int = 0  # opens after the first one: rotation, truncation, recovery from an error
    truncated_lines: int = 0  # lines cut to max_line_bytes
    last_line_time: float | None = None  # clock() when a line was last delivered
    last_error: str | None = None  # current error (missing, unreadable), None when healthy
    errors: int = 0  # distinct error episodes
    sink_errors: int = 0  # batches whose sink() call raised
    eof: bool = False  # stdin only: input ended

    def __getitem__(self, key: str) -> Any:
        """Dict-style access to a counter."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        """A plain copy, e.g. for a JSON status page."""
        return asdict(self)


class _Handle:
    """One open file (or the stdin stream) and where we are in it."""

    __slots__ = (
        "dev",
        "discarding",
        "fd",
        "fp",
        "fp_len",
        "ino",
        "last_data",
        "offset",
        "partial",
        "regular",
    )

    def __init__(self, fd: int, st: os.stat_result | None, now: float) -> None:
        self.fd = fd
        self.dev = st.st_dev if st else 0
        self.ino = st.st_ino if st else 0
        self.regular = bool(st and stat.S_ISREG(st.st_mode))
        self.offset = 0  # bytes read from fd so far (== file position)
        self.partial = b""  # trailing bytes of a line whose newline has not arrived
        self.discarding = False  # skipping the rest of an over-long (or cut-off) line
        self.last_data = now  # clock() when this handle last produced bytes
        self.fp_len = 0  # fingerprint: CRC32 of the first fp_len bytes of the file
        self.fp = 0

    def consumed(self) -> int:
        """Offset up to which every byte has been delivered or deliberately discarded."""
        return self.offset - len(self.partial)


@dataclass(frozen=True)
class _Record:
    """A checkpointed position in one file."""

    dev: int
    ino: int
    offset: int
    discarding: bool = False
    fp_len: int = 0
    fp: int = 0


@dataclass(frozen=True)
class _Hint:
    """Where to start if the path turns out to be this inode when it can finally be opened."""

    dev: int
    ino: int
    offset: int
    discarding: bool | None  # None: skip a cut-off line fragment at offset, if any


class _Source:
    """A configured path (or stdin) with its current handle and rotated-away handles."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_stdin = name == STDIN
        self.path = name if self.is_stdin else os.path.abspath(name)
        self.stats = SourceStats()
        self.current: _Handle | None = None
        self.retired: list[_Handle] = []  # rotated away, drained until idle for rotate_grace
        self.initialised = False
        self.hint: _Hint | None = None


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


class Tailer:
    """Follow files and/or stdin, delivering complete raw lines to ``sink(source, lines)``.

    ``sink`` is always called from the thread running :meth:`poll_once` (the background thread
    after :meth:`start`), never concurrently with itself. ``source`` is the configured path
    string, or ``"-"`` for stdin. Lines are bytes without the trailing ``\\n`` (a ``\\r`` or
    invalid UTF-8 is passed through untouched).

    ``clock`` stamps ``last_line_time`` and also times ``checkpoint_interval`` and
    ``rotate_grace`` (a backwards jump restarts those intervals), so tests can drive them.
    """

    def __init__(
        self,
        paths: list[str],
        sink: Sink,
        *,
        checkpoint_path: str | None,
        start_at: Literal["end", "start"] = "end",
        poll_interval: float = 0.25,
        use_inotify: bool = True,
        max_line_bytes: int = 1_048_576,
        clock: Clock = time.time,
        checkpoint_interval: float = 1.0,
        rotate_grace: float = 10.0,
        stdin: IO[bytes] | IO[str] | None = None,
        read_size: int = READ_SIZE,
    ) -> None:
        if start_at not in ("end", "start"):
            raise ValueError(f"start_at must be 'end' or 'start', not {start_at!r}")
        if max_line_bytes < 1 or read_size < 1 or poll_interval <= 0:
            raise ValueError("max_line_bytes and read_size must be >= 1, poll_interval > 0")
        if len(set(paths)) != len(paths):
            raise ValueError(f"duplicate paths: {paths}")
        self._sources = [_Source(p) for p in paths]
        self.stats: dict[str, SourceStats] = {s.name: s.stats for s in self._sources}
        self._sink = sink
        self._checkpoint_path = checkpoint_path
        self._start_at = start_at
        self._poll_interval = poll_interval
        self._use_inotify = use_inotify
        self._max_line = max_line_bytes
        self._clock = clock
        self._checkpoint_interval = checkpoint_interval
        self._rotate_grace = rotate_grace
        self._stdin = stdin
        self._read_size = read_size

        #: Why the last checkpoint load or write failed, None when fine.
        self.checkpoint_error: str | None = None
        self._loaded: dict[str, dict[str, Any]] = self._load_checkpoint()
        self._last_written: dict[str, Any] | None = None
        self._last_checkpoint = clock()

        self._lock = threading.Lock()  # one pass at a time; sink() is never re-entered
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._observer: Any = None
        self._handler: _WakeHandler | None = None
        self._unwatched: set[str] = set()
        self._watch_retry_at = 0.0
        self._passes = 0
        self._idle_pass = 0
        self._pass_cond = threading.Condition()
        self._stdin_queue: queue.Queue[bytes | None] = queue.Queue(STDIN_QUEUE_CHUNKS)
        self._stdin_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        """Start the background thread (and the inotify observer, if enabled)."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("Tailer.start() may be called once, before stop()")
        if self._use_inotify:
            try:
                self._start_observer()
            except OSError as exc:  # e.g. fs.inotify.max_user_instances reached
                log.warning("inotify unavailable (%s); polling every %.2fs", exc, self._poll_interval)
                self._observer = None
        self._thread = threading.Thread(target=self._run, name="mtaq-tailer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread, read what is left, write a final checkpoint and close every file.

        Without a checkpoint, held partial lines are delivered as lines (nobody would resume
        them); with one they stay out of the offset and are re-read whole after a restart.
        Safe to call more than once, and without :meth:`start` (after :meth:`poll_once` use).
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if not self._lock.acquire(timeout=timeout):
            log.error("tailer pass still running after %.0fs; stopping without a final checkpoint", timeout)
            return
        try:
            try:
                self._pass(budget=None)
            except Exception:  # stopping must still checkpoint and close
                log.exception("final tailer pass failed")
            if self._checkpoint_path is None:
                self._flush_all()
            self._write_checkpoint()
            for src in self._sources:
                for h in [src.current, *src.retired]:
                    if h is not None and h.fd >= 0:
                        os.close(h.fd)
                src.current = None
                src.retired = []
        finally:
            self._lock.release()

    def poll_once(self) -> int:
        """Do one synchronous pass: read every source to its current end and deliver the lines.

        Detects rotation, truncation, deletion and recovery, and writes the checkpoint if
        ``checkpoint_interval`` has passed. Returns the number of bytes read. The background
        thread calls exactly this; tests and one-shot readers (``analyze``) call it directly.
        """
        with self._lock:
            return self._pass(budget=None)[0]

    def flush(self) -> None:
        """Deliver every held partial line as a line: the input is known to have ended.

        For one-shot reads of finished files. Bytes appended later to such a line would be
        delivered as a separate line.
        """
        with self._lock:
            self._flush_all()

    def wake(self) -> None:
        """Ask the background thread for a pass now (an inotify event does the same)."""
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until a pass that started after this call found nothing new to read.

        Without a running thread, runs passes itself. Returns False on timeout.
        """
        deadline = time.monotonic() + timeout
        if self._thread is None:
            while time.monotonic() < deadline:
                if self.poll_once() == 0:
                    return True
            return False
        with self._pass_cond:
            started_before = self._passes
            self._wake.set()
            while self._idle_pass <= started_before:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._pass_cond.wait(left)
        return True

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """A copy of every source's counters, for a status page or a test."""
        return {name: st.as_dict() for name, st in self.stats.items()}

    def __enter__(self) -> Tailer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the pass

    def _run(self) -> None:
        while not self._stopping.is_set():
            # Clear before the pass: an event that arrives during it must cause another pass.
            self._wake.clear()
            with self._pass_cond:
                self._passes += 1
                this_pass = self._passes
            nbytes, more = 0, False
            try:
                with self._lock:
                    if self._stopping.is_set():
                        break
                    nbytes, more = self._pass(budget=PASS_BUDGET)
            except Exception:  # the loop must survive anything a pass hits
                log.exception("tailer pass failed")
            if nbytes == 0:
                with self._pass_cond:
                    self._idle_pass = this_pass
                    self._pass_cond.notify_all()
            if self._unwatched:
                self._retry_watches()
            if not more:
                self._wake.wait(self._poll_interval)

    def _pass(self, budget: int | None) -> tuple[int, bool]:
        """Read every source once; return (bytes read, whether a budget cut a read short)."""
        total, more = 0, False
        for src in self._sources:
            before = src.stats.bytes
            try:
                src_more = self._poll_stdin(src, budget) if src.is_stdin else self._poll_file(src, budget)
            except OSError as exc:
                # An I/O error on an open fd (EIO, a vanished network mount): drop the handle,
                # remember the position, and let the next pass reopen it.
                self._set_error(src, exc)
                self._drop_current(src)
                src_more = False
            total += src.stats.bytes - before
            more = more or src_more
        self._maybe_checkpoint()
        return total, more

    def _poll_file(self, src: _Source, budget: int | None) -> bool:
        if not src.initialised:
            self._init_file(src)
        now = self._clock()
        more = False
        for h in list(src.retired):
            try:
                n, eof = self._drain(src, h, budget)
            except OSError as exc:
                log.warning("%s: dropping rotated file (inode %d): %s", src.name, h.ino, exc)
                os.close(h.fd)
                src.retired.remove(h)
                continue
            if n:
                h.last_data = now
            if not eof:
                more = True
            elif self._idle(h, now):
                self._flush_partial(src, h)
                os.close(h.fd)
                src.retired.remove(h)
        h = src.current
        if h is None:
            h = self._open_current(src, counted=True)
            if h is None:
                return more
        n, eof = self._drain(src, h, budget)
        if n:
            h.last_data = now
        if not eof:
            return True
        if h.regular:
            more = self._check_path(src, h, now, budget) or more
        return more

    def _check_path(self, src: _Source, h: _Handle, now: float, budget: int | None) -> bool:
        """After draining ``h`` to EOF: has the path been rotated, truncated or deleted?"""
        try:
            st = os.stat(src.path)
        except FileNotFoundError:
            # Renamed away without a successor yet, or deleted: keep draining the old fd. A
            # deleted file nobody writes to any more is closed so its space can be reclaimed.
            if os.fstat(h.fd).st_nlink == 0 and self._idle(h, now):
                log.info("%s: deleted and idle; closing it and waiting for the path", src.name)
                self._flush_partial(src, h)
                os.close(h.fd)
                src.current = None
            return False
        except OSError as exc:  # e.g. the directory lost its x bit: keep the open fd going
            self._set_error(src, exc)
            return False
        if src.stats.last_error is not None:
            self._clear_error(src)
        if (st.st_dev, st.st_ino) != (h.dev, h.ino):
            # Rotated. Bytes may have been appended between our drain and the stat.
            if not self._drain(src, h, budget)[1]:
                return True  # finish the old file on the next pass before switching
            log.info("%s: rotated (inode %d -> %d)", src.name, h.ino, st.st_ino)
            # The writer may still append to the old file until it reopens (postrotate HUP), so
            # the grace period starts now, however long the file had been quiet.
            h.last_data = now
            src.retired.append(h)
            src.current = None
            new = self._open_current(src, counted=True)
            if new is None:
                return False
            return not self._drain(src, new, budget)[1]
        if os.fstat(h.fd).st_size < h.offset:
            log.info("%s: truncated below offset %d; reading from the start", src.name, h.offset)
            self._flush_partial(src, h)
            self._seek(h, 0)
            h.fp_len = 0
            src.stats.reopens += 1
            return not self._drain(src, h, budget)[1]
        return False

    def _drain(self, src: _Source, h: _Handle, budget: int | None) -> tuple[int, bool]:
        """Read ``h`` to EOF (or ``budget`` bytes); return (bytes read, reached EOF)."""
        total = 0
        fd, size, st = h.fd, self._read_size, src.stats
        while True:
            try:
                chunk = os.read(fd, size)
            except BlockingIOError:  # a FIFO with no data
                return total, True
            if not chunk:
                return total, True
            n = len(chunk)
            h.offset += n
            total += n
            st.bytes += n
            self._feed(src, h, chunk)
            self._maybe_checkpoint()
            if budget is not None and total >= budget:
                return total, False

    def _feed(self, src: _Source, h: _Handle, data: bytes) -> None:
        """Split ``data`` into lines, deliver the complete ones, hold the trailing fragment."""
        max_len = self._max_line
        if h.discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return  # all of it belongs to the line being skipped
            data = data[nl + 1 :]
            h.discarding = False
        if h.partial:
            data = h.partial + data
            h.partial = b""
        lines = data.split(b"\n")
        tail = lines.pop()
        truncated = 0
        # Only a buffer longer than the limit can hold an over-long line; skip the scan otherwise.
        if len(data) > max_len and lines and max(map(len, lines)) > max_len:
            truncated = sum(1 for line in lines if len(line) > max_len)
            lines = [line[:max_len] for line in lines]
        if len(tail) > max_len:
            # Never buffer more than one line's worth: deliver the head now, drop the rest.
            lines.append(tail[:max_len])
            truncated += 1
            h.discarding = True
            tail = b""
        h.partial = tail
        if truncated:
            src.stats.truncated_lines += truncated
        if lines:
            self._deliver(src, lines)

    def _deliver(self, src: _Source, lines: list[bytes]) -> None:
        try:
            self._sink(src.name, lines)
        except Exception:  # a consumer bug must not stop the other lines
            # The batch counts as consumed: re-delivering a batch that crashes the sink would
            # wedge the source forever.
            src.stats.sink_errors += 1
            log.exception("%s: sink failed on a batch of %d lines; batch skipped", src.name, len(lines))
        st = src.stats
        st.lines += len(lines)
        st.last_line_time = self._clock()

    def _flush_partial(self, src: _Source, h: _Handle) -> None:
        """The file will not grow any more: its unterminated last line is a line."""
        if h.partial:
            line, h.partial = h.partial, b""
            self._deliver(src, [line])
        h.discarding = False

    def _flush_all(self) -> None:
        for src in self._sources:
            for h in [src.current, *src.retired]:
                if h is not None:
                    self._flush_partial(src, h)

    def _idle(self, h: _Handle, now: float) -> bool:
        if now < h.last_data:  # the clock went backwards: restart the grace period
            h.last_data = now
            return False
        return now - h.last_data >= self._rotate_grace

    # ------------------------------------------------------------------ opening

    def _open(self, src: _Source) -> _Handle | None:
        """Open the path, or record why not."""
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on regular files).
            fd = os.open(src.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self._set_error(src, exc)
            return None
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), src.path)
        except OSError as exc:
            os.close(fd)
            self._set_error(src, exc)
            return None
        return _Handle(fd, st, self._clock())

    def _open_current(self, src: _Source, *, counted: bool) -> _Handle | None:
        """(Re)open the path as the current file, from 0 unless a hint says otherwise."""
        h = self._open(src)
        if h is None:
            return None
        hint, src.hint = src.hint, None
        if (
            hint is not None
            and h.regular
            and (h.dev, h.ino) == (hint.dev, hint.ino)
            and hint.offset <= os.fstat(h.fd).st_size
        ):
            self._seek(h, hint.offset, skip_fragment=hint.discarding is None)
            if hint.discarding is not None:
                h.discarding = hint.discarding
        if counted:
            src.stats.reopens += 1
        self._clear_error(src)
        src.current = h
        return h

    def _drop_current(self, src: _Source) -> None:
        h = src.current
        if h is None:
            return
        if h.regular:
            src.hint = _Hint(h.dev, h.ino, h.consumed(), h.discarding)
        with contextlib.suppress(OSError):
            os.close(h.fd)
        src.current = None

    def _seek(self, h: _Handle, offset: int, *, skip_fragment: bool = False) -> None:
        os.lseek(h.fd, offset, os.SEEK_SET)
        h.offset = offset
        h.partial = b""
        # Starting mid-line (start_at="end" on a file without a final newline): the rest of that
        # line is a fragment of a line we did not see, so skip it rather than deliver garbage.
        h.discarding = skip_fragment and offset > 0 and os.pread(h.fd, 1, offset - 1) != b"\n"

    def _init_file(self, src: _Source) -> None:
        """First pass for a path: resume from the checkpoint, or honour ``start_at``."""
        src.initialised = True
        entry = self._loaded.pop(src.name, None)
        if entry is not None:
            self._resume(src, entry)
            return
        h = self._open_current(src, counted=False)
        if self._start_at == "start":
            return
        if h is not None:
            if h.regular:
                self._seek(h, os.fstat(h.fd).st_size, skip_fragment=True)
            return
        # Unreadable now: remember where its end is, so that once readable we start there.
        with contextlib.suppress(OSError):
            st = os.stat(src.path)
            src.hint = _Hint(st.st_dev, st.st_ino, st.st_size, None)

    def _resume(self, src: _Source, entry: dict[str, Any]) -> None:
        now = self._clock()
        for rec in entry["records"]:
            found = self._locate(src, rec)
            if found is None:
                log.warning(
                    "%s: checkpointed file (dev %d, inode %d) is gone; whatever was written to it "
                    "after offset %d while we were down is lost",
                    src.name,
                    rec.dev,
                    rec.ino,
                    rec.offset,
                )
                continue
            h, at_path = found
            if rec.offset <= os.fstat(h.fd).st_size:
                self._seek(h, rec.offset)
                h.discarding = rec.discarding
                h.fp_len, h.fp = rec.fp_len, rec.fp
            else:
                log.info(
                    "%s: shorter than the checkpointed offset %d; truncated while we were down, reading from the start",
                    src.name,
                    rec.offset,
                )
            h.last_data = now
            if at_path and src.current is None:
                src.current = h
            else:
                log.info("%s: draining rotated file (inode %d) from offset %d", src.name, h.ino, h.offset)
                src.retired.append(h)
        if src.current is None:
            # New since the checkpoint (rotated while we were down, or appeared): all of it is new.
            self._open_current(src, counted=False)

    def _locate(self, src: _Source, rec: _Record) -> tuple[_Handle, bool] | None:
        """Find the checkpointed file at the path or among its rotated siblings."""
        directory, base = os.path.split(src.path)
        candidates = [src.path]
        with contextlib.suppress(OSError):
            candidates += [
                os.path.join(directory, name)
                for name in sorted(os.listdir(directory))
                if name.startswith(base) and name != base
            ]
        for path in candidates:
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) != (rec.dev, rec.ino) or not stat.S_ISREG(st.st_mode):
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                log.warning("%s: cannot open rotated file %s: %s", src.name, path, exc)
                return None
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (rec.dev, rec.ino) or (
                rec.fp_len and zlib.crc32(os.pread(fd, rec.fp_len, 0)) != rec.fp
            ):
                # Same inode number, different content: the number was recycled.
                os.close(fd)
                continue
            return _Handle(fd, st, self._clock()), path == src.path
        return None

    # ------------------------------------------------------------------ stdin

    def _poll_stdin(self, src: _Source, budget: int | None) -> bool:
        if src.stats.eof:
            return False
        if self._stdin_thread is None:
            stream: Any = self._stdin if self._stdin is not None else sys.stdin
            stream = getattr(stream, "buffer", stream)  # text stdin: read its bytes
            src.current = _Handle(-1, None, self._clock())
            src.initialised = True
            self._stdin_thread = threading.Thread(
                target=self._read_stdin, args=(stream, src), name="mtaq-tailer-stdin", daemon=True
            )
            self._stdin_thread.start()
        h = src.current
        assert h is not None
        total = 0
        while budget is None or total < budget:
            try:
                chunk = self._stdin_queue.get_nowait()
            except queue.Empty:
                return False
            if chunk is None:
                self._flush_partial(src, h)
                src.stats.eof = True
                return False
            h.offset += len(chunk)
            total += len(chunk)
            src.stats.bytes += len(chunk)
            self._feed(src, h, chunk)
        return True

    def _read_stdin(self, stream: Any, src: _Source) -> None:
        # A blocking read belongs in its own thread; the pass only drains the queue, so sink()
        # still runs on the pass thread only.
        read = getattr(stream, "read1", None) or stream.read
        try:
            while True:
                chunk = read(self._read_size)
                if not chunk:
                    break
                self._stdin_queue.put(chunk)
                self._wake.set()
        except Exception as exc:  # report it on the source and end the stream
            self._set_error(src, exc)
        finally:
            self._stdin_queue.put(None)
            self._wake.set()

    # ------------------------------------------------------------------ errors

    def _set_error(self, src: _Source, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != src.stats.last_error:
            # Once per distinct error, not once per pass.
            log.warning("%s: %s (retrying every pass)", src.name, message)
            src.stats.errors += 1
        src.stats.last_error = message

    def _clear_error(self, src: _Source) -> None:
        if src.stats.last_error is not None:
            log.info("%s: recovered after: %s", src.name, src.stats.last_error)
            src.stats.last_error = None

    # ------------------------------------------------------------------ checkpoint

    def _load_checkpoint(self) -> dict[str, dict[str, Any]]:
        """Read the checkpoint; a missing or corrupt file means "no checkpoint"."""
        path = self._checkpoint_path
        if path is None:
            return {}
        try:
            with open(path, "rb") as f:
                raw = json.loads(f.read())
            if not isinstance(raw, dict):
                raise ValueError(f"top level is {type(raw).__name__}, not an object")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self.checkpoint_error = f"unusable checkpoint {path}: {exc}"
            log.warning("%s; ignoring it (start_at=%s applies)", self.checkpoint_error, self._start_at)
            return {}
        out: dict[str, dict[str, Any]] = {}
        for name, entry in raw.items():
            try:
                out[name] = {"records": _parse_entry(entry)}
            except (TypeError, ValueError, KeyError) as exc:
                self.checkpoint_error = f"bad checkpoint entry for {name!r} in {path}: {exc}"
                log.warning("%s; ignoring that entry", self.checkpoint_error)
        return out

    def _checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for src in self._sources:
            if src.is_stdin:
                continue
            if not src.initialised:
                # Not read yet: keep what the checkpoint said, so a stop() before the first
                # pass does not forget it.
                if src.name in self._loaded:
                    state[src.name] = _render_entry(self._loaded[src.name]["records"])
                continue
            handles = [h for h in [src.current, *src.retired] if h is not None and h.regular]
            records = [self._record(h) for h in handles]
            # An empty entry still matters: "nothing open, read the path from 0 when it appears".
            state[src.name] = _render_entry(records)
        return state

    def _record(self, h: _Handle) -> _Record:
        offset = h.consumed()
        want = min(offset, FINGERPRINT_BYTES)
        if want > h.fp_len:
            head = os.pread(h.fd, want, 0)
            h.fp_len, h.fp = len(head), zlib.crc32(head)
        return _Record(h.dev, h.ino, offset, h.discarding, h.fp_len, h.fp)

    def _maybe_checkpoint(self) -> None:
        if self._checkpoint_path is None:
            return
        now = self._clock()
        if self._last_checkpoint <= now < self._last_checkpoint + self._checkpoint_interval:
            return
        self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        """Write the checkpoint atomically; on failure keep the previous one and say why."""
        path = self._checkpoint_path
        if path is None:
            return
        self._last_checkpoint = self._clock()
        try:
            state = self._checkpoint_state()
        except OSError as exc:
            self.checkpoint_error = f"cannot build checkpoint: {exc}"
            log.error("%s", self.checkpoint_error)
            return
        if state == self._last_written:
            return
        data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
        directory = os.path.dirname(os.path.abspath(path))
        tmp = None
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            tmp = None
            # Make the rename itself durable.
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as exc:
            self.checkpoint_error = f"cannot write checkpoint {path}: {exc}"
            log.error("%s", self.checkpoint_error)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return
        self._last_written = state
        self.checkpoint_error = None

    # ------------------------------------------------------------------ inotify

    def _start_observer(self) -> None:
        paths = {s.path for s in self._sources if not s.is_stdin}
        if not paths:
            return
        self._observer = Observer()
        self._observer.daemon = True
        self._handler = _WakeHandler(paths, self._wake.set)
        self._observer.start()
        self._unwatched = {os.path.dirname(p) for p in paths}
        self._retry_watches()

    def _retry_watches(self) -> None:
        """Watch directories not watched yet (missing at start, or inotify limits hit)."""
        now = time.monotonic()
        if self._observer is None or now < self._watch_retry_at:
            return
        self._watch_retry_at = now + WATCH_RETRY_SECONDS
        for directory in sorted(self._unwatched):
            try:
                self._observer.schedule(self._handler, directory, recursive=False, event_filter=_WAKE_EVENTS)
            except OSError as exc:
                log.info("cannot watch %s (%s); polling it every %.2fs", directory, exc, self._poll_interval)
            else:
                self._unwatched.discard(directory)


def _parse_record(obj: Any) -> _Record:
    if not isinstance(obj, dict):
        raise TypeError(f"expected an object, got {type(obj).__name__}")
    ints = {}
    for key in ("dev", "inode", "offset", "fp_len", "fp"):
        value = obj.get(key, 0) if key.startswith("fp") else obj[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
        ints[key] = value
    discarding = obj.get("discarding", False)
    if not isinstance(discarding, bool):
        raise ValueError(f"discarding must be a boolean, got {discarding!r}")
    return _Record(ints["dev"], ints["inode"], ints["offset"], discarding, ints["fp_len"], ints["fp"])


def _parse_entry(entry: Any) -> list[_Record]:
    """``{inode, dev, offset, ..., retired: [...]}``; without ``inode``, no file was open."""
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object, got {type(entry).__name__}")
    records = [_parse_record(entry)] if "inode" in entry else []
    retired = entry.get("retired", [])
    if not isinstance(retired, list):
        raise TypeError("retired must be a list")
    return records + [_parse_record(r) for r in retired]


def _render_entry(records: list[_Record]) -> dict[str, Any]:
    def one(r: _Record) -> dict[str, Any]:
        return {
            "inode": r.ino,
            "dev": r.dev,
            "offset": r.offset,
            "discarding": r.discarding,
            "fp_len": r.fp_len,
            "fp": r.fp,
        }

    if not records:
        return {}
    entry = one(records[0])
    if len(records) > 1:
        entry["retired"] = [one(r) for r in records[1:]]
    return entry

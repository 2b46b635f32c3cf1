"""Following files (and stdin) through rotation, truncation and restarts: the :class:`Tailer`.

The pass (:meth:`Tailer.poll_once`) reads every source to its end and delivers complete lines to
the sink; the background thread runs passes, woken early by ``wake.Waker``; ``checkpoint``
keeps positions across restarts; ``stdin`` feeds standard input. See the package docstring for
how rotation, truncation and restarts are handled.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import IO, Any, Literal

from collectors.base import Clock
from collectors.tailer.checkpoint import CheckpointStore, Record, find_copy, locate, record_of, render_entry
from collectors.tailer.source import Handle, Hint, Source, SourceStats
from collectors.tailer.stdin import StdinReader
from collectors.tailer.wake import Waker

log = logging.getLogger("mtaq.tailer")

Sink = Callable[[str, list[bytes]], None]

#: Bytes per ``read()``: large enough that splitting dominates syscall overhead.
READ_SIZE = 1 << 20
#: Per-source byte budget of one background pass, so one busy file cannot starve the others.
PASS_BUDGET = 64 << 20


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
        self._sources = [Source(p) for p in paths]
        self.stats: dict[str, SourceStats] = {s.name: s.stats for s in self._sources}
        self._sink = sink
        self._start_at = start_at
        self._poll_interval = poll_interval
        self._use_inotify = use_inotify
        self._max_line = max_line_bytes
        self._clock = clock
        self._rotate_grace = rotate_grace
        self._stdin = stdin
        self._read_size = read_size

        self._checkpoint = CheckpointStore(checkpoint_path, checkpoint_interval, clock)
        self._loaded = self._checkpoint.load()

        self._lock = threading.Lock()  # one pass at a time; sink() is never re-entered
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._waker: Waker | None = None
        self._passes = 0
        self._idle_pass = 0
        self._pass_cond = threading.Condition()
        self._stdin_reader: StdinReader | None = None

    @property
    def checkpoint_error(self) -> str | None:
        """Why the last checkpoint load or write failed, None when fine."""
        return self._checkpoint.error

    @property
    def checkpoint_write_errors(self) -> int:
        """Failed checkpoint writes since the start."""
        return self._checkpoint.write_errors

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        """Start the background thread (and the inotify observer, if enabled)."""
        if self._thread is not None or self._stopped:
            raise RuntimeError("Tailer.start() may be called once, before stop()")
        paths = {s.path for s in self._sources if not s.is_stdin}
        if self._use_inotify and paths:
            waker = Waker(paths, self._wake.set, self._poll_interval)
            try:
                waker.start()
            except OSError as exc:  # e.g. fs.inotify.max_user_instances reached
                log.warning("inotify unavailable (%s); polling every %.2fs", exc, self._poll_interval)
            else:
                self._waker = waker
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
        if self._waker is not None:
            self._waker.stop(timeout)
            self._waker = None
        if not self._lock.acquire(timeout=timeout):
            log.error("tailer pass still running after %.0fs; stopping without a final checkpoint", timeout)
            return
        try:
            try:
                self._pass(budget=None)
            except Exception:  # stopping must still checkpoint and close
                log.exception("final tailer pass failed")
            if self._checkpoint.path is None:
                self._flush_all()
            self._write_checkpoint()
            for src in self._sources:
                for h in src.handles():
                    if h.fd >= 0:
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
            if self._waker is not None and self._waker.incomplete:
                self._waker.retry()
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

    def _poll_file(self, src: Source, budget: int | None) -> bool:
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

    def _check_path(self, src: Source, h: Handle, now: float, budget: int | None) -> bool:
        """After draining ``h`` to EOF: has the path been rotated, truncated or deleted?"""
        try:
            st = os.stat(src.path)
        except FileNotFoundError:
            # Renamed away without a successor yet, or deleted: keep draining the old fd. A
            # deleted file nobody writes to any more is closed so its space can be reclaimed;
            # as after a rename, the writer may append until it reopens the path, so the grace
            # period starts when the deletion is seen, however long the file had been quiet.
            if os.fstat(h.fd).st_nlink == 0:
                if not h.unlinked:
                    h.unlinked = True
                    h.last_data = now
                elif self._idle(h, now):
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

    def _drain(self, src: Source, h: Handle, budget: int | None) -> tuple[int, bool]:
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

    def _feed(self, src: Source, h: Handle, data: bytes) -> None:
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

    def _deliver(self, src: Source, lines: list[bytes]) -> None:
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

    def _flush_partial(self, src: Source, h: Handle) -> None:
        """The file will not grow any more: its unterminated last line is a line."""
        if h.partial:
            line, h.partial = h.partial, b""
            self._deliver(src, [line])
        h.discarding = False

    def _flush_all(self) -> None:
        for src in self._sources:
            for h in src.handles():
                self._flush_partial(src, h)

    def _idle(self, h: Handle, now: float) -> bool:
        if now < h.last_data:  # the clock went backwards: restart the grace period
            h.last_data = now
            return False
        return now - h.last_data >= self._rotate_grace

    # ------------------------------------------------------------------ opening

    def _open(self, src: Source) -> Handle | None:
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
        return Handle(fd, st, self._clock())

    def _open_current(self, src: Source, *, counted: bool) -> Handle | None:
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

    def _drop_current(self, src: Source) -> None:
        h = src.current
        if h is None:
            return
        if h.regular:
            src.hint = Hint(h.dev, h.ino, h.consumed(), h.discarding)
        with contextlib.suppress(OSError):
            os.close(h.fd)
        src.current = None

    def _seek(self, h: Handle, offset: int, *, skip_fragment: bool = False) -> None:
        os.lseek(h.fd, offset, os.SEEK_SET)
        h.offset = offset
        h.partial = b""
        # Starting mid-line (start_at="end" on a file without a final newline): the rest of that
        # line is a fragment of a line we did not see, so skip it rather than deliver garbage.
        h.discarding = skip_fragment and offset > 0 and os.pread(h.fd, 1, offset - 1) != b"\n"

    def _init_file(self, src: Source) -> None:
        """First pass for a path: resume from the checkpoint, or honour ``start_at``."""
        src.initialised = True
        records = self._loaded.pop(src.name, None)
        if records is not None:
            self._resume(src, records)
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
            src.hint = Hint(st.st_dev, st.st_ino, st.st_size, None)

    def _resume(self, src: Source, records: list[Record]) -> None:
        """Continue every checkpointed file of ``src`` where it was left.

        The file itself (same inode and first bytes, at the path or renamed beside it) is
        continued from its offset. When it is gone or was truncated while we were down
        (copytruncate, compressed rotation), the rest is read from the rotated copy that has its
        first bytes, plain or gzip, before the current file is read from its start.
        """
        now = self._clock()
        for rec in records:
            found = locate(src.path, rec, self._clock)
            if found is not None and rec.offset > os.fstat(found[0].fd).st_size:
                truncated, at_path = found
                found = None
                log.info("%s: shorter than the checkpointed offset %d: truncated while we were down", src.name,
                         rec.offset)
                if at_path and src.current is None:
                    self._seek(truncated, 0)
                    src.current = truncated
                else:
                    os.close(truncated.fd)
            if found is None:
                self._drain_copy(src, rec)
                continue
            h, at_path = found
            self._seek(h, rec.offset)
            h.discarding = rec.discarding
            h.fp_len, h.fp = rec.fp_len, rec.fp
            h.last_data = now
            if at_path and src.current is None:
                src.current = h
            else:
                log.info("%s: draining rotated file (inode %d) from offset %d", src.name, h.ino, h.offset)
                src.retired.append(h)
        if src.current is None:
            # New since the checkpoint (rotated while we were down, or appeared): all of it is new.
            self._open_current(src, counted=False)

    def _drain_copy(self, src: Source, rec: Record) -> None:
        """Read the rest of a checkpointed file from its rotated copy, to the end, now: a copy
        (rotated, maybe compressed) does not grow any more."""
        copy = find_copy(src.path, rec)
        if copy is None:
            log.warning("%s: checkpointed file (inode %d) is gone and no rotated copy has its first bytes; "
                        "whatever was written to it after offset %d while we were down is lost",
                        src.name, rec.ino, rec.offset)
            return
        name, stream = copy
        log.info("%s: reading the rest of the checkpointed file from %s (offset %d)", src.name, name, rec.offset)
        h = Handle(-1, None, self._clock())
        h.discarding = rec.discarding
        with stream:
            while chunk := stream.read(self._read_size):
                src.stats.bytes += len(chunk)
                self._feed(src, h, chunk)
        self._flush_partial(src, h)

    # ------------------------------------------------------------------ stdin

    def _poll_stdin(self, src: Source, budget: int | None) -> bool:
        if src.stats.eof:
            return False
        reader = self._stdin_reader
        if reader is None:
            reader = self._stdin_reader = StdinReader(
                self._stdin if self._stdin is not None else sys.stdin, self._read_size, self._wake.set,
                lambda exc: self._set_error(src, exc))
            src.current = Handle(-1, None, self._clock())
            src.initialised = True
            reader.start()
        h = src.current
        assert h is not None
        total = 0
        while budget is None or total < budget:
            chunk = reader.next_chunk()
            if chunk is None:
                self._flush_partial(src, h)
                src.stats.eof = True
                return False
            if not chunk:
                return False
            h.offset += len(chunk)
            total += len(chunk)
            src.stats.bytes += len(chunk)
            self._feed(src, h, chunk)
        return True

    # ------------------------------------------------------------------ errors

    def _set_error(self, src: Source, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}"
        if message != src.stats.last_error:
            # Once per distinct error, not once per pass.
            log.warning("%s: %s (retrying every pass)", src.name, message)
            src.stats.errors += 1
        src.stats.last_error = message

    def _clear_error(self, src: Source) -> None:
        if src.stats.last_error is not None:
            log.info("%s: recovered after: %s", src.name, src.stats.last_error)
            src.stats.last_error = None

    # ------------------------------------------------------------------ checkpoint

    def _checkpoint_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        for src in self._sources:
            if src.is_stdin:
                continue
            if not src.initialised:
                # Not read yet: keep what the checkpoint said, so a stop() before the first
                # pass does not forget it.
                if src.name in self._loaded:
                    state[src.name] = render_entry(self._loaded[src.name])
                continue
            # An empty entry still matters: "nothing open, read the path from 0 when it appears".
            state[src.name] = render_entry([record_of(h) for h in src.handles() if h.regular])
        return state

    def _maybe_checkpoint(self) -> None:
        if self._checkpoint.due():
            self._write_checkpoint()

    def _write_checkpoint(self) -> None:
        """Write the checkpoint atomically; on failure keep the previous one and say why."""
        if self._checkpoint.path is None:
            return
        try:
            state = self._checkpoint_state()
        except OSError as exc:
            self._checkpoint.failed(f"cannot build checkpoint: {exc}")
            return
        self._checkpoint.write(state)

"""What the tailer knows about each followed path: its counters, its open file and where it is."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

#: Source name meaning "read standard input".
STDIN = "-"


@dataclass
class SourceStats:
    """Counters for one source; the log collectors export them (``mtaq_log_*``)."""

    lines: int = 0  # lines handed to sink()
    bytes: int = 0  # bytes read, newlines included
    reopens: int = 0  # opens after the first one: rotation, truncation, recovery from an error
    truncated_lines: int = 0  # lines cut to max_line_bytes
    last_line_time: float | None = None  # clock() when a line was last delivered
    last_error: str | None = None  # current error (missing, unreadable), None when healthy
    errors: int = 0  # distinct error episodes
    sink_errors: int = 0  # batches whose sink() call raised
    eof: bool = False  # stdin only: input ended


class Handle:
    """One open file (or the stdin stream) and where we are in it."""

    __slots__ = ("dev", "discarding", "fd", "fp", "fp_len", "ino", "last_data", "offset", "partial", "regular",
                 "unlinked")

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
        self.unlinked = False  # seen deleted (no name left): its grace period has begun

    def consumed(self) -> int:
        """Offset up to which every byte has been delivered or deliberately discarded."""
        return self.offset - len(self.partial)


@dataclass(frozen=True)
class Hint:
    """Where to start if the path turns out to be this inode when it can finally be opened."""

    dev: int
    ino: int
    offset: int
    discarding: bool | None  # None: skip a cut-off line fragment at offset, if any


class Source:
    """A configured path (or stdin) with its current handle and rotated-away handles."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_stdin = name == STDIN
        self.path = name if self.is_stdin else os.path.abspath(name)
        self.stats = SourceStats()
        self.current: Handle | None = None
        self.retired: list[Handle] = []  # rotated away, drained until idle for rotate_grace
        self.initialised = False
        self.hint: Hint | None = None

    def handles(self) -> list[Handle]:
        """The current handle (if any) and the rotated ones."""
        return [h for h in (self.current, *self.retired) if h is not None]

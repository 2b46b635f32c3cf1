"""Linux inotify through libc (``ctypes``): watches on directories and their raw events.

The spool readers and the tailer's wake-ups need the kernel's view as it is: each event's
directory and name, ``IN_Q_OVERFLOW`` when the kernel dropped events, and ``IN_IGNORED`` when a
watch went away, read many events at a time, so that a burst of writes costs one pass. That is
four libc calls, so no dependency is added for it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

# Event bits (linux/inotify.h).
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
# Room for many events per read(); one event is at most the header plus NAME_MAX + 1.
_MAX_EVENT = 16 + 256
_BUFFER = 256 * 1024


class Event(NamedTuple):
    """One inotify event: the watch it came from, its bits, and the name inside the watched
    directory (empty for events about the directory itself)."""

    wd: int
    mask: int
    name: str


def _libc() -> ctypes.CDLL:
    # The symbols of the running interpreter, which is linked against the C library (glibc or
    # musl alike): no library name to guess.
    libc = ctypes.CDLL(None, use_errno=True)
    for name in ("inotify_init1", "inotify_add_watch", "inotify_rm_watch"):
        if not hasattr(libc, name):
            raise OSError(errno.ENOSYS, f"libc has no {name}")
    libc.inotify_init1.argtypes = [ctypes.c_int]
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


class Inotify:
    """One inotify instance (non-blocking). Raises ``OSError`` when inotify is unavailable: not
    Linux, no such libc call, or ``fs.inotify.max_user_instances`` reached."""

    def __init__(self) -> None:
        self._libc = _libc()
        self.fd = _check(self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC), "inotify_init1")
        self._buffer = bytearray(_BUFFER)  # read into, again and again: no allocation per read

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path`` for ``mask``; returns the watch descriptor (the same one again for a path
        already watched). Raises ``OSError``: ``ENOENT``, ``ENOSPC`` (``max_user_watches``), …"""
        return _check(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask), f"inotify_add_watch {path}")

    def rm_watch(self, wd: int) -> None:
        """Stop watching ``wd`` (an ``IN_IGNORED`` event follows)."""
        self._libc.inotify_rm_watch(self.fd, wd)

    def read(self) -> Iterator[Event]:
        """The events queued now, without waiting; nothing when there are none."""
        while True:
            try:
                size = os.readv(self.fd, [self._buffer])
            except BlockingIOError:
                return
            data = self._buffer[:size]
            at = 0
            unpack = _HEADER.unpack_from
            while at < size:
                wd, mask, _, length = unpack(data, at)
                at += 16
                name = data[at:at + length].rstrip(b"\0").decode("utf-8", "surrogateescape") if length else ""
                at += length
                yield Event(wd, mask, name)
            # The kernel hands over every queued event that fits: a buffer not filled means none
            # were left (asking again would only fail with EAGAIN, which costs as much as a read).
            if size < _BUFFER - _MAX_EVENT:
                return

    def close(self) -> None:
        """Close the instance: every watch goes with it."""
        os.close(self.fd)

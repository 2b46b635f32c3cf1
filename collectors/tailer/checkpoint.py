"""The tailer's checkpoint: where each followed file was read up to, kept across restarts.

The file holds JSON ``{path: {inode, dev, offset, discarding, fp_len, fp, retired: [...]}}``:
the current file of each path and the rotated files still being drained. ``fp`` is a CRC of the
file's first ``fp_len`` bytes, which guards against a recycled inode number. Writes are atomic
(``collectors.files.atomic_write``); a missing or corrupt file means "no checkpoint".
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import stat
import zlib
from dataclasses import dataclass
from typing import IO, Any

from collectors.base import Clock
from collectors.files import atomic_write
from collectors.tailer.source import Handle

log = logging.getLogger("mtaq.tailer")

#: How many leading bytes of a file the restart fingerprint covers.
FINGERPRINT_BYTES = 1024
#: A checkpoint holds a few records per path: anything larger is not ours.
MAX_CHECKPOINT_BYTES = 1 << 20


@dataclass(frozen=True)
class Record:
    """A checkpointed position in one file."""

    dev: int
    ino: int
    offset: int
    discarding: bool = False
    fp_len: int = 0
    fp: int = 0


def record_of(h: Handle) -> Record:
    """The position of ``h`` as a record, its fingerprint extended to what has been read."""
    offset = h.consumed()
    want = min(offset, FINGERPRINT_BYTES)
    if want > h.fp_len:
        head = os.pread(h.fd, want, 0)
        h.fp_len, h.fp = len(head), zlib.crc32(head)
    return Record(h.dev, h.ino, offset, h.discarding, h.fp_len, h.fp)


def _siblings(path: str) -> list[str]:
    """Files beside ``path`` whose names start with its name: where rotation puts it."""
    directory, base = os.path.split(path)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [os.path.join(directory, name) for name in names if name.startswith(base) and name != base]


def locate(path: str, rec: Record, clock: Clock) -> tuple[Handle, bool] | None:
    """Open the checkpointed file itself (same inode, same first bytes): at ``path`` or renamed
    among its siblings (``mail.log.1``, ``mail.log-20240101``, ``maillog.20240101-120000``).
    Returns the handle and whether it is the file at ``path``, or None."""
    for candidate in [path, *_siblings(path)]:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != (rec.dev, rec.ino) or not stat.S_ISREG(st.st_mode):
            continue
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("%s: cannot open rotated file %s: %s", path, candidate, exc)
            return None
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (rec.dev, rec.ino) or (
            rec.fp_len and zlib.crc32(os.pread(fd, rec.fp_len, 0)) != rec.fp
        ):
            # Same inode number, other first bytes: the number was recycled, or the file was
            # truncated and written anew (copytruncate) while we were down.
            os.close(fd)
            continue
        return Handle(fd, st, clock()), candidate == path
    return None


def _open_any(path: str) -> IO[bytes]:
    raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw)  # closing it leaves raw to the garbage collector
    raw.seek(0)
    return raw


def find_copy(path: str, rec: Record) -> tuple[str, IO[bytes]] | None:
    """A rotated copy of the checkpointed file among ``path``'s siblings, plain or gzip: the one
    whose first ``fp_len`` bytes have the checkpointed fingerprint and which reaches the
    checkpointed offset. Returns its name and a stream positioned at that offset, or None.

    This is what copytruncate (the copy is a new file, the original truncated) and compressed
    rotation (``mail.log.1.gz``) leave behind; the inode cannot find them, the content can.
    """
    if not rec.fp_len:
        return None
    for candidate in _siblings(path):
        try:
            stream = _open_any(candidate)
        except OSError:
            continue
        try:
            if zlib.crc32(stream.read(rec.fp_len)) == rec.fp:
                # A gzip stream stops seeking at its end; a plain file would seek past it.
                long_enough = isinstance(stream, gzip.GzipFile) or os.fstat(stream.fileno()).st_size >= rec.offset
                if long_enough and stream.seek(rec.offset) == rec.offset:
                    return candidate, stream
        except (OSError, EOFError, zlib.error):
            pass
        stream.close()
    return None


class CheckpointStore:
    """Loads the checkpoint once and writes it at most every ``interval`` seconds (``due()``).

    ``error`` says why the last load or write failed, None when fine; ``write_errors`` counts
    failed writes. A failure is logged once, until it changes or a write succeeds.
    """

    def __init__(self, path: str | None, interval: float, clock: Clock) -> None:
        self.path = path
        self.interval = interval
        self.error: str | None = None
        self.write_errors = 0
        self._clock = clock
        self._last_written: dict[str, Any] | None = None
        self._last_write = clock()

    def load(self) -> dict[str, list[Record]]:
        """Records per source name; a missing or corrupt file (or entry) is skipped with a warning."""
        path = self.path
        if path is None:
            return {}
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CHECKPOINT_BYTES + 1)
            if len(data) > MAX_CHECKPOINT_BYTES:
                raise ValueError(f"larger than {MAX_CHECKPOINT_BYTES} bytes")
            raw = json.loads(data)
            if not isinstance(raw, dict):
                raise ValueError(f"top level is {type(raw).__name__}, not an object")
        except FileNotFoundError:
            return {}
        except RecursionError:
            self.error = f"unusable checkpoint {path}: nested too deeply"
            log.warning("%s; ignoring it", self.error)
            return {}
        except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            self.error = f"unusable checkpoint {path}: {exc}"
            log.warning("%s; ignoring it", self.error)
            return {}
        out: dict[str, list[Record]] = {}
        for name, entry in raw.items():
            try:
                out[name] = parse_entry(entry)
            except (TypeError, ValueError, KeyError) as exc:
                self.error = f"bad checkpoint entry for {name!r} in {path}: {exc}"
                log.warning("%s; ignoring that entry", self.error)
        return out

    def due(self) -> bool:
        """Whether ``interval`` has passed since the last write (a clock jumping back restarts it)."""
        if self.path is None:
            return False
        now = self._clock()
        return not self._last_write <= now < self._last_write + self.interval

    def write(self, state: dict[str, Any]) -> None:
        """Write ``state`` (rendered entries by source name) unless it is unchanged; on failure
        keep the previous file and say why."""
        if self.path is None:
            return
        self._last_write = self._clock()
        if state == self._last_written:
            return
        try:
            atomic_write(self.path, json.dumps(state, sort_keys=True, separators=(",", ":")).encode())
        except OSError as exc:
            self.failed(f"cannot write checkpoint {self.path}: {exc}")
            return
        if self.error is not None:
            log.info("checkpoint %s written again", self.path)
        self._last_written = state
        self.error = None

    def failed(self, error: str) -> None:
        """Count a failed write; log it unless it is the one already reported."""
        self.write_errors += 1
        if error != self.error:
            log.error("%s; the previous checkpoint stays (retrying)", error)
        self.error = error


def _parse_record(obj: Any) -> Record:
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
    return Record(ints["dev"], ints["inode"], ints["offset"], discarding, ints["fp_len"], ints["fp"])


def parse_entry(entry: Any) -> list[Record]:
    """``{inode, dev, offset, ..., retired: [...]}``; without ``inode``, no file was open."""
    if not isinstance(entry, dict):
        raise TypeError(f"expected an object, got {type(entry).__name__}")
    records = [_parse_record(entry)] if "inode" in entry else []
    retired = entry.get("retired", [])
    if not isinstance(retired, list):
        raise TypeError("retired must be a list")
    return records + [_parse_record(r) for r in retired]


def render_entry(records: list[Record]) -> dict[str, Any]:
    """The JSON form of one source's records (the first is the current file)."""

    def one(r: Record) -> dict[str, Any]:
        return {"inode": r.ino, "dev": r.dev, "offset": r.offset, "discarding": r.discarding,
                "fp_len": r.fp_len, "fp": r.fp}

    if not records:
        return {}
    entry = one(records[0])
    if len(records) > 1:
        entry["retired"] = [one(r) for r in records[1:]]
    return entry

"""Postfix's queue files and defer logs, decoded the way showq decodes them.

A record is one type byte, its length in 7-bit groups (low first, high bit: more) and the data
(``src/global/record.c``); ``p`` pointer records are followed and ``w`` padding skipped, as
``rec_get`` does. Arrival comes from the first ``T`` record (the file's mtime without one), size
from the first well-formed ``C`` record (else the file size), the sender from ``S``
(``empty_address_recipient`` when null), recipients from the ``R`` records (a delivered recipient's
record is rewritten to ``D`` and no longer counts); the message content is skipped by seeking past
it. Only complete files count: a regular file whose owner bits are ``rwx``
(``MAIL_QUEUE_STAT_READY``). The recipients of the message's defer log (``defer/``: one entry per
recipient with its reason) come first, then the queue file's other recipients, as showq lists
them; addresses are quoted and made printable as showq does (``src/showq/showq.c``).

Standard library only: ``read_batch`` runs in the spool reader's worker processes, which start
faster without the agent's imports.
"""

from __future__ import annotations

import codecs
import os
import re
import struct
import time
from dataclasses import dataclass, field

from collectors.deadline import Deadline

# Record types (src/global/rec_type.h).
_REC_SIZE, _REC_TIME, _REC_FROM, _REC_RCPT, _REC_MESG, _REC_PTR, _REC_END, _REC_ATTR = b"CTSRMpEA"
_REVERSE_JUMP_LIMIT = 10000  # rec_goto's guard against pointer loops
# Most queue files are a few kB: one read takes the whole envelope; larger ones are read in pieces.
_CHUNK = 16384
_READY_MASK, _READY = 0o170700, 0o100700  # a regular file with owner rwx: complete (MAIL_QUEUE_STAT_READY)
FORCED = 0o010  # MAIL_QUEUE_STAT_EXPIRE: postsuper -e
#: What a rescan compares: inode, size, mtime in ns, forced-expire bit.
IDENTITY = struct.Struct("<QqqB")
_DEFER_IDENTITY = struct.Struct("<Qqq")
QUEUE_ID = re.compile(r"[A-Za-z0-9_]{1,255}")  # mail_queue_id_ok
_NUMBER = re.compile(rb"[ \t\n\v\f\r]*([+-]?[0-9]+)")  # what atol() reads
_SIZE_RECORD = re.compile(rb"[0-9 ]*")
# A dot-string local part of printable ASCII and a printable domain: showq's quoting and
# printable() leave it unchanged, the common case.
_ATOM = rb"[^\x00-\x20\x7f-\xff()<>@,;:\\\".\[\]]+"
_PLAIN_ADDRESS = re.compile(rb"%s(?:\.%s)*(?:@[\x20-\x3f\x41-\x7e]*)?" % (_ATOM, _ATOM))
_DOT_STRING = re.compile(rb"[^\x00-\x20\x7f()<>@,;:\\\".\[\]]+(?:\.[^\x00-\x20\x7f()<>@,;:\\\".\[\]]+)*")
_QUOTED_CHARS = re.compile(rb'(["\\\r])')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CLEAN_LOG = re.compile(rb"[\x20-\x7e\n]*")
_SAFE_DIGITS = {c: i for i, c in enumerate("0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz")}
_PRINTABLE_ERRORS = "mtaq-printable"


def _question_marks(error: UnicodeError) -> tuple[str, int]:
    """printable(): each byte of an invalid UTF-8 sequence becomes one ``?``."""
    assert isinstance(error, UnicodeDecodeError)
    return "?" * (error.end - error.start), error.end


codecs.register_error(_PRINTABLE_ERRORS, _question_marks)


def printable(raw: bytes) -> str:
    """Postfix's ``printable(s, '?')`` with UTF-8 enabled: control characters and bytes that are not
    valid UTF-8 become ``?``."""
    text = raw.decode("ascii") if raw.isascii() else raw.decode("utf-8", _PRINTABLE_ERRORS)
    return _CONTROL.sub("?", text)


def quoted_address(raw: bytes) -> str:
    """An envelope address as showq lists it: the local part quoted unless it is an RFC 822
    dot-string (``quote_822_local``; 8-bit data left alone), then made printable."""
    if _PLAIN_ADDRESS.fullmatch(raw):
        return raw.decode("ascii")
    raw = raw.split(b"\0", 1)[0]  # C strings end at a NUL
    start = raw.index(b":") + 1 if raw[:1] == b"@" and b":" in raw else 0  # skip a source route
    at = raw.rfind(b"@", start)
    end = at if at >= 0 else len(raw)
    local = raw[start:end]
    if not _DOT_STRING.fullmatch(local):
        local = b'"' + _QUOTED_CHARS.sub(rb"\\\1", local) + b'"'
    return printable(raw[:start] + local + raw[end:])


def _atol(data: bytes) -> int:
    match = _NUMBER.match(data)
    return int(match.group(1)) if match else 0


@dataclass(slots=True)
class Envelope:
    """What showq reads from a queue file. ``sender`` is None when the records ended before a
    sender record (showq lists nothing for such a file)."""

    arrival: int = 0
    size: int = 0
    sender: bytes | None = None
    recipients: list[bytes] = field(default_factory=list)


def _long_length(buf: bytes, at: int) -> tuple[int, int]:
    """A record length of more than one byte at ``buf[at]``: (length, offset of the data). Raises
    ``IndexError`` when the buffer ends first, ``ValueError`` when it has too many bits (rec_get)."""
    length = shift = 0
    while True:
        byte = buf[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length, at
        shift += 7
        if shift >= 32:
            raise ValueError("too many length bits")


def read_envelope(fd: int, file_size: int) -> Envelope:
    """The records of the queue file open on ``fd`` that showq uses, read the way ``rec_get`` reads
    them. Hot: one call per new queue file, a few dozen records each."""
    envelope = Envelope(size=file_size)
    recipients = envelope.recipients
    arrival = 0
    size = file_size
    size_ok = False
    buf = os.pread(fd, _CHUNK, 0)
    n = len(buf)
    whole = n < _CHUNK  # buf holds everything from ``base`` to the end of the file
    base = pos = 0  # file offsets of buf[0] and of the next record
    last_jump = reverse_jumps = 0
    while True:
        i = pos - base
        if i < 0 or (i + 6 > n and not whole):  # a type byte and up to five length bytes
            buf = os.pread(fd, _CHUNK, pos)
            n = len(buf)
            whole = n < _CHUNK
            base, i = pos, 0
        if i >= n:
            break  # end of file
        kind = buf[i]
        try:
            length = buf[i + 1]
            if length < 0x80:
                j = i + 2
            else:
                length, j = _long_length(buf, i + 1)
        except (IndexError, ValueError):
            break  # a truncated or malformed length: rec_get's error
        end = j + length
        if end > n:  # the record runs past the buffer: read it whole
            if whole:
                break  # truncated data
            buf = os.pread(fd, end - i, pos)
            if len(buf) < end - i:
                break
            n, whole = len(buf), False
            base, j, end = pos, j - i, end - i
        pos = base + end
        if kind == _REC_ATTR:
            continue  # the most frequent record, and nothing showq lists
        if kind == _REC_RCPT:
            if envelope.sender is None:
                break  # showq: missing sender, the file is skipped
            recipients.append(buf[j:end])
        elif kind == _REC_TIME:
            if arrival == 0:
                arrival = _atol(buf[j:end])
        elif kind == _REC_SIZE:
            if not size_ok:
                data = buf[j:end]
                number = _atol(data)
                size_ok = _SIZE_RECORD.fullmatch(data) is not None and number >= 0
                size = number if size_ok else file_size
        elif kind == _REC_FROM:
            if envelope.sender is not None:
                break  # showq: duplicate sender, the rest of the file is skipped
            envelope.sender, envelope.arrival, envelope.size = buf[j:end], arrival, size
        elif kind == _REC_MESG:
            if size_ok:
                pos += size  # the content: nothing showq lists
        elif kind == _REC_PTR:
            offset = _atol(buf[j:end])
            if offset < 0:
                break
            if offset:
                if offset <= last_jump:
                    reverse_jumps += 1
                    if reverse_jumps > _REVERSE_JUMP_LIMIT:
                        break
                last_jump = pos = offset
        elif kind == _REC_END:
            break
    return envelope


def parse_defer_log(data: bytes) -> list[tuple[str, str]]:
    """(recipient, reason) of each entry of a defer log, as ``bounce_log_read`` reads them: entries
    end with a blank line, lines are ``name = value`` or the older ``<recipient>: reason`` (one
    entry may mix both; later lines win), and an entry without its closing blank line does not
    count. Lines are made printable first."""
    if _CLEAN_LOG.fullmatch(data):  # the usual case: printable ASCII lines, nothing to clean
        lines = data.decode("ascii").split("\n")
    else:
        lines = [printable(line) for line in data.split(b"\n")]
    if lines[-1] == "":
        lines.pop()  # after the last newline: no line
    entries: list[tuple[str, str]] = []
    recipient = reason = ""
    found = False
    for line in lines:
        if not line:
            if found:
                entries.append((recipient or "(recipient address unavailable)", reason or "(description unavailable)"))
                recipient = reason = ""
                found = False
            continue
        found = True
        first = line[0]
        if first == "<":
            address, separator, text = line[1:].partition(">: ")
            if separator:
                recipient, reason = address or "(MAILER-DAEMON)", text.lstrip(" ")
        elif first == "r":  # of the attributes, only recipient and reason matter here
            # split_nameval: the name ends at a space or "=", blanks around "=" and the value go
            name, separator, value = line.partition("=")
            name = name.rstrip(" ")
            if not separator or " " in name:
                continue
            if name == "recipient":
                recipient = value.strip(" ") or "(MAILER-DAEMON)"
            elif name == "reason":
                reason = value.strip(" ")
    return entries


def _decode_safe(text: str) -> int | None:
    """A number in Postfix's base-52 safe alphabet (long queue ids)."""
    value = 0
    for char in text:
        digit = _SAFE_DIGITS.get(char)
        if digit is None:
            return None
        value = value * 52 + digit
    return value


def hash_path(queue_id: str, depth: int) -> str:
    """The hashed subdirectories of ``queue_id`` (``mail_queue_dir``/``dir_forest``): its first
    characters, or for a long queue id the hex of the microseconds it encodes."""
    key = queue_id
    z = queue_id.rfind("z")
    if z >= 10:  # MQID_LG_TIME_PAD: a long queue id
        usec = _decode_safe(queue_id[z - 4:z])
        if usec is not None:
            key = f"{usec:05X}"
    return "".join(f"{key[n] if n < len(key) else '_'}/" for n in range(depth))


class ReadBudget:
    """At most ``rate`` files opened per second (a token bucket holding one second's worth); 0: no limit."""

    def __init__(self, rate: float, deadline: Deadline) -> None:
        self.rate = rate
        self.deadline = deadline
        self.tokens = rate
        self.last = time.monotonic()

    def take(self) -> None:
        """Wait (within the deadline) until one more file may be opened."""
        if self.rate <= 0:
            return
        self.tokens -= 1
        while self.tokens < 0:
            self.deadline.check()
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens < 0:
                time.sleep(min(self.deadline.wait(), -self.tokens / self.rate))



#: A message as showq lists it: arrival, size, sender, (recipient, defer reason) pairs, forced expire.
MessageFields = tuple[float, int, str, tuple[tuple[str, str], ...], bool]
#: What ``read_batch`` gives for each complete queue file: its name, identity and message (None:
#: undecodable).
BatchEntry = tuple[str, bytes, "MessageFields | None"]


def ready(mode: int) -> bool:
    """Whether a file of this mode is a complete queue file (a regular file with owner rwx)."""
    return mode & _READY_MASK == _READY


def identity(st: os.stat_result) -> bytes:
    """The identity of a queue file: what changes when Postfix changes the file."""
    return IDENTITY.pack(st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode & FORCED)


@dataclass(frozen=True, slots=True)
class QueueFiles:
    """Where one Postfix instance's queue files and defer logs are, and the settings by which showq
    lists them: ``defer_depth`` is how deep ``defer/`` is hashed."""

    root: str
    defer_depth: int
    dup_filter_limit: int
    empty_address: str

    def defer_path(self, queue_id: str) -> str:
        """The defer log of ``queue_id``."""
        return f"{self.root}/defer/{hash_path(queue_id, self.defer_depth)}{queue_id}"

    def message(self, path: str, queue_id: str, st: os.stat_result,
                budget: ReadBudget | None = None) -> MessageFields | None:
        """The message of the queue file at ``path`` as showq lists it; None when undecodable.
        Raises ``FileNotFoundError`` when the file went away."""
        if budget is not None:
            budget.take()
        fd = open_file(path)
        try:
            return self.read_message(fd, queue_id, st, budget)
        finally:
            os.close(fd)

    def read_message(self, fd: int, queue_id: str, st: os.stat_result,
                     budget: ReadBudget | None = None) -> MessageFields | None:
        """``message`` for the queue file open on ``fd``, whose ``stat`` is ``st``."""
        envelope = read_envelope(fd, st.st_size)
        if envelope.sender is None:
            return None
        defer_log = self.defer_log(queue_id, budget)
        listed: set[str] = set()
        for address, _ in defer_log:  # showq's duplicate filter, bounded by duplicate_filter_limit
            if self.dup_filter_limit and len(listed) >= self.dup_filter_limit:
                break
            listed.add(address)
        recipients = list(defer_log)
        empty = self.empty_address
        for raw in envelope.recipients:
            address = quoted_address(raw) if raw else empty
            if address not in listed:
                recipients.append((address, ""))
        sender = quoted_address(envelope.sender) if envelope.sender else empty
        arrival = envelope.arrival if envelope.arrival > 0 else int(st.st_mtime)
        return float(arrival), envelope.size, sender, tuple(recipients), bool(st.st_mode & FORCED)

    def defer_log(self, queue_id: str, budget: ReadBudget | None = None) -> list[tuple[str, str]]:
        """The (recipient, reason) entries of the defer log of ``queue_id`` (none without one)."""
        if budget is not None:
            budget.take()
        try:
            fd = open_file(self.defer_path(queue_id))
        except FileNotFoundError:
            return []
        try:
            chunks = [os.read(fd, _CHUNK)]
            while len(chunks[-1]) == _CHUNK:  # a message with many deferred recipients
                chunks.append(os.read(fd, _CHUNK))
        finally:
            os.close(fd)
        return parse_defer_log(b"".join(chunks))

    def defer_identity(self, queue_id: str) -> bytes:
        """The identity of the defer log of ``queue_id`` (empty without one)."""
        try:
            st = os.stat(self.defer_path(queue_id), follow_symlinks=False)
        except FileNotFoundError:
            return b""
        return _DEFER_IDENTITY.pack(st.st_ino, st.st_size, st.st_mtime_ns)


def read_batch(files: QueueFiles, directory: str, names: list[str], budget: ReadBudget) -> list[BatchEntry]:
    """The complete queue files among ``names`` in ``directory``, each read with its defer log
    within ``budget``: a worker process's share of a first scan. Names that are no queue file, or
    that went away, are left out. Each file is opened relative to its directory and ``fstat``ed
    once open: fewer path lookups than ``stat`` then ``open``."""
    check = budget.deadline.check
    out: list[BatchEntry] = []
    try:
        directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return out
    try:
        for count, name in enumerate(names):
            if not count & 255:
                check()
            budget.take()
            try:
                fd = open_file(name, directory_fd)
            except FileNotFoundError:
                continue  # moved or delivered since the directory was listed
            try:
                st = os.fstat(fd)
                if ready(st.st_mode):
                    out.append((name, identity(st), files.read_message(fd, name, st, budget)))
            finally:
                os.close(fd)
    finally:
        os.close(directory_fd)
    return out


_open_flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NOATIME", 0)


def open_file(path: str, directory_fd: int | None = None) -> int:
    """Open a queue file or defer log for reading. ``O_NOATIME``: a scan does not write the access
    time of every file it reads to the disk Postfix is busy with; only the files' owner (Postfix's
    uid) or root may ask for it, so without either the access time is the kernel's business."""
    global _open_flags
    try:
        return os.open(path, _open_flags, dir_fd=directory_fd)
    except PermissionError:
        if not _open_flags & getattr(os, "O_NOATIME", 0):
            raise
        _open_flags &= ~os.O_NOATIME
        return os.open(path, _open_flags, dir_fd=directory_fd)

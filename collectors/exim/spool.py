"""Exim's spool, read the way ``exim -bp`` reads it: ``input/`` (split spool too) and ``msglog/``.

Per message (Exim spec, "Format of spool files"; ``src/spool_in.c``):

- ``<id>-H``: its own name, ``login uid gid``, ``<sender>``, ``<arrival second> <warnings>``,
  ``-name value`` lines (``-frozen <time>``, ``-received_time_usec .uuuuuu``,
  ``-deliver_firsttime``; ``-aclc``/``-aclm`` carry a byte count and a value that may span lines),
  the tree of addresses already delivered (``XX`` when empty; else pre-order nodes ``YN addr``
  whose two letters say whether a left and a right subtree follow), the recipient count, the
  recipients (later formats append data after the address, read from the end as Exim does), a
  blank line and the headers (``NNNc text``: length, a flag, the text; ``*`` = not transmitted).
- ``<id>-D``: the body; ``-bp``'s size is the transmitted headers plus the body.
- ``<id>-J``: addresses delivered by an attempt still in progress (delivered too).
- ``msglog/<id>``: one line per attempt; a ``defer`` line gives the recipient's last defer reason.

The Exim manual says spool files are "not intended as an interface to other programs"; the
format has been stable since Exim 4 and ``exim -bp`` is the fallback when it cannot be read.
Parsing is pure (bytes in, a record or ``SpoolFormatError`` out); ``spool_changes`` does the I/O.

The queue collector scans incrementally (``SpoolState``): Exim writes a new -H file (a new
inode, renamed over the old) whenever a delivery attempt changes it, and appends to the message
log, so a message whose -H file and message log are as the last scan found them keeps its
contribution to the totals unread; one with a -J journal (an attempt in progress) is always read.
A walk (``spool_changes``) ``stat``s every -H file and message log; between walks, an update
(``spool_updates``) looks only at the messages whose files inotify saw change
(``collectors/spool_watch.py``), so that its cost follows the changes, not the queue.
"""

from __future__ import annotations

import errno
import math
import os
import struct
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass

from collectors.deadline import Deadline
from collectors.exim.log_parse import DEFERRED, Delivery, EximLineParser, parse_outcome
from collectors.exim.message_id import ID_LENGTHS, is_message_id
from collectors.queue_model import QueueLedger, QueueMessage, QueueRecipient
from collectors.spool_watch import DEFER, QUEUE, ROOT

QUEUED, FROZEN = "queued", "frozen"
#: The spool's directories that a scan reads (Exim makes them with its first message).
SPOOL_DIRECTORIES = ("input", "msglog")
EXIM_QUEUES = (QUEUED, FROZEN)
#: Files between two deadline checks (a check is a clock read; a file is a few microseconds).
CHECK_EVERY = 256
#: Exim refuses more recipients than this in a -H file (``spool_in.c``); so do we.
MAX_RECIPIENTS = 16384


class SpoolFormatError(ValueError):
    """A -H file that Exim itself would report as a spool format error."""


@dataclass(frozen=True, slots=True)
class SpoolHeader:
    """What the envelope part of a -H file says."""

    message_id: str
    sender: str
    arrival: float
    frozen: bool
    attempted: bool  # False while -deliver_firsttime is set: no attempt yet, so no defer reasons
    recipients: tuple[str, ...]
    delivered: frozenset[str]
    header_bytes: int  # transmitted header bytes, for -bp's size


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b"\n", pos)
    if end < 0:
        raise SpoolFormatError("unexpected end of file")
    return data[pos:end], end + 1


def _recipient(line: str) -> str:
    """The address of a recipient line, without the data later formats append after it.

    Read backwards, as ``spool_in.c`` does: an address ends with a domain, so trailing digits,
    ``,`` or ``#<flags>`` mark added data (Exim 3 ``a n,n,n``; early Exim 4 ``a n``; current
    ``a [orcpt len,dsn_flags ][errors_to len,pno]#flags``).
    """
    end = len(line)
    p = end - 1
    while p >= 0 and line[p].isdigit():
        p -= 1
    if p < 0 or p == end - 1:
        return line  # no trailing digits: the line is the address
    mark = line[p]
    if mark == ",":  # Exim 3
        while p > 0 and (line[p - 1].isdigit() or line[p - 1] == ","):
            p -= 1
        p -= 1
        return line[:p] if p >= 0 and line[p] == " " else line
    if mark == " ":  # early Exim 4: the parent number
        return line[:p]
    if mark != "#":
        return line
    flags = int(line[p + 1:])
    if flags & 0x01:  # errors_to and its length, then the parent number
        p = _skip_back_length(line, p)
        length = _length_at(line, p)
        p -= length + 1
    if flags & 0x02:  # orcpt and its length, then the DSN flags
        p = _skip_back_length(line, p)
        length = _length_at(line, p)
        p -= length + 1
    if p < 1:
        raise SpoolFormatError(f"malformed recipient line {line!r}")
    return line[:p]


def _skip_back_length(line: str, p: int) -> int:
    """From the character after ``<len>,<n>``, back to the separator in front of ``<len>``."""
    p -= 1
    while p >= 0 and (line[p].isdigit() or line[p] in ",-"):
        p -= 1
    return p


def _length_at(line: str, p: int) -> int:
    """``<len>`` of the ``<len>,<n>`` that starts after ``p``."""
    length = line[p + 1:].partition(",")[0]
    if not length.isdigit():
        raise SpoolFormatError(f"malformed recipient line {line!r}")
    return int(length)


def _nonrecipients(data: bytes, pos: int, first: bytes) -> tuple[frozenset[str], int]:
    """The delivered-address tree that starts with line ``first``; pre-order, so counting the
    subtrees each node announces finds its end."""
    if first == b"XX":
        return frozenset(), pos
    delivered = []
    line = first
    expected = 1
    while True:
        if len(line) < 4 or line[2:3] != b" " or line[0:1] not in b"YN" or line[1:2] not in b"YN":
            raise SpoolFormatError(f"malformed non-recipients tree line {line[:80]!r}")
        delivered.append(line[3:].decode("utf-8", "surrogateescape"))
        expected += (line[0:1] == b"Y") + (line[1:2] == b"Y") - 1
        if expected == 0:
            return frozenset(delivered), pos
        line, pos = _line(data, pos)


def _header_bytes(data: bytes, pos: int) -> int:
    """Sum of the transmitted headers' lengths (``NNNc text``; flag ``*``: not transmitted)."""
    total = 0
    end = len(data)
    while pos < end:
        start = pos
        while pos < end and 48 <= data[pos] <= 57:
            pos += 1
        if pos == start or pos >= end:
            raise SpoolFormatError("malformed header length")
        length = int(data[start:pos])
        flag = data[pos]
        pos += 1
        while pos < end and data[pos] in b" \t\n":
            pos += 1
        if flag != 42:  # "*"
            total += length
        pos += length
        if pos > end:
            raise SpoolFormatError("header runs past the end of the file")
    return total


def parse_header(data: bytes, message_id: str) -> SpoolHeader:
    """Parse a -H file's bytes; raises ``SpoolFormatError`` where Exim would report a format error."""
    name, pos = _line(data, 0)
    if name != f"{message_id}-H".encode():
        raise SpoolFormatError(f"first line is {name[:80]!r}, not the file's own name")
    _, pos = _line(data, pos)  # login uid gid
    sender_line, pos = _line(data, pos)
    if len(sender_line) < 2 or sender_line[:1] != b"<" or sender_line[-1:] != b">":
        raise SpoolFormatError(f"malformed sender line {sender_line[:80]!r}")
    time_line, pos = _line(data, pos)
    fields = time_line.split()
    if len(fields) != 2 or not fields[0].isdigit() or not fields[1].lstrip(b"-").isdigit():
        raise SpoolFormatError(f"malformed time line {time_line[:80]!r}")
    arrival = float(int(fields[0]))
    frozen = False
    attempted = True
    # The "-name value" lines: most say nothing a queue reader needs, so only their first letters
    # are looked at (f, r, d, a) before a line is cut out of the buffer.
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise SpoolFormatError("unexpected end of file")
        if data[pos] != 45:  # not "-": the first line after the variables
            line = data[pos:end]
            pos = end + 1
            break
        start = pos + 2 if data[pos + 1] == 45 else pos + 1  # "--" marks tainted data
        if data[start] in b"frda":
            variable = data[start:end]
            if variable.startswith(b"frozen "):
                frozen = True
            elif variable.startswith(b"received_time_usec "):
                usec = variable[19:].lstrip(b".")
                if usec.isdigit():
                    arrival += int(usec) / 10 ** len(usec)
            elif variable == b"deliver_firsttime":
                attempted = False
            elif variable.startswith((b"aclc ", b"aclm ", b"acl ")):
                # "-aclc <name> <count>" (or old "-acl <n> <count>"): the value follows, count bytes
                # and a newline, and may itself contain newlines.
                count = variable.rsplit(b" ", 1)[-1]
                if not count.isdigit():
                    raise SpoolFormatError(f"malformed ACL variable line {variable[:80]!r}")
                end += int(count) + 1
        pos = end + 1
    delivered, pos = _nonrecipients(data, pos, line)
    count_line, pos = _line(data, pos)
    if not count_line.strip().isdigit() or int(count_line) > MAX_RECIPIENTS:
        raise SpoolFormatError(f"malformed recipient count {count_line[:80]!r}")
    recipients = []
    for _ in range(int(count_line)):
        line, pos = _line(data, pos)
        if not line:
            raise SpoolFormatError("empty recipient line")
        recipients.append(_recipient(line.decode("utf-8", "surrogateescape")))
    blank, pos = _line(data, pos)
    if blank:
        raise SpoolFormatError("no blank line before the headers")
    return SpoolHeader(message_id, sender_line[1:-1].decode("utf-8", "surrogateescape"), arrival, frozen, attempted,
                       tuple(recipients), delivered, _header_bytes(data, pos))


def defer_reasons(msglog: bytes, parser: EximLineParser, recipients: Collection[str]) -> dict[str, str]:
    """The last defer reason of each of ``recipients`` that has one in a message log: its lines are
    main log lines without the ``==`` flag (``<time> <address> R=… T=… defer (<errno>) …: <why>``).
    The log is read from its end, and no further once every recipient has its reason."""
    reasons: dict[str, str] = {}
    wanted = len(recipients)
    for raw in reversed(msglog.split(b"\n")):
        if b" defer (" not in raw:
            continue
        envelope = parser.envelope(raw.decode("utf-8", "replace"))
        if type(envelope) is not tuple:
            continue
        outcome = parse_outcome(envelope[1], "==", DEFERRED, None, None, "")
        if (isinstance(outcome, Delivery) and outcome.text and outcome.address not in reasons
                and outcome.address in recipients):
            reasons[outcome.address] = outcome.text
            if len(reasons) == wanted:
                break
    return reasons


def message_size(header: SpoolHeader, data_file_size: int | None) -> int:
    """What ``exim -bp`` shows as the size: transmitted headers plus the -D file without its first
    line (the file's own name), plus one for the blank line between them; 0 without a -D file."""
    if data_file_size is None:
        return 0
    return header.header_bytes + data_file_size - (len(header.message_id) + 3) + 1


def _directories(input_dir: str, top: list[str], watch: Watch) -> Iterator[tuple[str, list[str]]]:
    """``input/`` and its split-spool subdirectories (one base-62 character each), with their
    entries; each subdirectory is watched before it is listed (``input/`` was, by the caller)."""
    yield input_dir, top
    for entry in top:
        if len(entry) == 1 and entry.isalnum():
            path = os.path.join(input_dir, entry)
            watch(path, QUEUE)
            try:
                yield path, os.listdir(path)
            except (NotADirectoryError, FileNotFoundError):  # a file of that name, or gone meanwhile
                continue


def _watch_msglogs(msglog_dir: str, watch: Watch) -> None:
    """Watch ``msglog/`` and its split-spool subdirectories (their files are not listed)."""
    watch(msglog_dir, DEFER)
    try:
        entries = os.listdir(msglog_dir)
    except FileNotFoundError:
        return
    for entry in entries:
        if len(entry) == 1 and entry.isalnum():
            watch(os.path.join(msglog_dir, entry), DEFER)


def _read(path: str) -> bytes | None:
    """A spool file's bytes, None when it is gone (the message left the queue meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


#: A file's (inode, mtime in ns, size), packed: what changes when Exim rewrites or appends to it.
_IDENTITY = struct.Struct("=QqQ")
#: The identity of a file that does not exist (no file has inode 0).
_MISSING = bytes(_IDENTITY.size)


def _identity(path: str) -> bytes:
    """The identity of the file at ``path``; ``_MISSING`` when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _MISSING
    return _IDENTITY.pack(st.st_ino, st.st_mtime_ns, st.st_size)


#: What a scan keeps of a message, packed, as a million of them may be kept: flags, the identity
#: of its -H file and of its message log, then its contribution to the ledger (``_pack_known()``).
Known = bytes
_KNOWN = struct.Struct(f"=B{_IDENTITY.size}s{_IDENTITY.size}s")
_FROZEN, _USES_LOG = 1, 2


def _pack_known(header: bytes | None, msglog: bytes | None, contribution: bytes, queue: str) -> Known:
    """A message as a scan leaves it: the identity of its -H file (None: read it again next time)
    and of its message log (None: the record does not depend on it), and what it contributes to
    the ledger in ``queue``."""
    flags = (_FROZEN if queue == FROZEN else 0) | (_USES_LOG if msglog is not None else 0)
    # An untrusted -H identity is stored as _MISSING, which no existing file has: never unchanged.
    return _KNOWN.pack(flags, header or _MISSING, msglog or _MISSING) + contribution


def _contribution(entry: Known) -> tuple[bytes, str]:
    """What ``entry`` contributes to the ledger, and in which queue."""
    return entry[_KNOWN.size:], FROZEN if entry[0] & _FROZEN else QUEUED


#: A message a scan found: its id, the identities its record was read from (as in ``Known``), and
#: the record (None: unchanged since the last scan).
Found = tuple[str, bytes | None, bytes | None, QueueMessage | None]
#: Called with each spool directory (and its kind: ``spool_watch.ROOT``, ``QUEUE`` or ``DEFER``) before a walk
#: lists it.
Watch = Callable[[str, str], None]


def unwatched(path: str, kind: str) -> None:
    """The ``watch`` of a scan whose changes nobody tracks."""


def spool_changes(spool_directory: str, deadline: Deadline, known: Mapping[str, Known],
                  watch: Watch = unwatched) -> Iterator[Found]:
    """Every message in the spool, within ``deadline`` (``ReadTimeout`` when it passes), except that
    one whose files are as ``known`` has them comes without a record.

    ``input/`` is checked and listed at once, so that ``PermissionError`` (the agent is not in the
    Exim group: the caller may fall back to ``exim -bp``) comes before any message. A -H file that
    cannot be parsed comes out as a message with a non-finite arrival (counted as malformed, left
    out of the totals); one that disappears while the scan runs was delivered meanwhile and is
    left out, as ``exim -bp`` does. Each directory is given to ``watch`` before it is listed, so
    that a change after the listing is seen by whoever tracks them."""
    input_dir = os.path.join(spool_directory, "input")
    msglog_dir = os.path.join(spool_directory, "msglog")
    for path in (spool_directory, input_dir):  # one that does not exist is not this error
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
    watch(spool_directory, ROOT)
    if not os.path.isdir(input_dir) and os.path.isdir(spool_directory):
        return iter(())  # Exim makes input/ and msglog/ with its first message
    watch(input_dir, QUEUE)
    _watch_msglogs(msglog_dir, watch)
    return _scan(input_dir, os.listdir(input_dir), msglog_dir, deadline, known, watch)


def spool_updates(spool_directory: str, message_ids: Iterable[str], deadline: Deadline,
                  known: Mapping[str, Known]) -> Iterator[Found]:
    """``spool_changes`` for ``message_ids`` only (those whose files inotify saw change): each that
    is still in the spool, whether it is split or not."""
    input_dir = os.path.join(spool_directory, "input")
    msglog_dir = os.path.join(spool_directory, "msglog")
    parser = EximLineParser()
    for n, message_id in enumerate(message_ids):
        if n % CHECK_EVERY == 0:
            deadline.check()
        for directory, msglog in ((f"{input_dir}/{message_id[5]}", f"{msglog_dir}/{message_id[5]}/{message_id}"),
                                  (input_dir, f"{msglog_dir}/{message_id}")):
            header_identity = _identity(f"{directory}/{message_id}-H")
            if header_identity != _MISSING:
                journal = f"{message_id}-J"
                names = {journal} if os.path.exists(f"{directory}/{journal}") else set()
                found = _examine(message_id, directory, names, msglog, header_identity, known, parser)
                if found is not None:
                    yield found
                break
    deadline.check()


class SpoolState:
    """What the scans of one spool found (``known``: per message id), kept in step with the
    ``QueueLedger`` they update."""

    def __init__(self) -> None:
        self.known: dict[str, Known] = {}
        self.in_progress: set[str] = set()  # read with a -J journal: read again at every scan

    def clear(self) -> None:
        """Forget everything (a new ledger starts from nothing)."""
        self.known.clear()
        self.in_progress.clear()

    def apply(self, found: Iterable[Found], ledger: QueueLedger, scope: Collection[str] | None = None) -> int:
        """Apply a complete scan (``found``) to ``ledger``: a message read anew replaces its old
        contribution; a message not found leaves — any, after a walk (``scope`` None), or one of
        ``scope``, the ids an update looked at. Returns how many messages were read. When the scan
        is cut short (``found`` raises), the ledger and ``known`` still agree; messages not
        reached keep their contributions until a scan completes."""
        entries = self.known
        seen: set[str] = set()
        read = 0
        for message_id, header, msglog, message in found:
            seen.add(message_id)
            if message is None:
                continue
            read += 1
            old = entries.pop(message_id, None)
            if old is not None:
                ledger.remove(*_contribution(old), False)
            # An unparsable -H file (or a listing's spool error): counted as malformed, left out of the totals.
            contribution = ledger.encode(message if math.isfinite(message.arrival) else None)
            ledger.add(contribution, message.queue, False)
            entries[message_id] = _pack_known(header, msglog, contribution, message.queue)
            if header is None:
                self.in_progress.add(message_id)
            else:
                self.in_progress.discard(message_id)
        gone = entries.keys() - seen if scope is None else [i for i in scope if i in entries and i not in seen]
        for message_id in gone:
            ledger.remove(*_contribution(entries.pop(message_id)), False)
            self.in_progress.discard(message_id)
        return read


def changed_ids(files: Iterable[tuple[str, str]], logs: Iterable[str]) -> set[str]:
    """The message ids among the names of changed spool files (``<id>-H``, ``<id>-J``) and message
    logs (``<id>``); other names (``-D`` files, temporary files) are left out."""
    ids = {name[:-2] for _, name in files if name[-2:] in ("-H", "-J") and is_message_id(name[:-2])}
    ids.update(name for name in logs if is_message_id(name))
    return ids


def _scan(input_dir: str, top: list[str], msglog_dir: str, deadline: Deadline, known: Mapping[str, Known],
          watch: Watch) -> Iterator[Found]:
    parser = EximLineParser()
    seen = 0
    for directory, entries in _directories(input_dir, top, watch):
        split = directory != input_dir
        names = set(entries)
        for entry in entries:
            if len(entry) - 2 not in ID_LENGTHS or not entry.endswith("-H") or not is_message_id(entry[:-2]):
                continue
            seen += 1
            if seen % CHECK_EVERY == 0:
                deadline.check()
            message_id = entry[:-2]
            msglog = f"{msglog_dir}/{entry[5]}/{message_id}" if split else f"{msglog_dir}/{message_id}"
            header_identity = _identity(f"{directory}/{entry}")
            if header_identity == _MISSING:
                continue  # delivered meanwhile
            found = _examine(message_id, directory, names, msglog, header_identity, known, parser)
            if found is not None:
                yield found
    deadline.check()


def _examine(message_id: str, directory: str, names: set[str], msglog: str, header_identity: bytes,
             known: Mapping[str, Known], parser: EximLineParser) -> Found | None:
    """One message whose -H file has ``header_identity``: unchanged since ``known``, or read anew
    (None: it left the spool meanwhile)."""
    # The record of a message with an attempt in progress holds the journal's state, not the -H file's.
    trusted = None if f"{message_id}-J" in names else header_identity
    last = known.get(message_id)
    if last is not None and trusted is not None:
        flags, header_was, msglog_was = _KNOWN.unpack_from(last)
        if header_was == trusted and (not flags & _USES_LOG or msglog_was == _identity(msglog)):
            return message_id, trusted, msglog_was if flags & _USES_LOG else None, None
    data = _read(f"{directory}/{message_id}-H")
    if data is None:
        return None
    try:
        header = parse_header(data, message_id)
    except SpoolFormatError:
        return message_id, trusted, None, QueueMessage(QUEUED, message_id, math.nan, 0, "", ())
    # The message log's identity before it is read: a line appended meanwhile makes the next scan read it again.
    log_identity = _identity(msglog) if header.attempted and not header.frozen else None
    return message_id, trusted, log_identity, _message(header, directory, names, msglog, parser)


def _message(header: SpoolHeader, directory: str, names: set[str], msglog: str,
             parser: EximLineParser) -> QueueMessage:
    """The queue record of one parsed -H file: undelivered recipients with their defer reasons."""
    message_id = header.message_id
    delivered: frozenset[str] | set[str] = header.delivered
    if f"{message_id}-J" in names:  # an attempt in progress has delivered these already
        journal = _read(f"{directory}/{message_id}-J")
        if journal:
            delivered = set(delivered) | set(journal.decode("utf-8", "surrogateescape").split("\n")[:-1])
    try:
        data_size: int | None = os.stat(f"{directory}/{message_id}-D").st_size
    except FileNotFoundError:
        data_size = None
    waiting = [r for r in header.recipients if r not in delivered]
    reasons: dict[str, str] = {}
    if header.attempted and not header.frozen and waiting:
        log_data = _read(msglog)
        if log_data:
            reasons = defer_reasons(log_data, parser, set(waiting))
    return QueueMessage(
        FROZEN if header.frozen else QUEUED, message_id, header.arrival, message_size(header, data_size),
        header.sender, tuple(QueueRecipient(r, reasons.get(r, "")) for r in waiting))

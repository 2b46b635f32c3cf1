"""Exim main log lines to typed records: layer 1 of the Exim log pipeline, pure.

``EximLineParser.parse(line)`` returns one frozen record per line, or the ``Ignored`` /
``Unparsed`` markers; it never raises. A line is (Exim spec, "Log files")::

    YYYY-MM-DD HH:MM:SS[.mmm] [+ZZZZ] [[pid]] [<message id> ]<flag or text> …

- ``+millisec`` adds ``.mmm``, ``log_timezone`` the ``+ZZZZ`` offset (without it the time is the
  agent's local time: run it with Exim's ``timezone``), ``+pid`` the ``[pid]``;
- message ids of both formats (16 and 23 characters, Exim 4.97+);
- ``<=`` arrival (``(=`` fakereject), ``=>`` ``->`` ``>>`` ``*>`` deliveries, ``==`` deferral,
  ``**`` failure, ``Completed``, freeze and thaw lines, ``cancelled by …``;
- both layouts of a deferral: ``defer (<errno>) H=<host> [<ip>]:<port>: <why>`` (current) and
  ``defer (<errno>): SMTP error … : host <host> [<ip>]: <reply>`` (before Exim 4.85);
- multi-line SMTP replies arrive folded on one line with a literal ``\\n``: the status code and
  enhanced code are read from the first reply line, and the lines are joined with a space (as
  Postfix logs them).

Lines of Exim's own (daemon start, queue runs, SMTP connections, rejections, per-host detail lines
next to a ``==``, continuation lines of a multi-line entry) are ``Ignored("exim")``; lines that do
not start with an Exim timestamp, or whose message line is malformed, are ``Unparsed``. The
parser's only state: caches, and ``instance``, the ``mta_instance`` its records are stamped with
(a main log belongs to one Exim instance; the collector sets it per source).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass

from collectors.base import Clock
from collectors.exim.message_id import is_message_id
from collectors.log_pipeline import Ignored, Unparsed

SENT, DEFERRED, BOUNCED = "sent", "deferred", "bounced"
#: Delivery flags -> status. ``*>`` (suppressed by ``-N``) is a delivery that went nowhere.
DELIVERY_FLAGS = {"=>": SENT, "->": SENT, ">>": SENT, "*>": SENT, "==": DEFERRED, "**": BOUNCED}
ARRIVAL_FLAGS = frozenset({"<=", "(="})
MAX_LINE_CHARS = 16384
_CACHE_LIMIT = 4096
RETRY_TIMEOUT = "retry timeout exceeded"

UNPARSED_ENVELOPE = Unparsed("envelope")
UNPARSED_MESSAGE = Unparsed("message")
UNPARSED_ERROR = Unparsed("error")
UNPARSED_TOO_LONG = Unparsed("too long")
IGNORED_EXIM = Ignored("exim")

# "…: 421-4.7.28 …" / "…: host x [1.2.3.4]: 550 5.1.1 …": the first SMTP reply in a failure text.
_REPLY = re.compile(r"(?:^|: )([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3})\b)?")
# Before Exim 4.85 the host was named inside the text: "…: host <name> [<ip>]: <reply>".
_OLD_HOST = re.compile(r": host (\S+) \[([^\]]+)\]")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNIT_SECONDS = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


@dataclass(frozen=True, slots=True)
class Arrival:
    """``<=``: a message entered the spool; ``reference`` (``R=``) names the message a bounce or
    warning Exim made itself is about; ``delay_warning``: it is a delay warning by its subject
    (Exim's default ``T="Warning: message <id> delayed …"``, logged with ``+subject``);
    ``fake_reject`` for ``(=``."""

    timestamp: float | None
    instance: str | None
    qid: str
    sender: str
    size: int | None
    reference: str | None
    delay_warning: bool
    fake_reject: bool


@dataclass(frozen=True, slots=True)
class Delivery:
    """One recipient's delivery (``=>`` ``->`` ``>>`` ``*>``), deferral (``==``) or failure (``**``).

    ``host``/``ip``/``port``: the remote host (``H=``, or named in an old-layout text); ``text``:
    the reason of a deferral or failure (multi-line replies as Exim folded them); ``dsn``: the
    enhanced status code of the reply, else ``<class>.0.0`` of its SMTP code, else None (Exim's own
    errors); ``queue_time``: ``QT=`` in seconds.
    """

    timestamp: float | None
    instance: str | None
    qid: str
    flag: str
    status: str
    address: str
    router: str | None
    transport: str | None
    host: str | None
    ip: str | None
    port: str | None
    errno: str | None
    text: str
    dsn: str | None
    queue_time: float | None

    @property
    def retry_timeout(self) -> bool:
        """A failure because the address's retry rule ran out (``** addr: retry timeout exceeded``)."""
        return self.status == BOUNCED and self.text.startswith(RETRY_TIMEOUT)


@dataclass(frozen=True, slots=True)
class Completed:
    """The message is about to leave the spool (every recipient done)."""

    timestamp: float | None
    instance: str | None
    qid: str


@dataclass(frozen=True, slots=True)
class FreezeChange:
    """``Frozen …``, ``Message is frozen``, ``frozen by <user>`` (``frozen`` True) or ``Unfrozen by …``,
    ``unfrozen by <user>``."""

    timestamp: float | None
    instance: str | None
    qid: str
    frozen: bool


@dataclass(frozen=True, slots=True)
class Cancelled:
    """``cancelled by timeout_frozen_after`` (a frozen message timed out) or ``cancelled by <user>``
    (``exim -Mg``): every undelivered recipient fails and the message returns to its sender."""

    timestamp: float | None
    instance: str | None
    qid: str
    by: str

    @property
    def timed_out(self) -> bool:
        """Exim's own timeout, as opposed to an administrator's ``-Mg``."""
        return self.by == "timeout_frozen_after"


Record = Arrival | Delivery | Completed | FreezeChange | Cancelled | Ignored | Unparsed


def parse_duration(text: str) -> float | None:
    """Exim's printed times (``3m45s``, ``1.578s``, ``2d3h``) in seconds; None when malformed."""
    total = 0.0
    end = 0
    for match in _DURATION.finditer(text):
        if match.start() != end:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        end = match.end()
    return total if end == len(text) and end else None


def reply_codes(text: str) -> str | None:
    """The DSN of a failure text: the enhanced code of its first SMTP reply, else the reply
    code's class (``5.0.0``), else None."""
    match = _REPLY.search(text)
    if match is None:
        return None
    return match.group(2) or f"{match.group(1)[0]}.0.0"


def _host(body: str, at: int) -> tuple[str | None, str | None, str | None]:
    """(host, ip, port) of ``H=<host> [<ip>]:<port>*`` starting at ``at`` (just after ``H=``)."""
    end = body.find(" ", at)
    host = body[at:end] if end >= 0 else body[at:]
    if end < 0 or body[end + 1:end + 2] != "[":
        # "H=[1.2.3.4]" (no name) or a malformed field such as "H=(helo) [4.4.4.4:" without "]"
        return host.rstrip(":") or None, None, None
    close = body.find("]", end + 2)
    if close < 0:
        return host, None, None
    ip = body[end + 2:close]
    port = None
    if body[close + 1:close + 2] == ":":
        digits = close + 2
        while digits < len(body) and body[digits].isdigit():
            digits += 1
        port = body[close + 2:digits] or None
    return host, ip, port


def _field(head: str, name: str) -> str | None:
    """The value of `` <name>=<value>`` in ``head`` (up to the next space), or None."""
    at = head.find(f" {name}=")
    if at < 0:
        return None
    start = at + len(name) + 2
    end = head.find(" ", start)
    return head[start:end] if end >= 0 else head[start:]


def parse_outcome(body: str, flag: str, status: str, timestamp: float | None, instance: str | None,
                  qid: str) -> Delivery | Unparsed:
    """The part after the flag of a delivery, deferral or failure line; also the body of a message
    log line (``msglog/<id>``), which is the same without the flag."""
    address, space, rest = body.partition(" ")
    if address.endswith(":") and status != SENT:  # "** addr: why"
        address, rest = address[:-1], ": " + rest
    elif not space:
        return UNPARSED_MESSAGE
    if not address or "\\n" in address:
        return UNPARSED_MESSAGE
    errno = None
    text = ""
    if status == SENT:
        head = rest.split(' C="', 1)[0]
    else:
        marker = rest.find("defer (") if status == DEFERRED else -1
        if marker >= 0:
            close = rest.find(")", marker)
            if close < 0:
                return UNPARSED_MESSAGE
            errno = rest[marker + 7:close]
            colon = rest.find(": ", close)
            head = rest[:colon] if colon >= 0 else rest
            text = rest[colon + 2:] if colon >= 0 else ""
        else:
            colon = rest.find(": ")
            if colon < 0:
                return UNPARSED_MESSAGE
            head, text = rest[:colon], rest[colon + 2:]
    if "\\n" in text:
        # Exim folds a multi-line reply with a literal "\n" between its lines; Postfix joins them
        # with a space, and so do we, so that one reply reads (and classifies) alike from both.
        text = text.replace("\\n", " ")
    if status == BOUNCED:
        # A failure's deliver time (+deliver_time) comes after its text: "...: 550 5.1.1 ... DT=0.001s".
        cut = text.rfind(" DT=")
        if cut >= 0 and parse_duration(text[cut + 4:]) is not None:
            text = text[:cut]
    head = " " + head
    at = head.find(" H=")
    host, ip, port = _host(head, at + 3) if at >= 0 else (None, None, None)
    if host is None and text:
        old = _OLD_HOST.search(text)
        if old is not None:
            host, ip = old.group(1), old.group(2)
    queue_time = None
    qt = _field(rest, "QT") if status == SENT else None
    if qt is not None:
        queue_time = parse_duration(qt)
    return Delivery(timestamp, instance, qid, flag, status, address, _field(head, "R"), _field(head, "T"), host, ip,
                    port, errno, text, reply_codes(text) if text else None, queue_time)


def _arrival(body: str, timestamp: float | None, instance: str | None, qid: str, fake: bool) -> Record:
    """``<= sender [R=<id>] … S=<size> …``."""
    sender, _, rest = body.partition(" ")
    if not sender:
        return UNPARSED_MESSAGE
    if sender == "<>":
        sender = ""
    rest = " " + rest
    size_text = _field(rest, "S")
    size = int(size_text) if size_text is not None and size_text.isdigit() else None
    reference = _field(rest, "R")
    if reference is not None and not is_message_id(reference):
        reference = None
    warning = reference is not None and not sender and f' T="Warning: message {reference} delayed ' in rest
    return Arrival(timestamp, instance, qid, sender, size, reference, warning, fake)


class EximLineParser:
    """Parses Exim main log lines; ``clock`` is unused (Exim timestamps carry their year) but kept
    for the ``LogFormat`` interface; ``instance`` stamps the records (lane rules match it). Not
    thread-safe: one parser per feeding thread."""

    def __init__(self, clock: Clock = time.time, instance: str | None = None) -> None:
        self._clock = clock
        self.instance = instance
        self._stamps: dict[str, float | None] = {}

    def parse(self, line: str) -> Record:
        """One log line (trailing newline allowed) -> a record, ``Ignored`` or ``Unparsed``."""
        if len(line) > MAX_LINE_CHARS:
            return UNPARSED_TOO_LONG
        try:
            return self._parse(line.rstrip("\r\n") if line[-1:] in ("\n", "\r") else line)
        except Exception:  # any input must yield a result, never an exception
            return UNPARSED_ERROR

    def _parse(self, line: str) -> Record:
        if line[:1] in (" ", "\t") and line.strip():
            return IGNORED_EXIM  # continuation of a multi-line entry (Exim indents them)
        envelope = self.envelope(line)
        if type(envelope) is not tuple:
            return envelope  # type: ignore[return-value]
        return self._message(envelope[1], envelope[0])

    def envelope(self, line: str) -> tuple[float, str] | Unparsed:
        """(timestamp, the rest) of ``YYYY-MM-DD HH:MM:SS[.mmm] [+ZZZZ] [[pid]] <rest>``; message
        logs (``msglog/<id>``) use the same prefix."""
        if len(line) < 21 or line[4] != "-" or line[10] != " " or line[13] != ":":
            return UNPARSED_ENVELOPE
        mark = line[19]
        if mark == " ":
            pos, fraction = 20, 0.0
        elif mark == ".":
            space = line.find(" ", 20)
            digits = line[20:space]
            if space < 0 or not (digits.isdigit() and digits.isascii()):
                return UNPARSED_ENVELOPE
            pos, fraction = space + 1, int(digits) / 10 ** len(digits)
        else:
            return UNPARSED_ENVELOPE
        zone = ""
        if line[pos:pos + 1] in ("+", "-") and line[pos + 5:pos + 6] == " " and line[pos + 1:pos + 5].isdigit():
            zone = line[pos:pos + 5]
            pos += 6
        base = self._timestamp(line[:19], zone)
        if base is None:
            return UNPARSED_ENVELOPE
        if line[pos:pos + 1] == "[":
            close = line.find("] ", pos)
            if close < 0 or not line[pos + 1:close].isdigit():
                return UNPARSED_ENVELOPE
            pos = close + 2
        return base + fraction, line[pos:]

    def _message(self, rest: str, timestamp: float) -> Record:
        first, _, body = rest.partition(" ")
        if not is_message_id(first):
            return IGNORED_EXIM
        instance = self.instance
        flag, _, tail = body.partition(" ")
        status = DELIVERY_FLAGS.get(flag)
        if status is not None:
            return parse_outcome(tail, flag, status, timestamp, instance, first)
        if flag in ARRIVAL_FLAGS:
            return _arrival(tail, timestamp, instance, first, flag == "(=")
        if flag == "Completed":
            return Completed(timestamp, instance, first)
        if body.startswith(("Frozen", "Message is frozen", "frozen by ")):
            return FreezeChange(timestamp, instance, first, True)
        if body.startswith(("Unfrozen by ", "unfrozen by ")):
            return FreezeChange(timestamp, instance, first, False)
        if body.startswith("cancelled by "):
            by = body[13:]
            if by.startswith("system filter"):  # a filter's "fail": a policy decision, not an expiry
                return IGNORED_EXIM
            return Cancelled(timestamp, instance, first, by)
        return IGNORED_EXIM

    def _timestamp(self, stamp: str, zone: str) -> float | None:
        """``YYYY-MM-DD HH:MM:SS`` in ``zone`` (``+HHMM``; empty: local time) -> epoch, None if malformed."""
        key = stamp + zone
        cached = self._stamps.get(key, -1.0)
        if cached != -1.0:
            return cached
        value = _epoch(stamp, zone)
        if len(self._stamps) >= _CACHE_LIMIT:
            self._stamps.clear()
        self._stamps[key] = value
        return value


def _epoch(stamp: str, zone: str) -> float | None:
    date, clock = stamp[:10], stamp[11:]
    if not (date[:4].isdigit() and date[5:7].isdigit() and date[8:10].isdigit() and date[7] == "-"
            and clock[:2].isdigit() and clock[3:5].isdigit() and clock[6:8].isdigit() and clock[5] == ":"
            and stamp.isascii()):
        return None
    fields = (int(date[:4]), int(date[5:7]), int(date[8:10]), int(clock[:2]), int(clock[3:5]), int(clock[6:8]))
    if not (1 <= fields[1] <= 12 and 1 <= fields[2] <= 31 and fields[3] <= 23 and fields[4] <= 59
            and fields[5] <= 60):
        return None
    if not zone:
        return time.mktime((*fields, 0, 0, -1))
    offset = (int(zone[1:3]) * 60 + int(zone[3:5])) * 60
    return calendar.timegm((*fields, 0, 0, 0)) - (offset if zone[0] == "+" else -offset)

"""Postfix mail log lines to typed records: layer 1 of the Postfix log pipeline, pure and fast.

``PostfixLineParser.parse(line)`` returns one frozen record per line, or the ``Ignored`` /
``Unparsed`` markers; it never raises, whatever the input. Its only state is caches (envelope
-> timestamp and program, timestamp prefix -> epoch, program -> instance/service) and the
reference clock that places BSD timestamps, which carry no year, in the right year.

Envelope forms accepted::

    Feb 24 16:18:40 host postfix/smtp[59649]: <message>        BSD, either day padding
    Απρ 15 12:20:28 host postfix/smtp[59649]: <message>        unknown month: timestamp None
    2025-04-09T08:25:46.392405+00:00 host postfix/relay/smtp[706]: <message>   RFC 3339
    Dec  4 14:44:07 postfix/smtp[2097]: <message>               no host name (BSD or RFC 3339)
    postfix-0 postfix/lmtp[216]: <message>                      one prefix word (container or pod
                                                                 name), no timestamp: None
    postfix/smtp[813]: <message>                                 the program alone: timestamp None
    <queue id>: to=<…>, relay=…, status=sent (…)                 bare message (journald, grok)

The program is ``postfix/<svc>``, ``postfix/<name>/<svc>`` or ``postfix-<instance>/…``, or any
``<syslog_name>/…/<svc>`` whose last element is a Postfix daemon: ``instance`` is the first
path element, ``service`` the rest of the path (``smtp``, ``relay/smtp``: what lane rules
match), ``program`` the whole path. Other programs (dovecot,
kernel, …) are ``Ignored("foreign")``; Postfix lines that carry nothing the accounting uses
(postscreen, TLS, anvil, warnings, …) are ``Ignored("postfix")``; anything malformed is
``Unparsed``.

Speed matters (hundreds of thousands of lines per second): the envelope is cut with
``str.find`` and looked up whole (a busy process logs many lines per second), timestamps are
converted once per distinct second, the message is read in place (offsets into the line, no
copies of its tail), delivery and qmgr lines in Postfix's own field order are read by one
precompiled regular expression each (any other shape takes the general path, with identical
results), and records are built without the per-field cost of frozen dataclasses (``_builder``).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, make_dataclass
from typing import TypeVar

from collectors.base import Clock
from collectors.log_pipeline import Ignored, Unparsed

PROBE_STATUSES = frozenset({"deliverable", "undeliverable", "undeliverable-but-not-cached"})
DELIVERY_STATUSES = frozenset({"sent", "deferred", "bounced"}) | PROBE_STATUSES
#: ``soft_bounce = yes`` logs a would-be bounce as this status; the message stays queued.
SOFTBOUNCE = "SOFTBOUNCE"
# Daemons that make a custom syslog_name (``mta-bulk/smtp``) recognisable as Postfix.
POSTFIX_DAEMONS = frozenset({
    "anvil", "bounce", "cleanup", "discard", "dnsblog", "error", "flush", "local", "lmtp",
    "master", "oqmgr", "pickup", "pipe", "postdrop", "postfix-script", "postlogd", "postmap",
    "postqueue", "postscreen", "postsuper", "proxymap", "qmgr", "qmqpd", "retry", "scache",
    "sendmail", "showq", "smtp", "smtpd", "spawn", "tlsmgr", "tlsproxy", "trivial-rewrite",
    "verify", "virtual",
})
_MONTHS = {name: number for number, name in enumerate(calendar.month_abbr) if name}
#: Postfix lines stay far below this (syslog itself caps messages at a few KiB); anything longer
#: is junk or a line the tailer cut, and counts as unparsed (SPEC §9).
MAX_LINE_CHARS = 16384
_CACHE_LIMIT = 4096
_DAY = 86400.0
_MISS = object()
_NO_STAMP = object()  # one prefix word and no timestamp: an envelope only if a Postfix program follows
_R = TypeVar("_R")


UNPARSED_ENVELOPE = Unparsed("envelope")
UNPARSED_MESSAGE = Unparsed("message")
UNPARSED_ERROR = Unparsed("error")
UNPARSED_TOO_LONG = Unparsed("too long")
IGNORED_FOREIGN = Ignored("foreign")
IGNORED_POSTFIX = Ignored("postfix")


@dataclass(frozen=True, slots=True)
class MessageQueued:
    """qmgr: a message entered the active queue (logged again after each deferral)."""

    timestamp: float | None
    instance: str | None
    service: str | None
    program: str
    qid: str
    sender: str
    size: int
    nrcpt: int


@dataclass(frozen=True, slots=True)
class Submitted:
    """smtpd (``client=``), qmqpd or pickup (``uid=``/``sender=``): a message entered the MTA from
    outside, as opposed to one Postfix made itself (bounce notifications, local forwarding)."""

    timestamp: float | None
    instance: str | None
    service: str | None
    program: str
    qid: str


@dataclass(frozen=True, slots=True)
class Delivery:
    """A delivery status line from any delivery agent; ``probe`` for address-verification results.

    ``status=SOFTBOUNCE`` (``soft_bounce = yes`` turned a bounce into a deferral) comes as
    ``status="deferred"`` with ``soft_bounce`` set.
    """

    timestamp: float | None
    instance: str | None
    service: str | None
    program: str
    qid: str
    to: str
    orig_to: str | None
    relay: str | None
    conn_use: int | None
    delay: float | None
    delays: str | None
    tls: str | None
    dsn: str | None
    status: str
    text: str
    probe: bool
    soft_bounce: bool


@dataclass(frozen=True, slots=True)
class Expired:
    """qmgr: the message's retries ran out (``forced`` for ``postsuper -e``/``-f``); returned to sender."""

    timestamp: float | None
    instance: str | None
    service: str | None
    program: str
    qid: str
    sender: str
    forced: bool


@dataclass(frozen=True, slots=True)
class Removed:
    """qmgr: the queue file is gone (every recipient done, or expired and returned)."""

    timestamp: float | None
    instance: str | None
    service: str | None
    program: str
    qid: str


@dataclass(frozen=True, slots=True)
class BounceNotice:
    """bounce: a notification about ``qid`` was queued as ``new_qid`` (``notice`` names which kind)."""

    timestamp: float | None
    instance: str | None
    service: str | None
    program: str
    qid: str
    notice: str
    new_qid: str


Record = MessageQueued | Submitted | Delivery | Expired | Removed | BounceNotice | Ignored | Unparsed
_Origin = tuple[str | None, str | None, str]
# (timestamp, instance, service, program): what a cached envelope means, flat so that it spreads
# straight into a record's leading fields.
_Envelope = tuple[float | None, str | None, str | None, str]


def _builder(cls: type[_R]) -> Callable[..., _R]:
    """A positional constructor for the frozen slots dataclass ``cls``, about 4x faster.

    A frozen dataclass assigns each field through ``object.__setattr__`` (~0.1 µs a field),
    which was the largest single cost of parsing a delivery line. The builder fills a mutable
    twin generated from the same fields (same slots, same layout) and then relabels the object
    as ``cls``: the result is a genuine, immutable, hashable ``cls`` instance.
    """
    twin = make_dataclass(f"_{cls.__name__}Builder", [(f.name, f.type) for f in fields(cls)],
                          slots=True, eq=False, repr=False)

    def build(*values: object) -> _R:
        record = twin(*values)
        record.__class__ = cls
        return record  # type: ignore[return-value]

    return build


_queued = _builder(MessageQueued)
_submitted = _builder(Submitted)
_delivery_record = _builder(Delivery)
_expired = _builder(Expired)
_removed = _builder(Removed)
_bounce_notice = _builder(BounceNotice)


def _is_qid(token: str) -> bool:
    """Short (hex) and long (``enable_long_queue_ids``) queue ids are short ASCII alphanumerics."""
    return 5 <= len(token) <= 32 and token.isalnum() and token.isascii()


def _origin(tag: str) -> _Origin | bool | None:
    """``program[pid]`` -> (instance, service, program) for Postfix, None for another program,
    False when the tag is malformed."""
    program, bracket, pid = tag.partition("[")
    if not program or (bracket and not (pid[-1:] == "]" and pid[:-1].isdigit() and pid.isascii())):
        return False
    parts = program.split("/")
    if not all(parts):
        return None
    instance = parts[0]
    if instance == "postfix" or instance.startswith("postfix-") or (
            len(parts) > 1 and parts[-1] in POSTFIX_DAEMONS):
        # The service is the whole path after the instance (``relay/smtp``), as master.cf names
        # it: lane rules match it, and the last element alone would merge relay and bulk smtp.
        return instance, program[len(instance) + 1:] or None, program
    return None


def _clock_parts(text: str) -> tuple[int, int, int] | None:
    """``HH:MM:SS`` -> (h, m, s), None if malformed."""
    if len(text) != 8 or text[2] != ":" or text[5] != ":" or not text.isascii():
        return None
    h, m, s = text[:2], text[3:5], text[6:]
    if not (h.isdigit() and m.isdigit() and s.isdigit()):
        return None
    hour, minute, second = int(h), int(m), int(s)
    if hour > 23 or minute > 59 or second > 60:
        return None
    return hour, minute, second


class PostfixLineParser:
    """Parses Postfix log lines; ``clock`` is the reference time that gives BSD timestamps a year.

    Not thread-safe (the caches are plain dicts): use one parser per feeding thread.
    """

    def __init__(self, clock: Clock = time.time) -> None:
        self._clock = clock
        self._envelopes: dict[str, _Envelope | Record] = {}
        self._bsd_cache: dict[str, float | None] = {}
        self._rfc_cache: dict[tuple[str, str], float] = {}
        self._origins: dict[str, _Origin | bool | None] = {}

    def parse(self, line: str) -> Record:
        """One log line (trailing newline allowed) -> a record, ``Ignored`` or ``Unparsed``."""
        if len(line) > MAX_LINE_CHARS:
            return UNPARSED_TOO_LONG
        try:
            # "<timestamp> <host> <program>[<pid>]: <message>": the first ": " ends the envelope
            # (timestamps and host names never contain one). Busy processes log many lines a
            # second, so whole envelopes repeat: remember what each one meant.
            colon = line.find(": ")
            if colon < 0:
                return self._bare(line)
            head = line[:colon]
            envelope = self._envelopes.get(head) or self._new_envelope(head)
            if envelope is None:
                return self._bare(line)
            if type(envelope) is not tuple:
                return envelope  # type: ignore[return-value]
            if line[-1:] == "\n":  # the separator's space stops the strip: only the message loses it
                line = line.rstrip("\r\n")
            timestamp, instance, service, program = envelope  # type: ignore[misc]
            return _message(line, colon + 2, timestamp, instance, service, program)
        except Exception:  # any input must yield a result, never an exception
            return UNPARSED_ERROR

    def route(self, line: str) -> str:
        """The queue id whose accounting ``line`` changes, at a fraction of the cost of ``parse``:
        what a log split between several accountings by queue id is split on (``analyze`` on
        several cores). Lines without one may get any word.

        The word between the first and second ": " when it is a queue id (a line with an envelope:
        that is its record's queue id), else the first word (a bare message: what follows its
        queue id in a record line is "key=…", never a queue id). bounce(8)'s notices introduce the
        notification's own queue id, which they are routed by.
        """
        if " notification: " in line:  # rare: the whole parse says whether it is a notice
            record = self.parse(line)
            return record.new_qid if type(record) is BounceNotice else getattr(record, "qid", "")
        first = line.find(": ")
        if first < 0:
            return ""
        second = line.find(": ", first + 2)
        if second >= 0:
            word = line[first + 2:second]
            if 5 <= len(word) <= 32 and word.isalnum() and word.isascii():  # _is_qid, without a call per line
                return word
        return line[:first]

    def _new_envelope(self, head: str) -> _Envelope | Record | None:
        """``_envelope`` of a head not seen yet, remembered when it may repeat."""
        envelope = self._envelope(head)
        if envelope is not None and not head[:1].isdigit():  # RFC 3339 stamps carry fractions: never repeated
            if len(self._envelopes) >= _CACHE_LIMIT:
                self._envelopes.clear()
            self._envelopes[head] = envelope
        return envelope

    def _envelope(self, head: str) -> _Envelope | Record | None:
        """(timestamp, origin) of ``<timestamp> <host> <program>[<pid>]``; a marker for foreign or
        malformed programs; None when ``head`` is no envelope at all (maybe a bare message)."""
        space = head.rfind(" ")
        tag = head[space + 1:]
        origin = self._origins.get(tag, _MISS)
        if origin is _MISS:
            origin = _origin(tag)
            if len(self._origins) >= _CACHE_LIMIT:
                self._origins.clear()
            self._origins[tag] = origin
        if space < 0:  # the program alone (pasted logs), else a bare message such as "<qid>: to=…"
            return (None, *origin) if type(origin) is tuple else None  # type: ignore[misc]
        timestamp = self._bsd_cache.get(head[:16], _MISS) if space > 16 else _MISS
        if timestamp is _MISS:
            timestamp = self._timestamp(head, space)
        if timestamp is _MISS:
            return None
        if timestamp is _NO_STAMP:
            if type(origin) is not tuple:  # free text that happens to have a colon: not an envelope
                return None
            timestamp = None
        if origin is None:
            return IGNORED_FOREIGN
        if origin is False:
            return UNPARSED_ENVELOPE
        return (timestamp, *origin)  # type: ignore[misc, return-value]

    # -- timestamps -------------------------------------------------------------------------

    def _timestamp(self, head: str, space: int) -> float | object | None:
        """The timestamp of ``<timestamp> [<host>] <tag>`` (``head``; ``space`` precedes the tag),
        _NO_STAMP for a single prefix word without timestamp (a container name), _MISS otherwise."""
        first = head.find(" ")
        if head[:1].isdigit():
            if 0 < first < space - 1 or first == space:  # with or without a host
                timestamp = self._rfc3339(head[:first])
                if timestamp is not _MISS:
                    return timestamp
        elif head[15:16] == " " and space > 16:
            timestamp = self._bsd(head[:3], head[4:6], head[7:15]) if head[3] == " " == head[6] else _MISS
            if timestamp is not _MISS:
                if len(self._bsd_cache) >= _CACHE_LIMIT:
                    self._bsd_cache.clear()
                self._bsd_cache[head[:16]] = timestamp  # type: ignore[assignment]
                return timestamp
        # The rare forms, tried only when the usual one failed: localized month names (not always
        # three characters: split on spaces), no host name (logs collected or pasted without
        # it), or one word such as a container name and no timestamp at all.
        words = head[:space].split(None, 3)
        if len(words) == 4 or len(words) == 3:
            return self._bsd(*words[:3])
        return _NO_STAMP if first == space else _MISS

    def _bsd(self, month_name: str, day_text: str, clock_text: str) -> float | object | None:
        """BSD timestamp parts -> epoch; None for an unknown (localized) month; _MISS if malformed."""
        day_text = day_text.lstrip(" ")
        hms = _clock_parts(clock_text)
        if hms is None or not (day_text.isdigit() and day_text.isascii()) or not 1 <= int(day_text) <= 31:
            return _MISS
        month = _MONTHS.get(month_name)
        if month is None:
            return None
        return self._place_in_year(month, int(day_text), *hms)

    def _place_in_year(self, month: int, day: int, hour: int, minute: int, second: int) -> float:
        """Local time without a year: the latest year that puts it at most a day after the clock
        (so December lines read in January land in the previous year)."""
        reference = self._clock()
        year = time.localtime(reference).tm_year
        for candidate in (year + 1, year, year - 1):
            epoch = time.mktime((candidate, month, day, hour, minute, second, 0, 0, -1))
            if epoch <= reference + _DAY:
                return epoch
        return epoch

    def _rfc3339(self, stamp: str) -> float | object:
        """``2025-04-09T08:25:46[.ffffff](Z|±hh:mm|±hhmm)`` -> epoch; naive stamps are local time."""
        if len(stamp) < 19 or stamp[10] != "T":
            return _MISS
        if stamp[-1] in "Zz":
            zone, fraction = "Z", stamp[19:-1]
        elif len(stamp) >= 25 and stamp[-6] in "+-" and stamp[-3] == ":":
            zone, fraction = stamp[-6:], stamp[19:-6]
        elif len(stamp) >= 24 and stamp[-5] in "+-":
            zone, fraction = stamp[-5:], stamp[19:-5]
        else:
            zone, fraction = "", stamp[19:]
        key = (stamp[:19], zone)
        base = self._rfc_cache.get(key)
        if base is None:
            base = _rfc_base(stamp[:19], zone)
            if base is None:
                return _MISS
            if len(self._rfc_cache) >= _CACHE_LIMIT:
                self._rfc_cache.clear()
            self._rfc_cache[key] = base
        if not fraction:
            return base
        if fraction[0] != "." or not fraction[1:].isdigit() or not fraction.isascii():
            return _MISS
        return base + float(fraction)

    @staticmethod
    def _bare(line: str) -> Record:
        """A message without envelope (journald MESSAGE, grok fixtures): known shapes only."""
        line = line.rstrip("\r\n")
        record = _message(line, 0, None, None, None, "")
        if record is IGNORED_POSTFIX:
            qid = line.partition(": ")[0]
            # Without an envelope only a queue id (which always has a digit), NOQUEUE (smtpd
            # rejects before a queue file exists) or a TLS handshake marks free text as Postfix's.
            if not (_is_qid(qid) and any(c.isdigit() for c in qid)) and qid != "NOQUEUE" \
                    and " TLS connection established " not in line:
                return UNPARSED_ENVELOPE
        return record


def _rfc_base(seconds: str, zone: str) -> float | None:
    """Epoch of ``YYYY-MM-DDTHH:MM:SS`` in ``zone`` (empty: local time), None if malformed."""
    date = seconds[:10]
    hms = _clock_parts(seconds[11:])
    y, mo, d = date[:4], date[5:7], date[8:10]
    if (hms is None or date[4] != "-" or date[7] != "-" or not date.isascii()
            or not (y.isdigit() and mo.isdigit() and d.isdigit())):
        return None
    year, month, day = int(y), int(mo), int(d)
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    if not zone:
        return time.mktime((year, month, day, *hms, 0, 0, -1))
    offset = 0
    if zone != "Z":
        digits = zone[1:].replace(":", "")
        if len(digits) != 4 or not digits.isdigit() or not digits.isascii():
            return None
        offset = (int(digits[:2]) * 60 + int(digits[2:])) * 60
        if zone[0] == "-":
            offset = -offset
    return calendar.timegm((year, month, day, *hms, 0, 0, 0)) - offset


# -- messages ------------------------------------------------------------------------------

#: Valid ``status=`` words -> (status, probe, soft_bounce) of the record.
_OUTCOMES: dict[str, tuple[str, bool, bool]] = {
    **{status: (status, status in PROBE_STATUSES, False) for status in DELIVERY_STATUSES},
    SOFTBOUNCE: ("deferred", False, True),
}
# A delivery status line in the field order every Postfix version writes (orig_to and conn_use
# optional): one match instead of a dozen string operations, and the same values as the general
# path (``_delivery``) by construction. The first ", status=" after the recipient is the
# one matched, because no captured value may contain a comma; a line in any other shape (fields
# added, repeated or reordered, a comma in orig_to, to= without brackets) takes the general path.
_DELIVERY_LINE = re.compile(
    r"to=<([^>]*)>, (?:orig_to=<([^>,]*)>, )?relay=([^,]*), (?:conn_use=([0-9]+), )?delay=([^,]*), "
    r"delays=([^,]*), dsn=([^,]*), status=([^ ]*) ?(.*)", re.DOTALL)
# qmgr's "from=<s>, size=N, nrcpt=N (queue active)"; anything else takes the general path.
_QUEUED_LINE = re.compile(r"from=<([^>]*)>, size=([0-9]+), nrcpt=([0-9]+)(?: |\Z)")


def parse_message(message: str, timestamp: float | None, origin: _Origin) -> Record:
    """The part after ``program[pid]: ``; ``origin`` is (instance, service, program)."""
    instance, service, program = origin
    return _message(message, 0, timestamp, instance, service, program)


def _message(line: str, start: int, timestamp: float | None, instance: str | None, service: str | None,
             program: str) -> Record:
    """``parse_message`` of ``line[start:]``, read in place: delivery lines are most lines, and
    copying their long reply text twice over cost more than reading it."""
    end = line.find(": ", start)
    if end < 0:
        return IGNORED_POSTFIX
    qid = line[start:end]
    if not (5 <= len(qid) <= 32 and qid.isalnum() and qid.isascii()):  # _is_qid, without a call per line
        return IGNORED_POSTFIX
    at = end + 2
    kind = line[at:at + 3]
    if kind == "to=":
        match = _DELIVERY_LINE.match(line, at)
        if match is None:
            return _delivery(timestamp, instance, service, program, qid, line[at:])
        to, orig_to, relay, conn_use, delay, delays, dsn, status, text = match.groups()
        outcome = _outcome(status, text)
        if outcome is None:
            return UNPARSED_MESSAGE
        status, probe, soft_bounce, text = outcome
        return _delivery_record(timestamp, instance, service, program, qid, to, orig_to, relay,
                                int(conn_use) if conn_use else None, _number(delay), delays, None, dsn,
                                status, text, probe, soft_bounce)
    if kind == "fro" and line.startswith("from=<", at):
        match = _QUEUED_LINE.match(line, at)
        if match is None:
            return _qmgr_from(timestamp, instance, service, program, qid, line[at:])
        sender, size, nrcpt = match.groups()
        return _queued(timestamp, instance, service, program, qid, sender, int(size), int(nrcpt))
    # smtpd/qmqpd "client=…", pickup "uid=… from=<…>" (older: "sender=…"): mail from outside.
    if (kind == "cli" and line.startswith("client=", at)) or (kind == "uid" and line[at + 3:at + 4] == "=") or (
            kind == "sen" and line.startswith("sender=", at)):
        return _submitted(timestamp, instance, service, program, qid)
    if kind == "rem" and line[at:] == "removed":
        return _removed(timestamp, instance, service, program, qid)
    notice_end = line.find(" notification: ", at)
    if notice_end > at:
        new_qid = line[notice_end + 15:]
        if not _is_qid(new_qid):
            return UNPARSED_MESSAGE
        return _bounce_notice(timestamp, instance, service, program, qid, line[at:notice_end + 13], new_qid)
    return IGNORED_POSTFIX


def _delivery(timestamp: float | None, instance: str | None, service: str | None, program: str, qid: str,
              rest: str) -> Record:
    """``to=<a>, [orig_to=<b>, ]relay=…, [conn_use=…, ]delay=…, delays=…, [tls=…, ]dsn=…, status=… (…)``.

    The general path, for lines ``_DELIVERY_LINE`` does not match: tokens are matched by key, not
    position, so fields added by later Postfix versions pass.
    """
    if rest[3:4] == "<":
        to_end = rest.find(">", 4)
        if to_end < 0:
            return UNPARSED_MESSAGE
        to = rest[4:to_end]
        pos = to_end + 1
    else:
        pos = rest.find(",", 3)
        if pos < 0:
            return UNPARSED_MESSAGE
        to = rest[3:pos]
    status_at = rest.find(", status=", pos)
    if status_at < 0:
        return UNPARSED_MESSAGE
    status, _, text = rest[status_at + 9:].partition(" ")
    outcome = _outcome(status, text)
    if outcome is None:
        return UNPARSED_MESSAGE
    status, probe, soft_bounce, text = outcome
    orig_to = relay = delays = tls = dsn = None
    conn_use: int | None = None
    delay: float | None = None
    for token in rest[pos + 2:status_at].split(", "):
        key, _, value = token.partition("=")
        if key == "relay":
            relay = value
        elif key == "delay":
            delay = _number(value)
        elif key == "dsn":
            dsn = value
        elif key == "delays":
            delays = value
        elif key == "tls":
            tls = value
        elif key == "orig_to":
            orig_to = value[1:-1] if value[:1] == "<" and value[-1:] == ">" else value
        elif key == "conn_use" and value.isdigit():
            conn_use = int(value)
    return _delivery_record(timestamp, instance, service, program, qid, to, orig_to, relay, conn_use, delay, delays,
                            tls, dsn, status, text, probe, soft_bounce)


def _outcome(status: str, text: str) -> tuple[str, bool, bool, str] | None:
    """(status, probe, soft_bounce, reply without its parentheses) of a ``status=`` word and what
    follows it; None for a word that is no delivery status."""
    outcome = _OUTCOMES.get(status)
    if outcome is None:
        return None
    if text[:1] == "(":
        text = text[1:-1] if text[-1:] == ")" else text[1:]
    return (*outcome, text)


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _qmgr_from(timestamp: float | None, instance: str | None, service: str | None, program: str, qid: str,
               rest: str) -> Record:
    """``from=<s>, size=N, nrcpt=N (queue active)`` or ``from=<s>, status=[force-]expired, returned …``."""
    sender_end = rest.find(">, ", 6)
    if sender_end < 0:
        return UNPARSED_MESSAGE
    sender = rest[6:sender_end]
    tail = rest[sender_end + 3:]
    if tail[:5] == "size=":
        size_text, _, nrcpt_text = tail[5:].partition(", nrcpt=")
        nrcpt_text = nrcpt_text.partition(" ")[0]
        if not (size_text.isdigit() and nrcpt_text.isdigit()):
            return UNPARSED_MESSAGE
        return _queued(timestamp, instance, service, program, qid, sender, int(size_text), int(nrcpt_text))
    if tail[:15] == "status=expired,":
        return _expired(timestamp, instance, service, program, qid, sender, False)
    if tail[:21] == "status=force-expired,":
        return _expired(timestamp, instance, service, program, qid, sender, True)
    return UNPARSED_MESSAGE

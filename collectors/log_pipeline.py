"""Mail log lines to accounting events, MTA-neutral: the part a tailing collector and ``analyze`` share.

An MTA contributes a :class:`LogFormat`: a line parser (layer 1: a line in, a typed record or an
``Ignored``/``Unparsed`` marker out, never an exception) and an adapter that turns its records
into the events of ``delivery_accounting`` (layer 2). :class:`LogProcessor` runs lines through
both and counts them per source as parsed, ignored or unparsed. :class:`LogSplit` shares a log
between several processors by queue id (each one a :class:`LogPart`), for reading large files on
several cores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import compress
from typing import Any, Protocol, runtime_checkable

from collectors.base import Clock
from collectors.classify import Classifier
from collectors.delivery_accounting import DEFAULT_MAX_MESSAGES, AccountingSnapshot, InstanceAccounts

log = logging.getLogger("mtaq.log")

LINE_RESULTS = ("parsed", "ignored", "unparsed")


@dataclass(frozen=True, slots=True)
class Unparsed:
    """A line that is not a well-formed log line (``why`` says which part failed)."""

    why: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed line with nothing to account: a ``foreign`` program, or the MTA's own chatter."""

    what: str


class LineParser(Protocol):
    """Layer 1 of an MTA's log: one line in, one record (or marker) out, never an exception."""

    def parse(self, line: str) -> object:
        """The record of ``line``, ``Ignored`` or ``Unparsed``."""
        ...


@runtime_checkable
class RoutingParser(LineParser, Protocol):
    """A parser that can also tell, cheaply, which message's accounting a line changes."""

    def route(self, line: str) -> str:
        """The queue id whose accounting ``line`` changes ("" for none)."""
        ...


#: record type -> the function that turns such a record into accounting events.
EventHandlers = Mapping[type, Callable[[Any], None]]


@dataclass(frozen=True)
class LogFormat:
    """An MTA's mail log: the ``mta`` label, the instance of records that name none, a parser
    factory (given the reference clock that dates year-less timestamps) and an adapter factory."""

    mta: str
    default_instance: str
    parser: Callable[[Clock], LineParser]
    events: Callable[[InstanceAccounts], EventHandlers]


class LogProcessor:
    """Lines in: parsed, accounted per MTA instance, and counted per source and result.

    Feed it from one thread at a time (parser caches are not shared-safe); read
    ``line_counts()`` and ``snapshots()`` from any thread. ``serial``: the place in the whole log
    of the line being processed, when it is a :class:`LogPart` (``LogPart.serial``).
    """

    def __init__(self, log_format: LogFormat, classifier: Classifier, *, clock: Clock = time.time,
                 max_tracked_messages: int = DEFAULT_MAX_MESSAGES, instances: Iterable[str] = (),
                 serial: Callable[[], int] | None = None) -> None:
        self.format = log_format
        self.parser = log_format.parser(clock)
        self.accounts = InstanceAccounts(classifier, log_format.default_instance, clock=clock,
                                         max_messages=max_tracked_messages, preset=instances, serial=serial)
        self._handlers = log_format.events(self.accounts)
        self._counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._failed_kinds: set[type] = set()

    def process_lines(self, source: str, lines: Iterable[str]) -> None:
        """Parse and account ``lines`` (decoded text, with or without newlines) from ``source``."""
        parse = self.parser.parse
        handlers = self._handlers
        parsed = ignored = unparsed = 0
        for line in lines:
            record = parse(line)
            # Most lines are records with a handler: look the handler up first, sort out the rest after.
            handler = handlers.get(type(record))
            if handler is None:
                kind = type(record)
                if kind is Ignored:
                    ignored += 1
                elif kind is Unparsed:
                    unparsed += 1
                else:
                    parsed += 1
                continue
            parsed += 1
            try:
                handler(record)
            except Exception:  # an accounting bug must cost one record, not the batch
                self._report_failure(type(record))
        with self._lock:
            counts = self._counts.setdefault(source, dict.fromkeys(LINE_RESULTS, 0))
            counts["parsed"] += parsed
            counts["ignored"] += ignored
            counts["unparsed"] += unparsed

    def _report_failure(self, kind: type) -> None:
        if kind not in self._failed_kinds:  # once per kind: a systematic bug must not flood the log
            self._failed_kinds.add(kind)
            log.exception("accounting a %s record failed; such records are skipped", kind.__name__)

    def line_counts(self) -> dict[str, dict[str, int]]:
        """Lines per source and result (``parsed``, ``ignored``, ``unparsed``), copied."""
        with self._lock:
            return {source: dict(counts) for source, counts in self._counts.items()}

    def snapshots(self) -> Mapping[str, AccountingSnapshot]:
        """Each MTA instance's accounting snapshot, by ``mta_instance``."""
        return self.accounts.snapshots()


class LogSplit:
    """Shares a log's lines between parts by queue id (``RoutingParser.route``), so that each part's
    accounting sees every line of its messages and their snapshots add up to one reader's
    (``delivery_accounting.merge_parts``). ``weights``: each part's relative share of queue ids (a
    part that also reads the files takes fewer). Lines without a queue id go by their first word.

    Only the process that splits routes: the parts need not agree on anything (not even Python's
    string hash), they get their lines and each line's place in the whole log (``LogPart.feed``).
    """

    def __init__(self, parser: RoutingParser, weights: Sequence[int]) -> None:
        if not 0 < len(weights) < 256 or min(weights) < 1:
            raise ValueError(f"1 to 255 parts, each of weight 1 or more, not {list(weights)}")
        self._route = parser.route
        # part -> a byte translation table that turns a line's owner into 1 for that part, else 0.
        self._selects = [bytes(int(owner == part) for owner in range(256)) for part in range(len(weights))]
        # hash slot -> part: a part of weight w owns w slots.
        self._owners = [part for part, weight in enumerate(weights) for _ in range(weight)]
        self._seen = 0  # lines of the log before the next batch

    def split(self, lines: list[str]) -> list[tuple[list[str], list[int]]]:
        """Each part's lines of the next batch of the log, with their places in the whole log."""
        owners, slots = self._owners, len(self._owners)
        owner = bytes([owners[hash(key) % slots] for key in map(self._route, lines)])
        places = range(self._seen, self._seen + len(lines))
        self._seen += len(lines)
        shares = []
        for select in self._selects:  # the rest of the per-line work in C: translate() and compress()
            mask = owner.translate(select)
            shares.append((list(compress(lines, mask)), list(compress(places, mask))))
        return shares


class LogPart:
    """One part of a log split by ``LogSplit``: wrap the format with ``format()``, give ``serial``
    to the processor, and hand the processor ``feed(lines, places)`` of each of its shares, in order.
    """

    def __init__(self) -> None:
        self._places: list[int] = []  # where in the whole log each line of the current share is
        self._parsed = 0  # lines the processor has parsed so far
        self._share_start = 0  # the same, when the current share began

    def format(self, log_format: LogFormat) -> LogFormat:
        """``log_format`` whose parser counts its lines for ``serial``."""
        return replace(log_format, parser=lambda clock: _CountingParser(log_format.parser(clock), self))

    def feed(self, lines: list[str], places: list[int]) -> list[str]:
        """``lines``, the next share of this part, remembering their ``places`` in the whole log."""
        self._places = places
        self._share_start = self._parsed
        return lines

    def serial(self) -> int:
        """The place in the whole log of the line being processed."""
        return self._places[self._parsed - 1 - self._share_start]


class _CountingParser:
    """A parser that counts its lines into its ``LogPart``."""

    def __init__(self, inner: LineParser, part: LogPart) -> None:
        self._parse = inner.parse
        self._part = part

    def parse(self, line: str) -> object:
        self._part._parsed += 1
        return self._parse(line)

"""Mail log lines to accounting events, MTA-neutral: the part a tailing collector and ``analyze`` share.

An MTA contributes a :class:`LogFormat`: a line parser (layer 1: a line in, a typed record or an
``Ignored``/``Unparsed`` marker out, never an exception) and an adapter that turns its records
into the events of ``delivery_accounting`` (layer 2). :class:`LogProcessor` runs lines through
both and counts them per source as parsed, ignored or unparsed. :class:`LogPart` splits a log
between several processors by queue id, for reading large files on several cores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
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
    of the line being processed, when a :class:`LogPart` feeds it (``LogPart.serial``).
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


class LogPart:
    """Part ``index`` of ``parts`` that read the same log side by side, each accounting the
    messages whose queue id hashes to it (``RoutingParser.route``), so that their snapshots add up
    to one reader's (``delivery_accounting.merge_parts``). Lines without a queue id go to part 0.

    Wrap the format with ``format()``, give ``serial`` to the processor, and hand the processor
    ``take(lines)`` of every batch of the log, in order. Parts must share Python's string hash:
    run them in processes forked from one parent.
    """

    def __init__(self, index: int, parts: int) -> None:
        self.index = index
        self.parts = parts
        self._route: Callable[[str], str] | None = None
        self._seen = 0  # lines of the log before the current batch
        self._batch = 0  # lines in the current batch
        self._taken: list[int] = []  # where in the current batch each line this part took is
        self._parsed = 0  # lines the processor has parsed so far
        self._batch_start = 0  # the same, when the current batch began

    def format(self, log_format: LogFormat) -> LogFormat:
        """``log_format`` whose parser routes lines for ``take`` and counts them for ``serial``."""

        def parser(clock: Clock) -> LineParser:
            inner = log_format.parser(clock)
            if not isinstance(inner, RoutingParser):
                raise TypeError(f"the {log_format.mta} log parser cannot route lines by queue id")
            self._route = inner.route
            return _CountingParser(inner, self)

        return replace(log_format, parser=parser)

    def take(self, lines: list[str]) -> list[str]:
        """This part's lines of the next batch of the log."""
        if self._route is None:
            raise RuntimeError("LogPart.take before a processor was made with LogPart.format")
        parts, index = self.parts, self.index
        taken = [at for at, key in enumerate(map(self._route, lines)) if hash(key) % parts == index]
        self._seen += self._batch
        self._batch = len(lines)
        self._taken = taken
        self._batch_start = self._parsed
        return [lines[at] for at in taken]

    def serial(self) -> int:
        """The place in the whole log of the line being processed."""
        return self._seen + self._taken[self._parsed - 1 - self._batch_start]


class _CountingParser:
    """A parser that counts its lines into its ``LogPart``."""

    def __init__(self, inner: LineParser, part: LogPart) -> None:
        self._parse = inner.parse
        self._part = part

    def parse(self, line: str) -> object:
        self._part._parsed += 1
        return self._parse(line)

"""Mail log lines to accounting events, MTA-neutral: the part a tailing collector and ``analyze`` share.

An MTA contributes a :class:`LogFormat`: a line parser (layer 1: a line in, a typed record or an
``Ignored``/``Unparsed`` marker out, never an exception) and an adapter that turns its records
into the events of ``delivery_accounting`` (layer 2). :class:`LogProcessor` runs lines through
both and counts them per source as parsed, ignored or unparsed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from collectors.base import Clock
from collectors.classify import Classifier
from collectors.delivery_accounting import DEFAULT_MAX_MESSAGES, InstanceAccounts

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
    ``line_counts()`` and ``accounts.snapshots()`` from any thread.
    """

    def __init__(self, log_format: LogFormat, classifier: Classifier, *, clock: Clock = time.time,
                 max_tracked_messages: int = DEFAULT_MAX_MESSAGES, instances: Iterable[str] = ()) -> None:
        self.format = log_format
        self.parser = log_format.parser(clock)
        self.accounts = InstanceAccounts(classifier, log_format.default_instance, clock=clock,
                                         max_messages=max_tracked_messages, preset=instances)
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
            kind = type(record)
            if kind is Ignored:
                ignored += 1
            elif kind is Unparsed:
                unparsed += 1
            else:
                parsed += 1
                handler = handlers.get(kind)
                if handler is not None:
                    try:
                        handler(record)
                    except Exception:  # an accounting bug must cost one record, not the batch
                        self._report_failure(kind)
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

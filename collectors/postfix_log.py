"""Postfix log collector: tails the mail log and accounts every delivery it reports.

The three layers meet here: a ``Tailer`` hands raw lines to ``PostfixLogProcessor`` (parse with
``postfix_log_parse``, account with ``delivery_accounting``, count lines per source and result),
and ``families()`` renders the latest snapshot with ``log_metrics``. The processor also serves
offline readers (``analyze``, ``bench/log_bench.py``) without any tailing.

Sample output::

    mtaq_messages_received_total{lane="normal"} 1520.0
    mtaq_delivery_attempts_total{lane="normal",provider="google",status="sent"} 1410.0
    mtaq_deferrals_total{provider="google",reason="rate_limited"} 37.0
    mtaq_dead_letters_total{lane="normal",provider="yahoo",reason="rate_limited"} 2.0
    mtaq_log_lines_total{result="parsed",source="/var/log/mail.log"} 10873.0
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol

from prometheus_client.metrics_core import Metric

from collectors.base import BaseCollector, Clock
from collectors.classify import Classifier, relay_host
from collectors.delivery_accounting import (
    DEFAULT_MAX_MESSAGES,
    AccountingSnapshot,
    DeliveryAccounting,
)
from collectors.log_metrics import LabelSets, LogSourceStats, log_families
from collectors.postfix_log_parse import (
    Delivery,
    Expired,
    Ignored,
    MessageQueued,
    PostfixLineParser,
    Removed,
    Unparsed,
)
from collectors.tailer import SourceStats, Tailer

log = logging.getLogger("mtaq.postfix_log")


class TailerLike(Protocol):
    """What the collector needs from ``collectors.tailer.Tailer`` (tests pass a fake)."""

    stats: Mapping[str, SourceStats]

    def start(self) -> None: ...

    def stop(self) -> None: ...


TailerFactory = Callable[..., TailerLike]


class PostfixLogProcessor:
    """Lines in: parsed, accounted, and counted per source as parsed/ignored/unparsed.

    Feed it from one thread at a time (the parser's caches are not shared-safe); read
    ``line_counts()`` and ``accounting.snapshot()`` from any thread.
    """

    def __init__(self, classifier: Classifier, *, clock: Clock = time.time,
                 max_tracked_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        self.parser = PostfixLineParser(clock)
        self.accounting = DeliveryAccounting(classifier, clock=clock, max_messages=max_tracked_messages)
        self._counts: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._failed_kinds: set[type] = set()
        self._handlers: dict[type, Callable[[Any], None]] = {
            MessageQueued: self._queued,
            Delivery: self._delivery,
            Expired: self._expired,
            Removed: self._removed,
        }

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
            counts = self._counts.setdefault(source, {"parsed": 0, "ignored": 0, "unparsed": 0})
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

    # Positional calls: this runs for every record, and keywords cost measurably more.

    def _queued(self, record: MessageQueued) -> None:
        self.accounting.received(record.qid, record.sender, record.timestamp, record.instance)

    def _delivery(self, record: Delivery) -> None:
        if record.probe:
            self.accounting.probe(record.status)
            return
        self.accounting.delivery(
            record.qid, record.to, record.status, record.timestamp, relay_host(record.relay, record.text),
            record.dsn, record.text, record.delay, record.instance, record.service)

    def _expired(self, record: Expired) -> None:
        self.accounting.expired(record.qid, record.sender, record.timestamp, record.forced, record.instance)

    def _removed(self, record: Removed) -> None:
        self.accounting.removed(record.qid)


class PostfixLogCollector(BaseCollector):
    """Follows Postfix mail logs in the background; scrapes render the accumulated counters."""

    id = "postfix_log"
    interval = None

    def __init__(self, paths: list[str], classifier: Classifier, *, checkpoint_path: str | None,
                 start_at: Literal["end", "start"] = "end", clock: Clock = time.time,
                 tailer_factory: TailerFactory = Tailer, poll_interval: float = 0.25,
                 max_tracked_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        super().__init__(clock)
        self._paths = list(paths)
        self._label_sets = LabelSets.of(classifier)
        self._processor = PostfixLogProcessor(classifier, clock=clock, max_tracked_messages=max_tracked_messages)
        self._last_read: dict[str, float] = {}
        self._tailer = tailer_factory(self._paths, self._sink, checkpoint_path=checkpoint_path,
                                      start_at=start_at, clock=clock, poll_interval=poll_interval)

    def start(self) -> None:
        """Start tailing."""
        self._tailer.start()

    def stop(self) -> None:
        """Stop tailing (the tailer writes its final checkpoint)."""
        self._tailer.stop()

    def _sink(self, source: str, lines: list[bytes]) -> None:
        # Lines never contain b"\n" and UTF-8 decoding cannot swallow one, so decoding the
        # batch at once keeps line boundaries and is much cheaper than decoding line by line.
        if lines:
            self.process_lines(source, b"\n".join(lines).decode("utf-8", "replace").split("\n"))

    def process_lines(self, source: str, lines: Iterable[str]) -> None:
        """Account decoded ``lines`` from ``source`` (the tailer's sink; also usable offline)."""
        self._processor.process_lines(source, lines)
        self._last_read[source] = self.clock()
        self._update_health()

    def snapshot(self) -> AccountingSnapshot:
        """The accounting state now (dead-letter log and reason samples included), for the APIs."""
        return self._processor.accounting.snapshot()

    def families(self) -> Iterable[Metric]:
        """Render the delivery counters and per-source line statistics."""
        self._update_health()
        return log_families(self.snapshot(), self._source_stats(), self._label_sets)

    def _source_stats(self) -> dict[str, LogSourceStats]:
        counts = self._processor.line_counts()
        tailed = self._tailer.stats
        stats = {}
        for source in dict.fromkeys([*self._paths, *counts]):
            tail = tailed.get(source)
            last = tail.last_line_time if tail is not None else None
            stats[source] = LogSourceStats(
                lines=counts.get(source, {}),
                reopens=tail.reopens if tail is not None else 0,
                last_line_time=last if last is not None else self._last_read.get(source),
            )
        return stats

    def _update_health(self) -> None:
        errors = [f"{source}: {stats.last_error}" for source, stats in self._tailer.stats.items()
                  if stats.last_error]
        if not errors:
            self.record_success()
            return
        message = "; ".join(errors)
        if self.health.success or message != self.health.last_error:
            self.record_failure(message)

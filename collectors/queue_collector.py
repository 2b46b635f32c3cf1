"""The MTA-neutral queue collector: queue readers in, per-instance queue gauges out.

An MTA contributes one :class:`QueueReader` per instance (Postfix: showq or ``postqueue -j``); the
collector scans each in the background every ``interval`` seconds, folds the messages into a
``QueueSnapshot`` per instance and renders the last complete snapshot of each on a scrape. A
failed read, or one that does not finish within ``read_timeout``, turns that instance's
``mtaq_up`` to 0 and keeps its last good snapshot visible: never partial totals. Records with a
queue name the MTA does not have, or a non-finite number, are counted apart
(``mtaq_queue_skipped_messages``), never made labels or totals. A reader that can rescan
incrementally (an :class:`IncrementalQueueReader`, such as Postfix's ``spool`` source) updates a
``QueueLedger`` kept for its instance instead, and its snapshot comes from the ledger.

Sample output::

    mtaq_up{mta="postfix",mta_instance="postfix"} 1.0
    mtaq_queue_messages{lane="normal",mta="postfix",mta_instance="postfix",queue="deferred"} 2.0
    mtaq_queue_oldest_message_timestamp_seconds{lane="normal",mta="postfix",mta_instance="postfix",queue="deferred"} 1.7958e+09
    mtaq_queue_deferred_recipients{mta="postfix",mta_instance="postfix",provider="google",reason="rate_limited"} 2.0
"""  # noqa: E501 - sample exposition lines are kept whole

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol, runtime_checkable

from prometheus_client.metrics_core import Metric

from collectors import families as F
from collectors.base import BaseCollector, Clock
from collectors.classify import Classifier
from collectors.deadline import Deadline, ReadCancelled, ReadTimeout
from collectors.queue_model import UNDECODABLE_REASON, QueueLedger, QueueMessage, QueueSnapshot, QueueTally

#: Share of the scan interval a read may take by default (``read_timeout``).
READ_TIMEOUT_SHARE = 0.8
#: A full read that runs out of time may take twice as long the next time, up to this many scan
#: intervals: a queue grown past what one interval can list (showq of a million messages) is then
#: read less often instead of never (the scheduler skips the runs a long read overlaps).
MAX_READ_TIMEOUT_INTERVALS = 10
SKIP_REASONS = ("unknown_queue", "bad_value", UNDECODABLE_REASON)


class QueueReader(Protocol):
    """One MTA instance's queue: ``name`` is its ``mta_instance`` label (and the lane rules'
    ``instance``); ``source_info`` is (kind, path) of where the last read came from."""

    name: str
    source_info: tuple[str, str]

    def source(self) -> str:
        """Where the queue is read from, for the start-up log and the status page."""
        ...

    def read(self, deadline: Deadline) -> Iterator[QueueMessage]:
        """Every queued message; raises when the queue cannot be read completely in time."""
        ...

    def preflight(self) -> list[str]:
        """Problems with where it reads from, for ``check-config``."""
        ...


@runtime_checkable
class IncrementalQueueReader(QueueReader, Protocol):
    """A queue reader that remembers what it read: ``scan()`` brings ``ledger`` up to date with the
    queue, re-reading only what changed since the last scan. A scan cut short (deadline, error)
    leaves the ledger consistent with what it did see, and the next scan completes it. ``close()``
    ends what it keeps between scans; a later scan starts it again."""

    def scan(self, deadline: Deadline, ledger: QueueLedger) -> None:
        """Apply every change of the queue since the last scan to ``ledger``; raise when the
        queue cannot be scanned completely in time."""
        ...

    def close(self) -> None:
        """Release what tracks changes between scans (threads, watches)."""
        ...


def _skip_reason(message: QueueMessage, queues: frozenset[str]) -> str | None:
    """Why a record must stay out of the totals: a queue name that is not a label value, or a
    number no real queue file has."""
    if message.queue not in queues:
        return "unknown_queue"
    if not (math.isfinite(message.arrival) and message.size >= 0):
        return "bad_value"
    return None


class QueueCollector(BaseCollector):
    """Scans each instance's queue every ``interval`` seconds; scrapes see the last scans."""

    def __init__(self, collector_id: str, mta: str, readers: Sequence[QueueReader], classifier: Classifier,
                 queues: Iterable[str], *, interval: float = 30.0, read_timeout: float | None = None,
                 clock: Clock = time.time, deferred_queue: str = QueueTally.DEFERRED_QUEUE) -> None:
        super().__init__(collector_id, clock)
        self.mta = mta
        self.readers = tuple(readers)
        self.interval = interval
        # A read must end well before the next is due, so that scans never pile up.
        self.read_timeout = read_timeout or READ_TIMEOUT_SHARE * interval
        self.tally = QueueTally(classifier, queues, deferred_queue)
        self._queues = frozenset(queues)
        self._snapshots: dict[str, QueueSnapshot] = {}
        self._skipped: dict[str, dict[str, int]] = {}
        self._ledgers = {r.name: QueueLedger(self.tally, r.name) for r in self.readers
                         if isinstance(r, IncrementalQueueReader)}
        self._up: dict[str, bool] = dict.fromkeys((r.name for r in self.readers), False)
        self._longer: dict[str, float] = {}  # instance -> the read time allowed after a timeout
        self._stop = threading.Event()

    def describe(self) -> tuple[F.Family, ...]:
        """The queue families of the catalogue."""
        return F.QUEUE

    def sources(self) -> list[str]:
        """One phrase per instance."""
        return [f"{self.mta} instance {r.name}: {r.source()}" for r in self.readers]

    def preflight(self) -> list[str]:
        """Each reader's problems."""
        return [problem for r in self.readers for problem in r.preflight()]

    def refresh(self) -> None:
        """Scan every instance; a failed or late one keeps its previous snapshot and reports down."""
        errors = []
        for reader in self.readers:
            start = time.monotonic()
            try:
                allowed = self._longer.get(reader.name, self.read_timeout)
                snapshot, skipped = self._read(reader, Deadline(allowed, self._stop))
            except ReadCancelled:
                raise
            except ReadTimeout as exc:
                self._up[reader.name] = False
                errors.append(f"{reader.name}: {exc}{self._allow_longer(reader)}")
                continue
            except Exception as exc:
                self._up[reader.name] = False
                errors.append(f"{reader.name}: {exc}")
                continue
            if time.monotonic() - start < self.read_timeout / 2:
                self._longer.pop(reader.name, None)  # the queue shrank: back to the usual time
            if skipped and skipped != self._skipped.get(reader.name):
                self.log.warning("%s: left out of the totals: %s", reader.name,
                                 ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items())))
            snapshot.duration_seconds = time.monotonic() - start
            snapshot.scanned_at = self.clock()
            self._snapshots[reader.name] = snapshot
            self._skipped[reader.name] = skipped
            self._up[reader.name] = True
        if errors:
            raise OSError("; ".join(errors))

    def _allow_longer(self, reader: QueueReader) -> str:
        """After a full read ran out of time, allow it twice as long (an incremental reader keeps
        what it read and carries on instead); the phrase that says so in the error."""
        if isinstance(reader, IncrementalQueueReader):
            return ""
        current = self._longer.get(reader.name, self.read_timeout)
        longer = min(2 * current, MAX_READ_TIMEOUT_INTERVALS * self.interval)
        if longer <= current:
            return ""
        self._longer[reader.name] = longer
        return f"; the next read may take {longer:g} s"

    def _read(self, reader: QueueReader, deadline: Deadline) -> tuple[QueueSnapshot, dict[str, int]]:
        """One complete read of ``reader``'s queue: its snapshot and what was left out of it."""
        ledger = self._ledgers.get(reader.name)
        if ledger is not None and isinstance(reader, IncrementalQueueReader):
            reader.scan(deadline, ledger)
            return ledger.snapshot(), ledger.skipped()
        snapshot = self.tally.new_snapshot()
        skipped: dict[str, int] = {}
        for message in reader.read(deadline):
            reason = _skip_reason(message, self._queues)
            if reason is None:
                self.tally.add(snapshot, message, reader.name)
            else:
                skipped[reason] = skipped.get(reason, 0) + 1
        return snapshot, skipped

    def stop(self) -> None:
        """Abandon a read in progress (shutdown never waits for a slow queue) and release what the
        incremental readers keep between scans."""
        self._stop.set()
        for reader in self.readers:
            if isinstance(reader, IncrementalQueueReader):
                reader.close()

    def snapshot(self, instance: str) -> QueueSnapshot | None:
        """The last complete scan of ``instance``."""
        return self._snapshots.get(instance)

    def families(self) -> Iterator[Metric]:
        """``mtaq_up`` per instance and the queue gauges of each instance's last complete scan."""
        up, messages, recipients, size, oldest = (F.UP.new(), F.QUEUE_MESSAGES.new(), F.QUEUE_RECIPIENTS.new(),
                                                  F.QUEUE_SIZE.new(), F.QUEUE_OLDEST.new())
        deferred, forced, duration, last = (F.QUEUE_DEFERRED.new(), F.QUEUE_FORCED_EXPIRE.new(),
                                            F.QUEUE_SCAN_DURATION.new(), F.QUEUE_LAST_SCAN.new())
        source, skipped = F.QUEUE_SOURCE.new(), F.QUEUE_SKIPPED.new()
        for reader in self.readers:
            labels = [self.mta, reader.name]
            up.add_metric(labels, 1 if self._up[reader.name] else 0)
            source.add_metric([*labels, *reader.source_info], 1)
            snapshot = self._snapshots.get(reader.name)
            if snapshot is None:
                continue
            for reason in SKIP_REASONS:
                skipped.add_metric([*labels, reason], self._skipped[reader.name].get(reason, 0))
            for (queue, lane), cell in sorted(snapshot.cells.items()):
                cell_labels = [*labels, queue, lane]
                messages.add_metric(cell_labels, cell.messages)
                recipients.add_metric(cell_labels, cell.recipients)
                size.add_metric(cell_labels, cell.size_bytes)
                if cell.oldest is not None:
                    oldest.add_metric(cell_labels, cell.oldest)
            for (provider, reason), count in sorted(snapshot.deferred.items()):
                deferred.add_metric([*labels, provider, reason], count)
            forced.add_metric(labels, snapshot.forced_expire)
            duration.add_metric(labels, snapshot.duration_seconds)
            last.add_metric(labels, snapshot.scanned_at)
        yield from (up, messages, recipients, size, oldest, deferred, forced, duration, last, source, skipped)

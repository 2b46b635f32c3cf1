"""MTA-agnostic queue accounting: queue records in, bounded per-lane/per-provider totals out.

The Postfix decoder (``showq``) and, later, the Exim spool reader both yield ``QueueMessage``
records; ``QueueTally`` folds a stream of them into a ``QueueSnapshot`` without keeping the
messages, so memory stays flat whatever the queue size. ``collectors/queue_collector.py`` renders
snapshots as metric families.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from collectors.classify import Classifier, domain_of, relay_host


@dataclass(frozen=True, slots=True)
class QueueRecipient:
    """One recipient of a queued message; ``reason`` is its last defer reason, if any."""

    address: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class QueueMessage:
    """One queued message as the MTA reports it (arrival time, never file mtime)."""

    queue: str
    queue_id: str
    arrival: float
    size: int
    sender: str
    recipients: tuple[QueueRecipient, ...]
    forced_expire: bool = False


@dataclass
class LaneTotals:
    """Totals of one (queue, lane) cell."""

    messages: int = 0
    recipients: int = 0
    size_bytes: int = 0
    oldest: float | None = None


@dataclass
class QueueSnapshot:
    """The result of one complete queue scan."""

    queues: tuple[str, ...]
    lanes: tuple[str, ...]
    cells: dict[tuple[str, str], LaneTotals] = field(default_factory=dict)
    deferred: dict[tuple[str, str], int] = field(default_factory=dict)
    forced_expire: int = 0
    scanned_at: float = 0.0
    duration_seconds: float = 0.0

    @property
    def total_messages(self) -> int:
        """All messages in every queue."""
        return sum(cell.messages for cell in self.cells.values())


class QueueTally:
    """Folds ``QueueMessage`` records into a ``QueueSnapshot``.

    A message's lane comes from its sender, the domain of its first recipient and the MTA
    instance; each recipient of the deferred queue that carries a defer reason counts once under
    the provider of its domain (or of the host named in the reason) and the reason's class, as
    qshape shows the deferred queue. Held messages keep their recipients' last defer reasons, but
    they wait for an operator, not for a retry: they show in ``queue="hold"`` only.
    """

    DEFERRED_QUEUE = "deferred"

    def __init__(self, classifier: Classifier, queues: Iterable[str]) -> None:
        self.classifier = classifier
        self.queues = tuple(queues)

    def new_snapshot(self) -> QueueSnapshot:
        """An empty snapshot with every known (queue, lane) cell present, so zeros are exported."""
        lanes = self.classifier.lane_names
        snapshot = QueueSnapshot(self.queues, lanes)
        for queue in self.queues:
            for lane in lanes:
                snapshot.cells[(queue, lane)] = LaneTotals()
        return snapshot

    def add(self, snapshot: QueueSnapshot, message: QueueMessage, instance: str | None = None) -> None:
        """Account one message into ``snapshot``."""
        recipients = message.recipients
        first_domain = domain_of(recipients[0].address) if recipients else None
        lane = self.classifier.lane(message.sender, first_domain, instance)
        cell = snapshot.cells.get((message.queue, lane))
        if cell is None:  # a queue this MTA reports that the tally was not told about
            cell = snapshot.cells[(message.queue, lane)] = LaneTotals()
        cell.messages += 1
        cell.recipients += len(recipients)
        cell.size_bytes += message.size
        if cell.oldest is None or message.arrival < cell.oldest:
            cell.oldest = message.arrival
        if message.forced_expire:
            snapshot.forced_expire += 1
        if message.queue != self.DEFERRED_QUEUE:
            return
        for recipient in recipients:
            if recipient.reason:
                host = relay_host(None, recipient.reason)
                key = (self.classifier.provider(domain_of(recipient.address), host),
                       self.classifier.reason(None, recipient.reason))
                snapshot.deferred[key] = snapshot.deferred.get(key, 0) + 1

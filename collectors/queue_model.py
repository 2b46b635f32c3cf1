"""MTA-agnostic queue accounting: queue records in, bounded per-lane/per-provider totals out.

The Postfix decoder (``showq``) and the Exim spool reader both yield ``QueueMessage``
records; ``QueueTally`` folds a stream of them into a ``QueueSnapshot`` without keeping the
messages, so memory stays flat whatever the queue size. ``QueueLedger`` is its incremental form,
for readers that rescan only what changed (Postfix's ``spool`` source): running totals, and one
compact contribution per message for the reader to keep, so that a rescan costs what changed,
not what is queued. ``collectors/queue_collector.py`` renders snapshots as metric families.
"""

from __future__ import annotations

import struct
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
    ``deferred_queue`` names the queue that waits for retries (Exim has one queue, ``queued``).
    """

    DEFERRED_QUEUE = "deferred"

    def __init__(self, classifier: Classifier, queues: Iterable[str], deferred_queue: str = DEFERRED_QUEUE) -> None:
        self.classifier = classifier
        self.queues = tuple(queues)
        self.deferred_queue = deferred_queue

    def new_snapshot(self) -> QueueSnapshot:
        """An empty snapshot with every known (queue, lane) cell present, so zeros are exported."""
        lanes = self.classifier.lane_names
        snapshot = QueueSnapshot(self.queues, lanes)
        for queue in self.queues:
            for lane in lanes:
                snapshot.cells[(queue, lane)] = LaneTotals()
        return snapshot

    def lane_of(self, message: QueueMessage, instance: str | None = None) -> str:
        """The lane of ``message``: its sender, its first recipient's domain and the MTA instance."""
        recipients = message.recipients
        return self.lane(message.sender, recipients[0].address if recipients else None, instance)

    def lane(self, sender: str, first_recipient: str | None, instance: str | None = None) -> str:
        """The lane of a message from ``sender`` whose first recipient is ``first_recipient``."""
        first_domain = domain_of(first_recipient) if first_recipient is not None else None
        return self.classifier.lane(sender, first_domain, instance)

    def deferrals_of(self, message: QueueMessage) -> tuple[tuple[str, str], ...]:
        """(provider, reason class) of each recipient that carries a defer reason: the provider of
        its domain, or of the host the reason names."""
        return self.deferrals((r.address, r.reason) for r in message.recipients)

    def deferrals(self, recipients: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
        """``deferrals_of`` for (address, reason) pairs."""
        provider, reason_class = self.classifier.provider, self.classifier.reason
        return tuple((provider(domain_of(address), relay_host(None, reason)), reason_class(None, reason))
                     for address, reason in recipients if reason)

    def add(self, snapshot: QueueSnapshot, message: QueueMessage, instance: str | None = None) -> None:
        """Account one message into ``snapshot``."""
        recipients = message.recipients
        lane = self.lane_of(message, instance)
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
        if message.queue == self.deferred_queue:
            for key in self.deferrals_of(message):
                snapshot.deferred[key] = snapshot.deferred.get(key, 0) + 1


#: A message's contribution as ``QueueLedger`` packs it: arrival, size, recipients, lane index and
#: the index of its (provider, reason) pairs.
_CONTRIBUTION = struct.Struct("<dqIHI")
#: The contribution of a queue entry that could not be decoded: counted apart, never in the totals.
UNDECODABLE = b""
UNDECODABLE_REASON = "malformed"


@dataclass(slots=True)
class _RunningCell:
    """Totals of one (queue, lane) cell that messages can also leave: arrival times are counted,
    so that the oldest is known again when the oldest message leaves."""

    messages: int = 0
    recipients: int = 0
    size_bytes: int = 0
    arrivals: dict[float, int] = field(default_factory=dict)


class QueueLedger:
    """Running queue totals of one MTA instance, updated message by message.

    An incremental reader asks ``encode()`` for a message's contribution when it reads the
    message, keeps those few bytes instead of the message, and reports arrivals and departures
    with ``add()`` and ``remove()`` (a move between queues is both). Lanes and deferred
    (provider, reason) pairs come from the ``QueueTally`` methods a full read uses, so both give
    the same numbers. Not thread-safe: one scan at a time.
    """

    def __init__(self, tally: QueueTally, instance: str | None) -> None:
        self.tally = tally
        self.instance = instance
        self._cells: dict[tuple[str, str], _RunningCell] = {}
        self._deferred: dict[tuple[str, str], int] = {}
        self._forced = 0
        self._undecodable = 0
        self._lanes: list[str] = []
        self._lane_index: dict[str, int] = {}
        # (provider, reason) tuples repeat from message to message: each distinct one is kept once.
        self._deferral_sets: list[tuple[tuple[str, str], ...]] = []
        self._deferral_index: dict[tuple[tuple[str, str], ...], int] = {}

    def encode(self, message: QueueMessage | None) -> bytes:
        """The contribution of ``message`` (None: an entry that could not be decoded)."""
        if message is None:
            return UNDECODABLE
        return self._pack(self.tally.lane_of(message, self.instance), self.tally.deferrals_of(message),
                          message.arrival, message.size, len(message.recipients))

    def encode_listed(self, sender: str, recipients: tuple[tuple[str, str], ...], arrival: float, size: int) -> bytes:
        """``encode`` for a message given as its sender and (recipient, defer reason) pairs, for a
        reader that has no use for a ``QueueMessage``."""
        return self._pack(self.tally.lane(sender, recipients[0][0] if recipients else None, self.instance),
                          self.tally.deferrals(recipients), arrival, size, len(recipients))

    def _pack(self, lane: str, deferrals: tuple[tuple[str, str], ...], arrival: float, size: int,
              recipients: int) -> bytes:
        lane_index = self._lane_index.get(lane)
        if lane_index is None:
            lane_index = self._lane_index[lane] = len(self._lanes)
            self._lanes.append(lane)
        deferral_index = self._deferral_index.get(deferrals)
        if deferral_index is None:
            deferral_index = self._deferral_index[deferrals] = len(self._deferral_sets)
            self._deferral_sets.append(deferrals)
        return _CONTRIBUTION.pack(arrival, size, recipients, lane_index, deferral_index)

    def add(self, contribution: bytes, queue: str, forced_expire: bool) -> None:
        """A message with this contribution is now in ``queue``."""
        self._apply(contribution, queue, forced_expire, 1)

    def remove(self, contribution: bytes, queue: str, forced_expire: bool) -> None:
        """A message added with these values left ``queue``."""
        self._apply(contribution, queue, forced_expire, -1)

    def _apply(self, contribution: bytes, queue: str, forced_expire: bool, sign: int) -> None:
        if contribution == UNDECODABLE:
            self._undecodable += sign
            return
        arrival, size, recipients, lane_index, deferral_index = _CONTRIBUTION.unpack(contribution)
        key = (queue, self._lanes[lane_index])
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _RunningCell()
        cell.messages += sign
        cell.recipients += sign * recipients
        cell.size_bytes += sign * size
        _count(cell.arrivals, arrival, sign)
        if forced_expire:
            self._forced += sign
        if queue == self.tally.deferred_queue:
            for pair in self._deferral_sets[deferral_index]:
                _count(self._deferred, pair, sign)

    def skipped(self) -> dict[str, int]:
        """Entries left out of the totals, by reason (``mtaq_queue_skipped_messages``)."""
        return {UNDECODABLE_REASON: self._undecodable} if self._undecodable else {}

    def snapshot(self) -> QueueSnapshot:
        """The totals now, as a full read of the same messages would have tallied them."""
        snapshot = self.tally.new_snapshot()
        for key, cell in self._cells.items():
            if cell.messages:
                snapshot.cells[key] = LaneTotals(cell.messages, cell.recipients, cell.size_bytes, min(cell.arrivals))
        snapshot.deferred = dict(self._deferred)
        snapshot.forced_expire = self._forced
        return snapshot


def _count(counts: dict, key: object, sign: int) -> None:
    """Add ``sign`` to ``counts[key]``, dropping keys that reach zero."""
    left = counts.get(key, 0) + sign
    if left:
        counts[key] = left
    else:
        del counts[key]

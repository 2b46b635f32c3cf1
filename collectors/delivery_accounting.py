"""Delivery accounting: layer 2 of the log collectors, shared by Postfix and Exim.

MTA log parsers translate their records into a handful of normalised events::

    submitted(qid)                             a message entered the MTA from outside (SMTP, pickup)
    received(qid, sender)                      the MTA queued a message (first sighting counts)
    notification(new_qid, type)                the MTA created a notification message itself
    delivery(qid, recipient, status, ...)      one attempt for one recipient: sent/deferred/bounced
    probe(status)                              an address-verification probe (never a delivery)
    expired(qid, sender)                       retries ran out: the message goes back to its sender
    removed(qid)                               the MTA forgot the message

and ``DeliveryAccounting`` turns them into counters keyed by bounded label tuples (lane,
provider, reason, status, bounce type; never addresses), following SPEC §3:

- a message counts once in ``messages_received``, unless the MTA made it itself: a queue id
  announced as a notification, or a null-sender message that never came through ``submitted``
  (bounces, delay warnings); those count in ``notifications`` by type (pflogsumm's "received"
  counts the same way: smtpd and pickup, not qmgr). A content filter that re-injects mail makes a
  second queue id that counts again, as in pflogsumm;
- attempts count every sent/deferred/bounced try; a message counts once in
  ``messages_deferred`` (on its first deferral, with that deferral's lane and provider);
- hops that stay on the host (the classifier's ``local``: content filters, local mailboxes) count
  under provider ``local``; their ``sent`` is not a final outcome for the delay histogram (a
  content filter hands the mail back under a new queue id, whose own delivery is observed);
- a soft-bounce deferral (the MTA's soft-bounce mode turned a bounce into a deferral) counts as
  a deferral and in ``soft_bounces`` by reason;
- ``status=bounced`` is a hard bounce unless its DSN is 4.x.x or 5.2.x (soft); when a message
  expires, each recipient still pending becomes a soft bounce with its last deferral's provider
  and reason, and the message one dead letter (lane/provider/reason of its last deferral);
- self-inflicted deferrals (the classifier's ``self`` reason: delivery temporarily suspended,
  deferred transport, …) are counted only in ``self_deferrals``, labelled with the underlying
  cause when the text names one, so they never look like provider pushback;
- the delay histogram gets one observation per recipient, on its final outcome.

The per-message table is bounded: entries leave on ``removed``, and a size cap plus a TTL on
the first sighting evict the oldest (counted). Event methods and ``snapshot()`` take a lock, so
one thread can feed while scrapes read.

Queue ids are unique only within one MTA instance, so ``InstanceAccounts`` keeps one
``DeliveryAccounting`` per instance (the ``mta_instance`` label), and ``merge_snapshots`` sums
them for reports that do not split by instance.

Everything kept per message depends on that message's events alone, so a log can also be split
by queue id between several accountings (``analyze`` on several cores) and their snapshots put
back together by ``merge_parts``. Only the latest reply per reason and the dead-letter log depend
on the order of events across messages: fed a ``serial`` (the line's place in the whole log),
an accounting remembers where each of those came from.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import OrderedDict, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from collectors.base import Clock
from collectors.classify import LOCAL, OTHER, Classifier, domain_of

SENT, DEFERRED, BOUNCED, EXPIRED = "sent", "deferred", "bounced", "expired"
_STATUSES = frozenset({SENT, DEFERRED, BOUNCED})
HARD, SOFT = "hard", "soft"
SELF = "self"
#: Notification messages the MTA creates itself (``mtaq_notifications_total{type}``).
NOTIFICATION_TYPES = ("non_delivery", "delay", "delivery_status", OTHER)
#: Upper bounds of ``mtaq_delivery_delay_seconds``: one second to five days.
DELAY_BUCKETS: tuple[float, ...] = (
    1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400, 172800, 432000,
)
DEFAULT_MAX_MESSAGES = 100_000
#: Longer than Postfix's default maximal_queue_lifetime (5d) and Exim's usual retry horizon.
DEFAULT_MESSAGE_TTL = 7 * 86400.0
DEAD_LETTER_LIMIT = 1000
_SWEEP_EVERY = 60.0
_FUTURE_SLACK = 86400.0
_SAMPLE_RECIPIENTS = 20
_LABEL_CACHE_LIMIT = 65536
#: Distinct MTA instances accounted apart; lines of any further instance count under ``other``.
MAX_INSTANCES = 16

# (lane, provider, reason, reply text) of a recipient's last deferral.
_Deferral = tuple[str, str, str, str]


class _Message:
    """What is known about one queued message (a plain slots class: one is made per message)."""

    __slots__ = ("arrival", "attempts", "deferred_counted", "expired", "first_seen", "instance", "last",
                 "pending", "providers", "received_counted", "sender")

    def __init__(self, sender: str | None, instance: str | None, first_seen: float, arrival: float) -> None:
        self.sender = sender
        self.instance = instance
        self.first_seen = first_seen
        self.arrival = arrival  # best estimate: first sighting, or earlier when a delay= says so
        self.attempts = 0
        # False only for a message seen entering the MTA and not yet counted as received; first
        # seen any other way (a delivery, a notification), it never counts.
        self.received_counted = True
        self.deferred_counted = False
        self.expired = False
        self.providers: tuple[str, ...] = ()  # usually one: a tuple is cheaper than a set
        self.pending: dict[str, _Deferral] | None = None  # recipients whose last try was deferred
        self.last: _Deferral | None = None


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(DELAY_BUCKETS) + 1))
    total: float = 0.0


@dataclass(frozen=True, slots=True)
class DelayHistogram:
    """Counts per bucket (not cumulative; the last one is above the largest bound) and the sum."""

    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        """Number of observations."""
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One expired message, for the ``dead-letters`` command and API (addresses allowed here)."""

    qid: str
    sender: str | None
    instance: str | None
    lane: str
    provider: str
    reason: str
    text: str
    first_seen: float | None
    expired_at: float
    forced: bool
    attempts: int
    providers: tuple[str, ...]  # every provider an attempt went to
    pending_recipients: int
    recipients: tuple[str, ...]  # the first few pending recipients


@dataclass(frozen=True, slots=True)
class AccountingSnapshot:
    """An immutable copy of the counters (plain dicts keyed by label tuples) for rendering."""

    messages_received: dict[tuple[str], int]
    delivery_attempts: dict[tuple[str, str, str], int]
    messages_deferred: dict[tuple[str, str], int]
    deferrals: dict[tuple[str, str], int]
    bounces: dict[tuple[str, str, str, str], int]
    dead_letters: dict[tuple[str, str, str], int]
    delivery_delay: dict[tuple[str, str], DelayHistogram]
    self_deferrals: dict[tuple[str], int]
    probes: dict[tuple[str], int]
    soft_bounces: dict[tuple[str], int]
    notifications: dict[tuple[str], int]
    tracked_messages: int
    evicted_messages: int
    negative_delays: int
    dead_letter_log: tuple[DeadLetter, ...]
    reason_samples: dict[tuple[str, str, str], str]  # (deferred|bounced, provider, reason) -> latest reply
    # With a serial only (see the module docstring): where each reply sample and dead letter came from.
    sample_serials: dict[tuple[str, str, str], int] = field(default_factory=dict)
    dead_letter_serials: tuple[int, ...] = ()


def bounce_type(dsn: str | None) -> str:
    """``soft`` for 4.x.x and 5.2.x (mailbox full, over quota), else ``hard``."""
    return SOFT if dsn and (dsn[:2] == "4." or dsn[:4] == "5.2.") else HARD


class DeliveryAccounting:
    """Per-message state and bounded counters fed by normalised delivery events."""

    def __init__(self, classifier: Classifier, *, clock: Clock = time.time,
                 max_messages: int = DEFAULT_MAX_MESSAGES, message_ttl: float = DEFAULT_MESSAGE_TTL,
                 dead_letter_limit: int = DEAD_LETTER_LIMIT, serial: Callable[[], int] | None = None) -> None:
        self._classifier = classifier
        self._clock = clock
        self._serial = serial
        self._max_messages = max_messages
        self._ttl = message_ttl
        self._lock = threading.Lock()
        # Ordered by first sighting. A plain dict would do, but evicting its oldest entry means
        # scanning past every deleted slot at its front: quadratic once the cap is reached.
        self._messages: OrderedDict[str, _Message] = OrderedDict()
        self._last_sweep = float("-inf")
        self._evicted = 0
        self._negative_delays = 0
        self._received: defaultdict[tuple[str], int] = defaultdict(int)
        self._attempts: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._messages_deferred: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._deferrals: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._bounces: defaultdict[tuple[str, str, str, str], int] = defaultdict(int)
        self._dead_letters: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        self._delay: dict[tuple[str, str], _Histogram] = {}
        self._self_deferrals: defaultdict[tuple[str], int] = defaultdict(int)
        self._probes: defaultdict[tuple[str], int] = defaultdict(int)
        self._soft_bounces: defaultdict[tuple[str], int] = defaultdict(int)
        self._notifications: defaultdict[tuple[str], int] = defaultdict(int)
        self._dead_letter_log: deque[DeadLetter] = deque(maxlen=dead_letter_limit)
        self._samples: dict[tuple[str, str, str], str] = {}
        self._sample_serials: dict[tuple[str, str, str], int] = {}
        self._dead_letter_serials: deque[int] = deque(maxlen=dead_letter_limit)
        self._labels: dict[tuple[str | None, str, str | None, str | None, str | None], tuple[str, str]] = {}

    # -- events -----------------------------------------------------------------------------

    def submitted(self, qid: str, timestamp: float | None = None, instance: str | None = None) -> None:
        """``qid`` entered the MTA from outside (SMTP, local submission): it will count as received."""
        with self._lock:
            if qid not in self._messages:
                now = self._clock() if timestamp is None else timestamp
                message = _Message(None, instance, now, now)
                message.received_counted = False
                self._admit(qid, message, now)

    def notification(self, qid: str, kind: str, timestamp: float | None = None,
                     instance: str | None = None) -> None:
        """The MTA created ``qid`` itself, a notification of ``kind`` (one of ``NOTIFICATION_TYPES``):
        counted apart, never as received mail."""
        with self._lock:
            self._notifications[(kind if kind in NOTIFICATION_TYPES else OTHER,)] += 1
            if qid not in self._messages:
                now = self._clock() if timestamp is None else timestamp
                self._admit(qid, _Message("", instance, now, now), now)

    def received(self, qid: str, sender: str | None, timestamp: float | None = None,
                 instance: str | None = None) -> None:
        """The MTA queued ``qid``; repeats (Postfix logs one per queue run) count once.

        Not counted: messages first seen otherwise (a delivery before any queue line, a
        notification) and null-sender messages that never came through ``submitted``, which the
        MTA made itself (its notifications are logged before or after this line, by chance).
        """
        with self._lock:
            message = self._messages.get(qid)
            if message is not None:
                if message.sender is None:
                    message.sender = sender
                if message.received_counted:
                    return
                message.received_counted = True
            else:
                now = self._clock() if timestamp is None else timestamp
                self._admit(qid, _Message(sender, instance, now, now), now)
                if not sender:
                    return
            self._received[(self._classifier.lane(sender, None, instance, None),)] += 1

    def delivery(self, qid: str, recipient: str, status: str, timestamp: float | None = None,
                 host: str | None = None, dsn: str | None = None, text: str = "",
                 delay: float | None = None, instance: str | None = None,
                 service: str | None = None, local: bool = False, soft_bounce: bool = False) -> None:
        """One delivery attempt of ``recipient``: ``status`` is sent, deferred or bounced.

        ``host`` is the remote MTA's name (relay or reply text), ``delay`` the seconds since
        the message arrived (final outcomes are observed with it). ``local``: the hop stayed on
        the host (provider ``local``). ``soft_bounce``: a deferral that would have been a bounce.
        """
        if status not in _STATUSES:
            raise ValueError(f"unknown delivery status {status!r}")
        with self._lock:
            now = self._clock() if timestamp is None else timestamp
            message = self._messages.get(qid)
            if message is None:
                message = _Message(None, instance, now, now if delay is None else now - delay)
                self._admit(qid, message, now)
            elif delay is not None and now - delay < message.arrival:
                message.arrival = now - delay
            # One lookup instead of two classifier calls: this runs for every attempt.
            domain = domain_of(recipient)
            if local:
                lane, provider = self._classifier.lane(message.sender, domain, instance, service), LOCAL
            else:
                key = (message.sender, domain, host, instance, service)
                labels = self._labels.get(key)
                if labels is None:
                    labels = self._classify(*key)
                lane, provider = labels
            pending = message.pending
            if status == SENT:
                if pending:
                    pending.pop(recipient, None)
                if not local:
                    self._observe(lane, SENT, now - message.arrival if delay is None else delay)
            elif status == DEFERRED:
                reason = self._classifier.reason(dsn, text)
                if soft_bounce:
                    self._soft_bounces[(reason,)] += 1
                if reason == SELF:
                    self._self_deferral(message, recipient, lane, provider, dsn, text)
                    return
                if not message.deferred_counted:
                    message.deferred_counted = True
                    self._messages_deferred[(lane, provider)] += 1
                self._deferrals[(provider, reason)] += 1
                self._sample(DEFERRED, provider, reason, text)
                if pending is None:
                    pending = message.pending = {}
                pending[recipient] = message.last = (lane, provider, reason, text)
            else:
                reason = self._classifier.reason(dsn, text)
                self._bounces[(lane, provider, bounce_type(dsn), reason)] += 1
                self._sample(BOUNCED, provider, reason, text)
                if pending:
                    pending.pop(recipient, None)
                self._observe(lane, BOUNCED, now - message.arrival if delay is None else delay)
            self._attempts[(lane, provider, status)] += 1
            message.attempts += 1
            if provider not in message.providers:
                message.providers += (provider,)

    def _self_deferral(self, message: _Message, recipient: str, lane: str, provider: str,
                       dsn: str | None, text: str) -> None:
        # "delivery temporarily suspended: <cause>" names why the MTA holds the destination;
        # label with that cause (bounded reasons) and keep the recipient pending, but leave
        # attempts, deferrals and message counts to real tries.
        cause = text.partition(": ")[2]
        reason = self._classifier.reason(dsn, cause) if cause else SELF
        if reason == OTHER:
            reason = SELF
        self._self_deferrals[(reason,)] += 1
        if message.pending is None:
            message.pending = {}
        if recipient not in message.pending:
            deferral = (lane, provider, reason, text)
            message.pending[recipient] = deferral
            if message.last is None:
                message.last = deferral

    def probe(self, status: str) -> None:
        """An address-verification probe result: counted apart, never a delivery."""
        with self._lock:
            self._probes[(status,)] += 1

    def expired(self, qid: str, sender: str | None, timestamp: float | None = None,
                forced: bool = False, instance: str | None = None) -> None:
        """``qid`` ran out of retries (``forced`` by an operator): a dead letter, and a soft
        bounce for each recipient still pending."""
        with self._lock:
            now = self._clock() if timestamp is None else timestamp
            message = self._messages.get(qid)
            if message is not None and message.expired:
                return
            if message is None:
                message = _Message(sender, instance, now, now)
                first_seen = None
                self._admit(qid, message, now)
            else:
                first_seen = message.first_seen
                if message.sender is None:
                    message.sender = sender
            message.expired = True
            if message.last is None:
                lane = self._classifier.lane(message.sender, None, instance, None)
                provider = reason = OTHER
                text = ""
            else:
                lane, provider, reason, text = message.last
            self._dead_letters[(lane, provider, reason)] += 1
            pending = message.pending or {}
            age = now - message.arrival
            for r_lane, r_provider, r_reason, _ in pending.values():
                self._bounces[(r_lane, r_provider, SOFT, r_reason)] += 1
                self._observe(r_lane, EXPIRED, age)
            self._dead_letter_log.append(DeadLetter(
                qid, message.sender, instance or message.instance, lane, provider, reason, text, first_seen,
                now, forced, message.attempts, message.providers, len(pending),
                tuple(list(pending)[:_SAMPLE_RECIPIENTS])))
            if self._serial is not None:
                self._dead_letter_serials.append(self._serial())
            message.pending = None

    def removed(self, qid: str) -> None:
        """The MTA dropped ``qid`` (delivered, bounced or expired): forget its state."""
        with self._lock:
            self._messages.pop(qid, None)

    # -- bookkeeping --------------------------------------------------------------------------

    def _classify(self, sender: str | None, domain: str, host: str | None, instance: str | None,
                  service: str | None) -> tuple[str, str]:
        labels = (self._classifier.lane(sender, domain, instance, service), self._classifier.provider(domain, host))
        if len(self._labels) >= _LABEL_CACHE_LIMIT:
            self._labels.clear()
        self._labels[(sender, domain, host, instance, service)] = labels
        return labels

    def _sample(self, status: str, provider: str, reason: str, text: str) -> None:
        key = (status, provider, reason)
        self._samples[key] = text
        if self._serial is not None:
            self._sample_serials[key] = self._serial()

    def _observe(self, lane: str, status: str, seconds: float) -> None:
        if seconds < 0:  # out-of-order timestamps or a negative delay=: 0, and counted
            seconds = 0.0
            self._negative_delays += 1
        histogram = self._delay.get((lane, status))
        if histogram is None:
            histogram = self._delay[(lane, status)] = _Histogram()
        histogram.counts[bisect_left(DELAY_BUCKETS, seconds)] += 1
        histogram.total += seconds

    def _admit(self, qid: str, message: _Message, now: float) -> None:
        messages = self._messages
        messages[qid] = message
        if len(messages) > self._max_messages:
            messages.popitem(last=False)
            self._evicted += 1
        if now - self._last_sweep >= _SWEEP_EVERY:
            # A line stamped far in the future must neither age out every live message nor
            # postpone the next sweeps: trust log time only up to the clock (plus some skew).
            clock = self._clock()
            self._last_sweep = min(now, clock)
            cutoff = min(now, clock + _FUTURE_SLACK) - self._ttl
            stale = []
            for old_qid, old in messages.items():
                if old.first_seen >= cutoff:
                    break
                stale.append(old_qid)
            for old_qid in stale:
                del messages[old_qid]
            self._evicted += len(stale)

    def snapshot(self) -> AccountingSnapshot:
        """A consistent, immutable copy of every counter and the dead-letter log."""
        with self._lock:
            return AccountingSnapshot(
                messages_received=dict(self._received),
                delivery_attempts=dict(self._attempts),
                messages_deferred=dict(self._messages_deferred),
                deferrals=dict(self._deferrals),
                bounces=dict(self._bounces),
                dead_letters=dict(self._dead_letters),
                delivery_delay={key: DelayHistogram(tuple(h.counts), h.total) for key, h in self._delay.items()},
                self_deferrals=dict(self._self_deferrals),
                probes=dict(self._probes),
                soft_bounces=dict(self._soft_bounces),
                notifications=dict(self._notifications),
                tracked_messages=len(self._messages),
                evicted_messages=self._evicted,
                negative_delays=self._negative_delays,
                dead_letter_log=tuple(self._dead_letter_log),
                reason_samples=dict(self._samples),
                sample_serials=dict(self._sample_serials),
                dead_letter_serials=tuple(self._dead_letter_serials),
            )


def merge_snapshots(snapshots: Iterable[AccountingSnapshot]) -> AccountingSnapshot:
    """One snapshot summing several (every instance of an MTA, for a report across them)."""
    snapshots = list(snapshots)

    def summed(field_name: str) -> dict:
        total: defaultdict = defaultdict(int)
        for snap in snapshots:
            for key, n in getattr(snap, field_name).items():
                total[key] += n
        return dict(total)

    delay: dict[tuple[str, str], DelayHistogram] = {}
    for snap in snapshots:
        for key, h in snap.delivery_delay.items():
            old = delay.get(key)
            delay[key] = h if old is None else DelayHistogram(
                tuple(a + b for a, b in zip(old.counts, h.counts, strict=True)), old.total + h.total)
    samples: dict[tuple[str, str, str], str] = {}
    for snap in snapshots:
        samples.update(snap.reason_samples)
    return AccountingSnapshot(
        messages_received=summed("messages_received"), delivery_attempts=summed("delivery_attempts"),
        messages_deferred=summed("messages_deferred"), deferrals=summed("deferrals"), bounces=summed("bounces"),
        dead_letters=summed("dead_letters"), delivery_delay=delay, self_deferrals=summed("self_deferrals"),
        probes=summed("probes"), soft_bounces=summed("soft_bounces"), notifications=summed("notifications"),
        tracked_messages=sum(s.tracked_messages for s in snapshots),
        evicted_messages=sum(s.evicted_messages for s in snapshots),
        negative_delays=sum(s.negative_delays for s in snapshots),
        dead_letter_log=tuple(sorted((d for s in snapshots for d in s.dead_letter_log), key=lambda d: d.expired_at)),
        reason_samples=samples)


def merge_parts(parts: Iterable[AccountingSnapshot], dead_letter_limit: int = DEAD_LETTER_LIMIT) -> AccountingSnapshot:
    """One instance's accounting of a log split between several accountings by queue id, each fed
    a serial: the snapshot one accounting reading the whole log would have made. Equal unless the
    parts evicted differently (more messages in flight than the cap; timestamps that jump back and
    forth by more than the TTL, as in logs of several hosts pasted together, sweep stale messages
    at other moments), and float sums (delay totals) may differ in their last bits by the order of
    addition."""
    parts = list(parts)
    samples: dict[tuple[str, str, str], tuple[int, str]] = {}
    for part in parts:
        for key, text in part.reason_samples.items():
            serial = part.sample_serials[key]
            if key not in samples or serial > samples[key][0]:
                samples[key] = (serial, text)
    letters = sorted(((serial, letter) for part in parts
                      for serial, letter in zip(part.dead_letter_serials, part.dead_letter_log, strict=True)),
                     key=lambda pair: pair[0])[-dead_letter_limit:]
    return replace(merge_snapshots(parts), dead_letter_log=tuple(letter for _, letter in letters),
                   reason_samples={key: text for key, (_, text) in samples.items()},
                   sample_serials={key: serial for key, (serial, _) in samples.items()},
                   dead_letter_serials=tuple(serial for serial, _ in letters))


class _ByInstance(dict[str | None, DeliveryAccounting]):
    """Instance as records carry it -> its accounting; an instance not seen yet is added (``__missing__``)."""

    __slots__ = ("_add",)

    def __init__(self, add: Callable[[str | None], DeliveryAccounting]) -> None:
        super().__init__()
        self._add = add

    def __missing__(self, instance: str | None) -> DeliveryAccounting:
        return self._add(instance)


class InstanceAccounts:
    """One ``DeliveryAccounting`` per MTA instance, created on first sight.

    ``get(instance)`` is on the hot path: one dict lookup once an instance is known, and
    ``by_instance[instance]`` the same without a Python-level call (adapters bind its
    ``__getitem__``). ``preset``
    instances (else ``default``) exist from the start, so their series are there before the
    first line. A record without an instance (a bare journald line) counts under ``default``;
    beyond ``MAX_INSTANCES``
    distinct names, further instances share ``other``, so a junk log cannot grow the label set.
    """

    def __init__(self, classifier: Classifier, default: str, *, clock: Clock = time.time,
                 max_messages: int = DEFAULT_MAX_MESSAGES, preset: Iterable[str] = (),
                 serial: Callable[[], int] | None = None) -> None:
        self._classifier = classifier
        self._default = default
        self._clock = clock
        self._max_messages = max_messages
        self._serial = serial
        self._lock = threading.Lock()
        self._named: dict[str, DeliveryAccounting] = {}  # by mta_instance label
        self.by_instance = _ByInstance(self._add)  # by what records carry
        for name in tuple(preset) or (default,):  # zero-filled from the start
            self.get(name)

    @property
    def classifier(self) -> Classifier:
        """The classifier every instance's accounting uses (adapters ask it about relays)."""
        return self._classifier

    def get(self, instance: str | None) -> DeliveryAccounting:
        """The accounting of ``instance``."""
        return self.by_instance[instance]

    def _add(self, instance: str | None) -> DeliveryAccounting:
        with self._lock:
            name = instance or self._default
            if name not in self._named and len(self._named) >= MAX_INSTANCES:
                name = OTHER
            accounting = self._named.get(name)
            if accounting is None:
                accounting = DeliveryAccounting(self._classifier, clock=self._clock, max_messages=self._max_messages,
                                                serial=self._serial)
                self._named[name] = accounting
            self.by_instance[instance] = accounting
            return accounting

    def snapshots(self) -> Mapping[str, AccountingSnapshot]:
        """Each instance's snapshot, by ``mta_instance``."""
        with self._lock:
            named = list(self._named.items())
        return {name: accounting.snapshot() for name, accounting in named}


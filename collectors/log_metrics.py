"""Delivery-log metric families: layer 3 of the log collectors (SPEC §5), no parsing here.

``log_families`` renders an ``AccountingSnapshot`` plus per-source line statistics. Sample::

    mtaq_delivery_attempts_total{lane="normal",provider="google",status="deferred"} 12.0
    mtaq_messages_deferred_total{lane="normal",provider="google"} 3.0
    mtaq_bounces_total{lane="normal",provider="other",reason="user_unknown",type="hard"} 1.0
    mtaq_delivery_delay_seconds_bucket{lane="normal",le="60.0",status="sent"} 40.0
    mtaq_log_lines_total{result="unparsed",source="/var/log/mail.log"} 0.0

Zero-filled series, so that rates and ratios exist before the first event:

- ``mtaq_messages_received_total``: every configured lane;
- ``mtaq_delivery_attempts_total``: every lane x status with ``provider="other"``, and all three
  statuses for each (lane, provider) pair seen; not every provider x lane x status, which would
  multiply series that never move;
- ``mtaq_messages_deferred_total``: each (lane, provider) pair with attempts;
- ``mtaq_bounces_total``: lane x type with provider and reason ``other``;
  ``mtaq_dead_letters_total``: each lane with provider and reason ``other``;
- ``mtaq_delivery_delay_seconds``: every lane x final status (sent, bounced, expired);
- ``mtaq_log_lines_total``: every source x result.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from collectors.classify import OTHER, Classifier
from collectors.delivery_accounting import (
    BOUNCED,
    DEFERRED,
    DELAY_BUCKETS,
    EXPIRED,
    HARD,
    SELF,
    SENT,
    SOFT,
    AccountingSnapshot,
)

LINE_RESULTS = ("parsed", "ignored", "unparsed")
_ATTEMPT_STATUSES = (SENT, DEFERRED, BOUNCED)
_FINAL_STATUSES = (SENT, BOUNCED, EXPIRED)
_BOUNDS = tuple(str(float(bound)) for bound in DELAY_BUCKETS)


@dataclass(frozen=True, slots=True)
class LabelSets:
    """The configured label values that are zero-filled (today: the lanes)."""

    lanes: tuple[str, ...]

    @classmethod
    def of(cls, classifier: Classifier) -> LabelSets:
        """The label sets a classifier was configured with."""
        return cls(classifier.lane_names)


@dataclass(frozen=True, slots=True)
class LogSourceStats:
    """What one log source contributed: lines by result, reopens, when a line was last read."""

    lines: Mapping[str, int] = field(default_factory=dict)
    reopens: int = 0
    last_line_time: float | None = None


def _counter(name: str, documentation: str, labels: list[str],
             values: Mapping[tuple[str, ...], int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key in sorted(values):
        family.add_metric(list(key), values[key])
    return family


def _filled(values: Mapping[tuple[str, ...], int], keys: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
    filled = dict.fromkeys(keys, 0)
    filled.update(values)
    return filled


def log_families(snapshot: AccountingSnapshot, line_stats: Mapping[str, LogSourceStats],
                 classifier_label_sets: LabelSets) -> Iterator[Metric]:
    """The SPEC §5 delivery and log families for one snapshot (see the module docstring)."""
    lanes = classifier_label_sets.lanes
    attempts = snapshot.delivery_attempts
    pairs = {(lane, provider) for lane, provider, _ in attempts}
    yield _counter(
        "mtaq_messages_received_total", "Messages queued by the MTA (counted once per queue id), from the mail log.",
        ["lane"], _filled(snapshot.messages_received, ((lane,) for lane in lanes)))
    yield _counter(
        "mtaq_delivery_attempts_total",
        "Delivery attempts per recipient by outcome (self-inflicted deferrals and verify probes excluded), "
        "from the mail log.",
        ["lane", "provider", "status"],
        _filled(attempts, [(lane, OTHER, status) for lane in lanes for status in _ATTEMPT_STATUSES]
                + [(lane, provider, status) for lane, provider in pairs for status in _ATTEMPT_STATUSES]))
    yield _counter(
        "mtaq_messages_deferred_total",
        "Messages deferred at least once, counted on their first deferral, from the mail log.",
        ["lane", "provider"], _filled(snapshot.messages_deferred, pairs))
    yield _counter(
        "mtaq_deferrals_total", "Deferred delivery attempts by provider and reason, from the mail log.",
        ["provider", "reason"], snapshot.deferrals)
    yield _counter(
        "mtaq_bounces_total",
        "Recipients that finally failed: hard (5.x.x except 5.2.x) or soft (4.x.x, 5.2.x, still pending "
        "at expiry), from the mail log.",
        ["lane", "provider", "type", "reason"],
        _filled(snapshot.bounces, ((lane, OTHER, kind, OTHER) for lane in lanes for kind in (HARD, SOFT))))
    yield _counter(
        "mtaq_dead_letters_total",
        "Messages that expired undelivered and went back to the sender, by their last deferral, "
        "from the mail log.",
        ["lane", "provider", "reason"], _filled(snapshot.dead_letters, ((lane, OTHER, OTHER) for lane in lanes)))
    yield _delay_family(snapshot, lanes)
    yield _counter(
        "mtaq_self_deferrals_total",
        "Deferrals the MTA inflicted on itself (destination suspended, deferred transport), by underlying "
        "cause, from the mail log.",
        ["reason"], _filled(snapshot.self_deferrals, [(SELF,)]))
    yield _counter(
        "mtaq_verify_probes_total", "Address-verification probe results (not deliveries), from the mail log.",
        ["status"], snapshot.probes)
    yield from _source_families(line_stats)
    tracked = GaugeMetricFamily(
        "mtaq_log_tracked_messages", "Messages whose delivery state is kept in memory, from the mail log.")
    tracked.add_metric([], snapshot.tracked_messages)
    yield tracked
    evicted = CounterMetricFamily(
        "mtaq_log_evicted_messages_total",
        "Message states dropped by the size or age cap before the MTA removed them, from the mail log.")
    evicted.add_metric([], snapshot.evicted_messages)
    yield evicted


def _delay_family(snapshot: AccountingSnapshot, lanes: tuple[str, ...]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "mtaq_delivery_delay_seconds",
        "Seconds from arrival to a recipient's final outcome (sent, bounced, expired), observed once per "
        "recipient, from the mail log.",
        labels=["lane", "status"])
    keys = set(snapshot.delivery_delay) | {(lane, status) for lane in lanes for status in _FINAL_STATUSES}
    for key in sorted(keys):
        histogram = snapshot.delivery_delay.get(key)
        counts = histogram.counts if histogram else (0,) * (len(DELAY_BUCKETS) + 1)
        buckets = []
        cumulative = 0
        for bound, count in zip((*_BOUNDS, "+Inf"), counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric(list(key), buckets, histogram.total if histogram else 0.0)
    return family


def _source_families(line_stats: Mapping[str, LogSourceStats]) -> Iterator[Metric]:
    lines = CounterMetricFamily(
        "mtaq_log_lines_total", "Mail log lines read, by parse result.", labels=["source", "result"])
    reopens = CounterMetricFamily(
        "mtaq_log_reopens_total", "Times the mail log was reopened (rotation, truncation, recovery).",
        labels=["source"])
    last = GaugeMetricFamily(
        "mtaq_log_last_line_timestamp_seconds", "Unix time at which a line was last read from the mail log.",
        labels=["source"])
    for source in sorted(line_stats):
        stats = line_stats[source]
        for result in LINE_RESULTS:
            lines.add_metric([source, result], stats.lines.get(result, 0))
        reopens.add_metric([source], stats.reopens)
        if stats.last_line_time is not None:
            last.add_metric([source], stats.last_line_time)
    yield lines
    yield reopens
    yield last

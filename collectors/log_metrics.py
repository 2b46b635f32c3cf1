"""Delivery-log metric families: layer 3 of the log collectors (SPEC §5), no parsing here.

``log_families`` renders one ``AccountingSnapshot`` per MTA instance plus per-source line
statistics. Sample::

    mtaq_delivery_attempts_total{lane="normal",mta="postfix",mta_instance="postfix",provider="google",status="deferred"} 12.0
    mtaq_messages_deferred_total{lane="normal",mta="postfix",mta_instance="postfix",provider="google"} 3.0
    mtaq_bounces_total{lane="normal",mta="postfix",mta_instance="postfix",provider="other",reason="user_unknown",type="hard"} 1.0
    mtaq_delivery_delay_seconds_bucket{lane="normal",le="60.0",mta="postfix",mta_instance="postfix",status="sent"} 40.0
    mtaq_notifications_total{mta="postfix",mta_instance="postfix",type="non_delivery"} 2.0
    mtaq_log_lines_total{mta="postfix",result="unparsed",source="/var/log/mail.log"} 0.0

Zero-filled series (per instance), so that rates and ratios exist before the first event:

- ``mtaq_messages_received_total``: every configured lane;
- ``mtaq_delivery_attempts_total``: every lane x status with ``provider="other"``, and all three
  statuses for each (lane, provider) pair seen; not every provider x lane x status, which would
  multiply series that never move;
- ``mtaq_messages_deferred_total``: each (lane, provider) pair with attempts;
- ``mtaq_bounces_total``: lane x type with provider and reason ``other``;
  ``mtaq_dead_letters_total``: each lane with provider and reason ``other``;
- ``mtaq_delivery_delay_seconds``: every lane x final status (sent, bounced, expired);
- ``mtaq_soft_bounce_deferrals_total``: reason ``other``; ``mtaq_notifications_total``: every type;
- ``mtaq_log_lines_total``: every source x result.
"""  # noqa: E501 - sample exposition lines are kept whole

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.metrics_core import Metric

from collectors import families as F
from collectors.classify import OTHER
from collectors.delivery_accounting import (
    BOUNCED,
    DEFERRED,
    DELAY_BUCKETS,
    EXPIRED,
    HARD,
    NOTIFICATION_TYPES,
    SELF,
    SENT,
    SOFT,
    AccountingSnapshot,
)
from collectors.log_pipeline import LINE_RESULTS

_ATTEMPT_STATUSES = (SENT, DEFERRED, BOUNCED)
_FINAL_STATUSES = (SENT, BOUNCED, EXPIRED)
_BOUNDS = tuple(str(float(bound)) for bound in DELAY_BUCKETS)


@dataclass(frozen=True, slots=True)
class LogSourceStats:
    """What one log source contributed: lines by result, reopens, when a line was last read."""

    lines: Mapping[str, int] = field(default_factory=dict)
    reopens: int = 0
    last_line_time: float | None = None


def _add(family: Metric, prefix: tuple[str, str], values: Mapping[tuple[str, ...], float]) -> None:
    for key in sorted(values):
        family.add_metric([*prefix, *key], values[key])


def _filled(values: Mapping[tuple[str, ...], int], keys: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
    filled = dict.fromkeys(keys, 0)
    filled.update(values)
    return filled


def log_families(snapshots: Mapping[str, AccountingSnapshot], line_stats: Mapping[str, LogSourceStats],
                 lanes: tuple[str, ...], mta: str) -> Iterator[Metric]:
    """The SPEC §5 delivery and log families, one snapshot per ``mta_instance`` (see the module docstring)."""
    received, attempts, deferred_messages, deferrals = (
        F.RECEIVED.new(), F.ATTEMPTS.new(), F.MESSAGES_DEFERRED.new(), F.DEFERRALS.new())
    bounces, dead_letters, delay, self_deferrals = (
        F.BOUNCES.new(), F.DEAD_LETTERS.new(), F.DELIVERY_DELAY.new(), F.SELF_DEFERRALS.new())
    probes, tracked, evicted = F.VERIFY_PROBES.new(), F.TRACKED.new(), F.EVICTED.new()
    negative_delays = F.NEGATIVE_DELAYS.new()
    soft_bounces, notifications = F.SOFT_BOUNCE_DEFERRALS.new(), F.NOTIFICATIONS.new()
    for instance, snapshot in sorted(snapshots.items()):
        prefix = (mta, instance)
        pairs = {(lane, provider) for lane, provider, _ in snapshot.delivery_attempts}
        _add(received, prefix, _filled(snapshot.messages_received, ((lane,) for lane in lanes)))
        _add(attempts, prefix, _filled(
            snapshot.delivery_attempts,
            [(lane, OTHER, status) for lane in lanes for status in _ATTEMPT_STATUSES]
            + [(lane, provider, status) for lane, provider in pairs for status in _ATTEMPT_STATUSES]))
        _add(deferred_messages, prefix, _filled(snapshot.messages_deferred, pairs))
        _add(deferrals, prefix, snapshot.deferrals)
        _add(bounces, prefix, _filled(
            snapshot.bounces, ((lane, OTHER, kind, OTHER) for lane in lanes for kind in (HARD, SOFT))))
        _add(dead_letters, prefix, _filled(snapshot.dead_letters, ((lane, OTHER, OTHER) for lane in lanes)))
        _add_delay(delay, prefix, snapshot, lanes)
        _add(self_deferrals, prefix, _filled(snapshot.self_deferrals, [(SELF,)]))
        _add(probes, prefix, snapshot.probes)
        _add(soft_bounces, prefix, _filled(snapshot.soft_bounces, [(OTHER,)]))
        _add(notifications, prefix, _filled(snapshot.notifications, ((kind,) for kind in NOTIFICATION_TYPES)))
        tracked.add_metric(list(prefix), snapshot.tracked_messages)
        evicted.add_metric(list(prefix), snapshot.evicted_messages)
        negative_delays.add_metric(list(prefix), snapshot.negative_delays)
    yield from (received, attempts, deferred_messages, deferrals, bounces, dead_letters, delay, self_deferrals,
                probes, soft_bounces, notifications)
    yield from _source_families(line_stats, mta)
    yield from (tracked, evicted, negative_delays)


def _add_delay(family: Metric, prefix: tuple[str, str], snapshot: AccountingSnapshot,
               lanes: tuple[str, ...]) -> None:
    keys = set(snapshot.delivery_delay) | {(lane, status) for lane in lanes for status in _FINAL_STATUSES}
    for key in sorted(keys):
        histogram = snapshot.delivery_delay.get(key)
        counts = histogram.counts if histogram else (0,) * (len(DELAY_BUCKETS) + 1)
        buckets = []
        cumulative = 0
        for bound, count in zip((*_BOUNDS, "+Inf"), counts, strict=True):
            cumulative += count
            buckets.append((bound, cumulative))
        family.add_metric([*prefix, *key], buckets, histogram.total if histogram else 0.0)


def _source_families(line_stats: Mapping[str, LogSourceStats], mta: str) -> Iterator[Metric]:
    lines, reopens, last = F.LOG_LINES.new(), F.LOG_REOPENS.new(), F.LOG_LAST_LINE.new()
    for source in sorted(line_stats):
        stats = line_stats[source]
        for result in LINE_RESULTS:
            lines.add_metric([mta, source, result], stats.lines.get(result, 0))
        reopens.add_metric([mta, source], stats.reopens)
        if stats.last_line_time is not None:
            last.add_metric([mta, source], stats.last_line_time)
    yield from (lines, reopens, last)

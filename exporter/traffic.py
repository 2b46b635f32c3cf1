"""pflogsumm's traffic tables from Postfix (and Exim) log records, for ``mtaq-exporter analyze``.

The delivery accounting counts by bounded labels (lane, provider, reason); an offline report also
wants what pflogsumm shows: traffic per hour, delivery per recipient domain and the top senders.
:class:`Traffic` observes the parsed records on their way to the accounting and counts them as
pflogsumm does, so that its numbers can be checked against pflogsumm's:

- per hour (local time of the line): messages received from outside (smtpd, pickup), and
  ``status=sent``, ``status=deferred`` and ``status=bounced`` lines, plus expiries;
- per recipient domain: the same status lines, the mean delay of the sent ones and the largest
  delay of any;
- per sender: messages queued (once per queue id, the MTA's own null-sender notifications left
  out) and their bytes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from collectors.classify import domain_of
from collectors.delivery_accounting import BOUNCED, DEFERRED, SENT, InstanceAccounts
from collectors.exim import log_parse as exim
from collectors.log_pipeline import EventHandlers, LogFormat
from collectors.postfix.log_parse import Delivery, Expired, MessageQueued, Removed, Submitted

HOUR_COLUMNS = ("received", SENT, DEFERRED, BOUNCED, "expired")
#: The hour of lines without a timestamp (a bare journald message).
NO_TIME = "(no time)"


def mean(total: float, count: int) -> float | None:
    """``total / count`` in milliseconds' precision, None for no observations.

    Rounded to 9 decimals first: a float sum depends on the order of its terms in its last bits,
    and a mean that lies on a half millisecond (replicated logs) would otherwise show either
    neighbour, depending on whether one process or several added up the log.
    """
    return round(round(total / count, 9), 3) if count else None


@dataclass
class _Domain:
    sent: int = 0
    deferred: int = 0
    bounced: int = 0
    sent_delay: float = 0.0
    max_delay: float = 0.0


class Traffic:
    """Counts records per hour, recipient domain and sender (see the module docstring)."""

    def __init__(self) -> None:
        self.hours: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(HOUR_COLUMNS, 0))
        self.domains: dict[str, _Domain] = defaultdict(_Domain)
        self.senders: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # messages, bytes
        self._queued: set[tuple[str | None, str]] = set()
        self._hour_labels: dict[int, str] = {}
        self._expired_ids: set[tuple[str | None, str]] = set()
        self._observers: dict[type, Callable[[Any], None]] = {
            Submitted: self._submitted, MessageQueued: self._queued_message, Delivery: self._delivery,
            Expired: self._expired, Removed: self._removed,
            exim.Arrival: self._exim_arrival, exim.Delivery: self._exim_delivery, exim.Cancelled: self._exim_expired,
            exim.Completed: self._removed}

    def observing(self, log_format: LogFormat) -> LogFormat:
        """``log_format`` with every record also shown to this observer before the accounting gets it."""

        def events(accounts: InstanceAccounts) -> EventHandlers:
            handlers = log_format.events(accounts)
            return {kind: self._wrap(self._observers.get(kind), handler) for kind, handler in handlers.items()}

        return replace(log_format, events=events)

    @staticmethod
    def _wrap(observe: Callable[[Any], None] | None, handler: Callable[[Any], None]) -> Callable[[Any], None]:
        if observe is None:
            return handler

        def both(record: Any) -> None:
            observe(record)
            handler(record)

        return both

    def _hour(self, timestamp: float | None) -> str:
        if timestamp is None:
            return NO_TIME
        # strftime per record would cost more than the rest of the observer: one per minute of log.
        minute = int(timestamp // 60)
        label = self._hour_labels.get(minute)
        if label is None:
            label = self._hour_labels[minute] = time.strftime("%Y-%m-%d %H:00", time.localtime(timestamp))
        return label

    def _submitted(self, record: Submitted) -> None:
        self.hours[self._hour(record.timestamp)]["received"] += 1

    def _queued_message(self, record: MessageQueued) -> None:
        key = (record.instance, record.qid)
        if record.sender and key not in self._queued:  # qmgr logs a message again after each deferral
            self._queued.add(key)
            totals = self.senders[record.sender.lower()]
            totals[0] += 1
            totals[1] += record.size

    def _delivery(self, record: Delivery) -> None:
        if record.probe or record.status not in (SENT, DEFERRED, BOUNCED):
            return
        self._status_line(record.timestamp, record.status, record.to, record.delay)

    def _status_line(self, timestamp: float | None, status: str, recipient: str, delay: float | None) -> None:
        """One delivery status line, per hour and per recipient domain (Postfix's and Exim's alike)."""
        self.hours[self._hour(timestamp)][status] += 1
        domain = self.domains[domain_of(recipient) or "(local)"]
        setattr(domain, status, getattr(domain, status) + 1)
        delay = delay or 0.0
        if status == SENT:
            domain.sent_delay += delay
        domain.max_delay = max(domain.max_delay, delay)

    def _expired(self, record: Expired) -> None:
        self.hours[self._hour(record.timestamp)]["expired"] += 1

    def _removed(self, record: Removed | exim.Completed) -> None:
        # The message is gone: its queue id may name another message later (and the sets stay small).
        self._queued.discard((record.instance, record.qid))
        self._expired_ids.discard((record.instance, record.qid))

    # Exim: "<=" is both the arrival from outside and the queueing; Exim's own bounces and warnings
    # ("<= <> R=<id>") are left out, as pflogsumm leaves out Postfix's.

    def _exim_arrival(self, record: exim.Arrival) -> None:
        if record.reference is not None and not record.sender:
            return
        self.hours[self._hour(record.timestamp)]["received"] += 1
        if record.sender:
            totals = self.senders[record.sender.lower()]
            totals[0] += 1
            totals[1] += record.size or 0

    def _exim_delivery(self, record: exim.Delivery) -> None:
        if record.retry_timeout:  # the message's expiry, once per message as Postfix logs it
            self._exim_expired(record)
            return
        self._status_line(record.timestamp, record.status, record.address, record.queue_time)

    def _exim_expired(self, record: exim.Delivery | exim.Cancelled) -> None:
        key = (record.instance, record.qid)
        if key not in self._expired_ids:
            self._expired_ids.add(key)
            self.hours[self._hour(record.timestamp)]["expired"] += 1

    def tables(self) -> tuple[dict[str, dict[str, int]], dict[str, _Domain], dict[str, list[int]]]:
        """The counts alone (hours, domains, senders), picklable: for ``add`` in another process."""
        return dict(self.hours), dict(self.domains), dict(self.senders)

    def add(self, tables: tuple[dict[str, dict[str, int]], dict[str, _Domain], dict[str, list[int]]]) -> None:
        """Add the ``tables()`` of an observer that saw other messages of the same logs."""
        hours, domains, senders = tables
        for hour, counts in hours.items():
            row = self.hours[hour]
            for column, n in counts.items():
                row[column] += n
        for name, other in domains.items():
            domain = self.domains[name]
            domain.sent += other.sent
            domain.deferred += other.deferred
            domain.bounced += other.bounced
            domain.sent_delay += other.sent_delay
            domain.max_delay = max(domain.max_delay, other.max_delay)
        for sender, (messages, size) in senders.items():
            totals = self.senders[sender]
            totals[0] += messages
            totals[1] += size

    def report(self, top: int) -> dict[str, Any]:
        """``per_hour`` (every hour seen, in order), ``recipient_domains`` and ``senders`` (the
        ``top`` largest of each)."""
        domains = sorted(self.domains.items(), key=lambda kv: (-(kv[1].sent + kv[1].deferred + kv[1].bounced), kv[0]))
        senders = sorted(self.senders.items(), key=lambda kv: (-kv[1][0], -kv[1][1], kv[0]))
        return {
            "per_hour": [{"hour": hour, **counts} for hour, counts in sorted(self.hours.items())],
            "recipient_domains": [
                {"domain": name, "sent": d.sent, "deferred": d.deferred, "bounced": d.bounced,
                 "mean_delay_seconds": mean(d.sent_delay, d.sent),
                 "max_delay_seconds": d.max_delay} for name, d in domains[:top]],
            "senders": [{"sender": sender, "messages": n, "bytes": size} for sender, (n, size) in senders[:top]],
        }


"""Exim log records to delivery-accounting events: layer 2 of the Exim log pipeline.

``EXIM_LOG`` is the Exim :class:`LogFormat`: its parser (``log_parse``) and this adapter. What
each record means to the shared accounting (``collectors/delivery_accounting.py``):

- ``<=`` (and ``(=``): mail from outside is ``submitted`` and ``received``; a message Exim made
  itself (null sender and ``R=<id>``: a bounce or a warning about message ``<id>``) is a
  ``notification``: ``delay`` when its logged subject is Exim's delay warning (``+subject``),
  ``non_delivery`` when that message just had a failure, else ``other`` (without the subject the
  line does not say whether it is a delay warning or a success DSN);
- ``=>`` ``->`` ``>>``: ``sent``; ``==``: ``deferred`` (Exim's own deferrals, ``retry time not
  reached``, ``domain is held``, ``concurrency limit reached for transport``, fall into the
  reason ``self`` and count apart); ``**``: ``bounced``, hard or soft by its DSN;
- ``** … retry timeout exceeded``: the message ``expired`` (a dead letter with its last
  deferral's context; its pending recipients become soft bounces); so does a frozen message
  ``cancelled by timeout_frozen_after``, and ``cancelled by <user>`` (``exim -Mg``) is a forced
  expiry;
- ``Completed``: ``removed``.

A delivery without ``H=`` (appendfile, pipe, LMTP over a socket) or to a host the classifier
calls local (loopback, a configured content filter) is provider ``local``; so is ``*>``, a delivery
``-N`` suppressed. A deferral or failure without ``H=`` is not (the connections failed, or routing
did): its provider comes from the recipient's domain. The transport (``T=``) is what lane rules
call ``service``.
"""

from __future__ import annotations

from collections import OrderedDict

from collectors.classify import OTHER, Classifier
from collectors.delivery_accounting import InstanceAccounts
from collectors.exim.instance import DEFAULT_INSTANCE, MTA
from collectors.exim.log_parse import Arrival, Cancelled, Completed, Delivery, EximLineParser
from collectors.log_pipeline import EventHandlers, LogFormat

#: Messages with a recent failure remembered, to tell a bounce from other notifications.
_FAILED_LIMIT = 4096


class EximEvents:
    """The adapter: one method per record type that means something to the accounting."""

    def __init__(self, accounts: InstanceAccounts, classifier: Classifier) -> None:
        self._account = accounts.get
        self._local_hop = classifier.local_hop
        self._failed: OrderedDict[str, None] = OrderedDict()

    def handlers(self) -> EventHandlers:
        """Record type -> event method."""
        return {Arrival: self.arrival, Delivery: self.delivery, Completed: self.completed,
                Cancelled: self.cancelled}

    def arrival(self, record: Arrival) -> None:
        """A message entered the spool: from outside, or made by Exim about another message."""
        accounting = self._account(record.instance)
        if record.reference is not None and not record.sender:
            kind = ("delay" if record.delay_warning else
                    "non_delivery" if record.reference in self._failed else OTHER)
            accounting.notification(record.qid, kind, record.timestamp, record.instance)
            return
        accounting.submitted(record.qid, record.timestamp, record.instance)
        accounting.received(record.qid, record.sender, record.timestamp, record.instance)

    def delivery(self, record: Delivery) -> None:
        """One recipient's outcome; a retry timeout is the message's expiry."""
        accounting = self._account(record.instance)
        if record.status == "bounced":
            self._remember_failure(record.qid)
            if record.retry_timeout:
                accounting.expired(record.qid, None, record.timestamp, False, record.instance)
                return
        host = record.host
        if host is None:
            # Delivered without a remote host: a local transport (appendfile, pipe, LMTP over a
            # socket). A deferral or failure without one is no such proof: remote connections
            # that all failed, or a routing failure, name no host on the summary line.
            local = record.status == "sent"
        else:
            local = record.flag == "*>" or self._local_hop(
                f"{host}[{record.ip}]:{record.port or ''}" if record.ip else host, None)
        accounting.delivery(record.qid, record.address, record.status, record.timestamp, host, record.dsn,
                            record.text, record.queue_time, record.instance, record.transport, local, False)

    def cancelled(self, record: Cancelled) -> None:
        """Every recipient failed at once: a frozen message timed out, or an administrator gave up."""
        self._remember_failure(record.qid)
        self._account(record.instance).expired(record.qid, None, record.timestamp, not record.timed_out,
                                               record.instance)

    def completed(self, record: Completed) -> None:
        """The message leaves the spool."""
        self._account(record.instance).removed(record.qid)

    def _remember_failure(self, qid: str) -> None:
        failed = self._failed
        failed[qid] = None
        if len(failed) > _FAILED_LIMIT:
            failed.popitem(last=False)


EXIM_LOG = LogFormat(MTA, DEFAULT_INSTANCE, lambda clock: EximLineParser(clock, DEFAULT_INSTANCE),
                     lambda accounts: EximEvents(accounts, accounts.classifier).handlers())

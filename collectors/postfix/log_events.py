"""Postfix log records to delivery-accounting events: layer 2 of the Postfix log pipeline.

``POSTFIX_LOG`` is the Postfix :class:`LogFormat`: its parser (``log_parse``) and this adapter,
which routes each record to its instance's accounting (the first element of the syslog program
name, ``postfix`` or ``postfix-bulk``) and calls the matching event. It also decides, with the
classifier, which hops stay on the host (content filters, local mailboxes: provider ``local``).
"""

from __future__ import annotations

from collectors.classify import OTHER, Classifier, relay_host
from collectors.delivery_accounting import InstanceAccounts
from collectors.log_pipeline import EventHandlers, LogFormat
from collectors.postfix.instance import DEFAULT_INSTANCE, MTA
from collectors.postfix.log_parse import (
    BounceNotice,
    Delivery,
    Expired,
    MessageQueued,
    PostfixLineParser,
    Removed,
    Submitted,
)

#: bounce(8)'s "<who> <kind> notification" -> ``mtaq_notifications_total{type}`` (sender and
#: postmaster copies alike: each is a message Postfix made).
NOTIFICATION_KINDS = {"non-delivery": "non_delivery", "delay": "delay", "delivery status": "delivery_status"}
_HOP_CACHE_LIMIT = 4096


class PostfixEvents:
    """The adapter: one method per record type that means something to the accounting."""

    def __init__(self, accounts: InstanceAccounts, classifier: Classifier) -> None:
        # The mapping's own lookup: no Python-level call for an instance already seen.
        self._account = accounts.by_instance.__getitem__
        self._local_hop = classifier.local_hop
        # (relay, service) -> (host named by the relay or None, whether the hop stays on the host):
        # a few next hops carry all the traffic, and both answers cost more than the lookup.
        self._hops: dict[tuple[str | None, str | None], tuple[str | None, bool]] = {}

    def handlers(self) -> EventHandlers:
        """Record type -> event method."""
        return {MessageQueued: self.queued, Submitted: self.submitted, Delivery: self.delivery,
                BounceNotice: self.notification, Expired: self.expired, Removed: self.removed}

    # Positional calls: these run for every record, and keywords cost measurably more.

    def submitted(self, record: Submitted) -> None:
        """smtpd, qmqpd or pickup took a message from outside."""
        self._account(record.instance).submitted(record.qid, record.timestamp, record.instance)

    def queued(self, record: MessageQueued) -> None:
        """qmgr took the message into the active queue (logged again after each deferral)."""
        self._account(record.instance).received(record.qid, record.sender, record.timestamp, record.instance)

    def notification(self, record: BounceNotice) -> None:
        """bounce(8) queued a notification (``new_qid``) about ``qid``."""
        kind = record.notice.partition(" ")[2].removesuffix(" notification")
        self._account(record.instance).notification(record.new_qid, NOTIFICATION_KINDS.get(kind, OTHER),
                                                    record.timestamp, record.instance)

    def delivery(self, record: Delivery) -> None:
        """A delivery status line; address-verification probes are counted apart."""
        instance = record.instance
        accounting = self._account(instance)
        if record.probe:
            accounting.probe(record.status)
            return
        relay, service, text = record.relay, record.service, record.text
        hop = self._hops.get((relay, service))
        if hop is None:
            hop = self._hop(relay, service)
        host, local = hop
        if host is None:  # no host in the relay (relay=none): the reply text may name it
            host = relay_host(relay, text)
        accounting.delivery(record.qid, record.to, record.status, record.timestamp, host, record.dsn, text,
                            record.delay, instance, service, local, record.soft_bounce)

    def _hop(self, relay: str | None, service: str | None) -> tuple[str | None, bool]:
        hop = (relay_host(relay), self._local_hop(relay, service))
        if len(self._hops) >= _HOP_CACHE_LIMIT:
            self._hops.clear()
        self._hops[(relay, service)] = hop
        return hop

    def expired(self, record: Expired) -> None:
        """Retries ran out: the message goes back to its sender."""
        self._account(record.instance).expired(record.qid, record.sender, record.timestamp, record.forced,
                                               record.instance)

    def removed(self, record: Removed) -> None:
        """The queue file is gone."""
        self._account(record.instance).removed(record.qid)


POSTFIX_LOG = LogFormat(MTA, DEFAULT_INSTANCE, PostfixLineParser,
                        lambda accounts: PostfixEvents(accounts, accounts.classifier).handlers())

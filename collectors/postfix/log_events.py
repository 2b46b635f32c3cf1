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


class PostfixEvents:
    """The adapter: one method per record type that means something to the accounting."""

    def __init__(self, accounts: InstanceAccounts, classifier: Classifier) -> None:
        self._account = accounts.get
        self._local_hop = classifier.local_hop

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
        accounting = self._account(record.instance)
        if record.probe:
            accounting.probe(record.status)
            return
        relay = record.relay
        accounting.delivery(
            record.qid, record.to, record.status, record.timestamp, relay_host(relay, record.text),
            record.dsn, record.text, record.delay, record.instance, record.service,
            self._local_hop(relay, record.service), record.soft_bounce)

    def expired(self, record: Expired) -> None:
        """Retries ran out: the message goes back to its sender."""
        self._account(record.instance).expired(record.qid, record.sender, record.timestamp, record.forced,
                                               record.instance)

    def removed(self, record: Removed) -> None:
        """The queue file is gone."""
        self._account(record.instance).removed(record.qid)


POSTFIX_LOG = LogFormat(MTA, DEFAULT_INSTANCE, PostfixLineParser,
                        lambda accounts: PostfixEvents(accounts, accounts.classifier).handlers())

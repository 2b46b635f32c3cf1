"""Delivery accounting: exact counters for scripted message lifecycles (SPEC §3)."""

from __future__ import annotations

import threading

import pytest

from collectors.classify import ClassificationConfig, Classifier
from collectors.delivery_accounting import DELAY_BUCKETS, DeliveryAccounting
from collectors.log_pipeline import LogProcessor
from collectors.postfix.log_events import POSTFIX_LOG

GMAIL_421 = ("host gmail-smtp-in.l.google.com[142.250.1.26] said: 421-4.7.28 [192.0.2.1] Our system has "
             "detected an unusual rate of unsolicited mail originating from your IP address (in reply to RCPT TO)")
YAHOO_421 = ("host mta7.am0.yahoodns.net[98.136.96.77] said: 421 4.7.0 [TSS04] Messages from 192.0.2.1 "
             "temporarily deferred due to unexpected volume or user complaints (in reply to MAIL FROM command)")
GMAIL_MX = "gmail-smtp-in.l.google.com"
YAHOO_MX = "mta7.am0.yahoodns.net"


def bucket(seconds: float) -> int:
    """Index of the (non-cumulative) histogram bucket an observation lands in."""
    return next((i for i, bound in enumerate(DELAY_BUCKETS) if seconds <= bound), len(DELAY_BUCKETS))


@pytest.fixture
def acc() -> DeliveryAccounting:
    return DeliveryAccounting(Classifier(), clock=lambda: 5e9)


def test_sent_message(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "news@app.example", timestamp=1000.0, instance="postfix")
    acc.delivery("Q1", "someone@gmail.com", "sent", timestamp=1001.0, host=GMAIL_MX, dsn="2.0.0",
                 text="250 2.0.0 OK", delay=1.2, instance="postfix", service="smtp")
    acc.removed("Q1")
    snap = acc.snapshot()
    assert snap.messages_received == {("normal",): 1}
    assert snap.delivery_attempts == {("normal", "google", "sent"): 1}
    assert snap.messages_deferred == {}
    assert snap.deferrals == {}
    assert snap.bounces == {}
    histogram = snap.delivery_delay[("normal", "sent")]
    assert histogram.count == 1
    assert histogram.total == pytest.approx(1.2)
    assert histogram.counts[bucket(1.2)] == 1 and bucket(1.2) == 1
    assert snap.tracked_messages == 0


def test_deferred_twice_then_sent(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "news@app.example", timestamp=1000.0)
    acc.delivery("Q1", "a@gmail.com", "deferred", timestamp=1001.0, host=GMAIL_MX, dsn="4.7.28", text=GMAIL_421,
                 delay=1.0)
    acc.received("Q1", "news@app.example", timestamp=1600.0)  # qmgr logs the message again on each retry
    acc.delivery("Q1", "a@gmail.com", "deferred", timestamp=1601.0, host=GMAIL_MX, dsn="4.7.28", text=GMAIL_421,
                 delay=601.0)
    acc.delivery("Q1", "a@gmail.com", "sent", timestamp=4600.0, host=GMAIL_MX, dsn="2.0.0", text="250 OK",
                 delay=3600.0)
    acc.removed("Q1")
    snap = acc.snapshot()
    assert snap.messages_received == {("normal",): 1}
    assert snap.delivery_attempts == {("normal", "google", "deferred"): 2, ("normal", "google", "sent"): 1}
    assert sum(snap.delivery_attempts.values()) == 3
    assert snap.messages_deferred == {("normal", "google"): 1}
    assert snap.deferrals == {("google", "rate_limited"): 2}
    assert set(snap.delivery_delay) == {("normal", "sent")}
    histogram = snap.delivery_delay[("normal", "sent")]
    assert histogram.count == 1
    assert histogram.counts[bucket(3600)] == 1
    assert snap.bounces == {}
    assert snap.reason_samples == {("deferred", "google", "rate_limited"): GMAIL_421}


@pytest.mark.parametrize(("dsn", "text", "kind", "reason"), [
    ("5.1.1", "host mx said: 550 5.1.1 <a@b>: Recipient address rejected: User unknown", "hard", "user_unknown"),
    ("5.7.1", "host mx said: 554 5.7.1 blocked using zen.spamhaus.org", "hard", "blocklisted"),
    ("5.2.2", "host mx said: 552 5.2.2 Mailbox full", "soft", "mailbox_full"),
    ("5.2.1", "host mx said: 550 5.2.1 The email account that you tried to reach is disabled", "soft", "user_unknown"),
    ("4.4.1", "connect to mx[1.2.3.4]:25: Connection timed out", "soft", "connection"),
    (None, "unknown user: \"x\"", "hard", "user_unknown"),
])
def test_bounce_types(acc: DeliveryAccounting, dsn: str | None, text: str, kind: str, reason: str) -> None:
    acc.received("Q1", "a@app.example", timestamp=1000.0)
    acc.delivery("Q1", "x@example.net", "bounced", timestamp=1002.0, dsn=dsn, text=text, delay=2.0)
    snap = acc.snapshot()
    assert snap.bounces == {("normal", "other", kind, reason): 1}
    assert snap.delivery_attempts == {("normal", "other", "bounced"): 1}
    assert snap.delivery_delay[("normal", "bounced")].count == 1
    assert snap.dead_letters == {}


def test_expiry_makes_a_dead_letter_and_soft_bounces_per_pending_recipient(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "news@app.example", timestamp=1000.0, instance="postfix")
    acc.delivery("Q1", "a@gmail.com", "deferred", timestamp=1100.0, host=GMAIL_MX, dsn="4.7.28", text=GMAIL_421,
                 delay=100.0)
    acc.delivery("Q1", "b@yahoo.com", "deferred", timestamp=1100.0, host=YAHOO_MX, dsn="4.7.0", text=YAHOO_421,
                 delay=100.0)
    acc.delivery("Q1", "c@example.net", "sent", timestamp=1100.0, host="mx.example.net", dsn="2.0.0",
                 text="250 ok", delay=100.0)
    expiry = 1000.0 + 432000
    acc.expired("Q1", "news@app.example", timestamp=expiry, instance="postfix")
    acc.expired("Q1", "news@app.example", timestamp=expiry)  # logged twice: still one dead letter
    acc.removed("Q1")
    snap = acc.snapshot()
    assert snap.dead_letters == {("normal", "yahoo", "rate_limited"): 1}  # the last deferral seen
    assert snap.bounces == {("normal", "google", "soft", "rate_limited"): 1,
                            ("normal", "yahoo", "soft", "rate_limited"): 1}
    expired = snap.delivery_delay[("normal", "expired")]
    assert expired.count == 2
    assert expired.total == pytest.approx(2 * 432000)
    assert expired.counts[bucket(432000)] == 2
    assert snap.delivery_delay[("normal", "sent")].count == 1
    assert snap.messages_deferred == {("normal", "google"): 1}
    assert snap.tracked_messages == 0
    (dead,) = snap.dead_letter_log
    assert (dead.qid, dead.sender, dead.instance, dead.lane, dead.provider, dead.reason) == (
        "Q1", "news@app.example", "postfix", "normal", "yahoo", "rate_limited")
    assert (dead.first_seen, dead.expired_at, dead.forced, dead.attempts) == (1000.0, expiry, False, 3)
    assert dead.pending_recipients == 2
    assert dead.recipients == ("a@gmail.com", "b@yahoo.com")
    assert dead.providers == ("google", "yahoo", "other")
    assert dead.text == YAHOO_421


def test_expiry_without_any_state(acc: DeliveryAccounting) -> None:
    acc.expired("Q9", "", timestamp=2000.0, forced=True)
    snap = acc.snapshot()
    assert snap.dead_letters == {("normal", "other", "other"): 1}
    assert snap.bounces == {}
    assert snap.delivery_delay == {}
    assert snap.dead_letter_log[0].forced is True
    assert snap.dead_letter_log[0].first_seen is None


def test_expiry_uses_arrival_implied_by_delay(acc: DeliveryAccounting) -> None:
    # The agent started after the message arrived: delay= on a deferral dates the arrival.
    acc.delivery("Q1", "a@gmail.com", "deferred", timestamp=10_000.0, host=GMAIL_MX, dsn="4.7.28",
                 text=GMAIL_421, delay=4000.0)
    acc.expired("Q1", "s@app.example", timestamp=16_000.0)
    histogram = acc.snapshot().delivery_delay[("normal", "expired")]
    assert histogram.total == pytest.approx(10_000.0)


def test_self_deferrals_are_isolated(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "news@app.example", timestamp=1000.0)
    acc.delivery("Q1", "b@yahoo.com", "deferred", timestamp=1001.0, dsn="4.4.2",
                 text="delivery temporarily suspended: lost connection with mta7.am0.yahoodns.net[98.136.216.22] "
                      "while sending RCPT TO", delay=1.0)
    acc.delivery("Q1", "c@gmail.com", "deferred", timestamp=1002.0, dsn="4.3.2", text="deferred transport",
                 delay=2.0)
    snap = acc.snapshot()
    assert snap.self_deferrals == {("connection",): 1, ("self",): 1}
    assert snap.delivery_attempts == {}
    assert snap.deferrals == {}
    assert snap.messages_deferred == {}
    # Still pending: an expiry turns them into soft bounces with the suspension's cause.
    acc.expired("Q1", "news@app.example", timestamp=5000.0)
    snap = acc.snapshot()
    assert snap.bounces == {("normal", "yahoo", "soft", "connection"): 1, ("normal", "google", "soft", "self"): 1}
    assert snap.dead_letters == {("normal", "yahoo", "connection"): 1}


def test_self_deferral_does_not_replace_the_real_cause(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "news@app.example", timestamp=1000.0)
    acc.delivery("Q1", "b@yahoo.com", "deferred", timestamp=1001.0, host=YAHOO_MX, dsn="4.7.0", text=YAHOO_421)
    acc.delivery("Q1", "b@yahoo.com", "deferred", timestamp=2001.0, dsn="4.7.0",
                 text="delivery temporarily suspended: host mta7.am0.yahoodns.net[98.136.96.77] refused to talk "
                      "to me: 421 4.7.0 [TSS04] Messages temporarily deferred")
    acc.expired("Q1", "news@app.example", timestamp=5000.0)
    snap = acc.snapshot()
    assert snap.self_deferrals == {("rate_limited",): 1}
    assert snap.delivery_attempts == {("normal", "yahoo", "deferred"): 1}
    assert snap.dead_letters == {("normal", "yahoo", "rate_limited"): 1}
    assert snap.bounces == {("normal", "yahoo", "soft", "rate_limited"): 1}


def test_verify_probes_are_excluded() -> None:
    processor = LogProcessor(POSTFIX_LOG, Classifier(), clock=lambda: 5e9)
    processor.process_lines("mail.log", [
        "Nov 27 10:00:01 mx postfix/smtp[1]: 3E29030F8637E: to=<user@yahoo.com>, relay=none, delay=0.01, "
        "delays=0.01/0/0/0, dsn=5.1.1, status=undeliverable-but-not-cached (User unknown in virtual alias table)",
        "Nov 27 10:00:01 mx postfix/smtp[1]: 3E29030F8637F: to=<user@gmail.com>, relay=mx[1.2.3.4]:25, delay=1, "
        "delays=1/0/0/0, dsn=2.1.5, status=deliverable (250 2.1.5 Ok)",
    ])
    snap = processor.accounts.get("postfix").snapshot()
    assert snap.probes == {("undeliverable-but-not-cached",): 1, ("deliverable",): 1}
    assert snap.delivery_attempts == {}
    assert snap.bounces == {}
    assert snap.delivery_delay == {}
    assert snap.tracked_messages == 0
    assert processor.line_counts() == {"mail.log": {"parsed": 2, "ignored": 0, "unparsed": 0}}


def test_delivery_without_queue_manager_line(acc: DeliveryAccounting) -> None:
    acc.delivery("Q1", "a@gmail.com", "sent", timestamp=1000.0, host=GMAIL_MX, delay=5.0)
    snap = acc.snapshot()
    assert snap.messages_received == {}
    assert snap.delivery_attempts == {("normal", "google", "sent"): 1}
    assert snap.tracked_messages == 1


def test_delay_falls_back_to_arrival_when_missing(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "a@app.example", timestamp=1000.0)
    acc.delivery("Q1", "a@gmail.com", "sent", timestamp=1090.0, host=GMAIL_MX)
    assert acc.snapshot().delivery_delay[("normal", "sent")].total == pytest.approx(90.0)


def test_multi_recipient_message(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "news@app.example", timestamp=1000.0)
    acc.delivery("Q1", "r1@example.net", "sent", timestamp=1001.0, delay=1.0)
    acc.delivery("Q1", "r2@gmail.com", "deferred", timestamp=1001.0, host=GMAIL_MX, dsn="4.7.28", text=GMAIL_421,
                 delay=1.0)
    acc.delivery("Q1", "r3@yahoo.com", "deferred", timestamp=1001.0, host=YAHOO_MX, dsn="4.7.0", text=YAHOO_421,
                 delay=1.0)
    acc.delivery("Q1", "r2@gmail.com", "sent", timestamp=2000.0, host=GMAIL_MX, delay=1000.0)
    acc.delivery("Q1", "r3@yahoo.com", "bounced", timestamp=2000.0, host=YAHOO_MX, dsn="5.1.1",
                 text="host mta7.am0.yahoodns.net said: 554 5.1.1 user unknown", delay=1000.0)
    acc.expired("Q1", "news@app.example", timestamp=9000.0)  # nothing pending any more
    snap = acc.snapshot()
    assert snap.messages_received == {("normal",): 1}
    assert snap.messages_deferred == {("normal", "google"): 1}  # once, with the first deferral's provider
    assert snap.deferrals == {("google", "rate_limited"): 1, ("yahoo", "rate_limited"): 1}
    assert snap.delivery_attempts == {
        ("normal", "other", "sent"): 1, ("normal", "google", "deferred"): 1, ("normal", "yahoo", "deferred"): 1,
        ("normal", "google", "sent"): 1, ("normal", "yahoo", "bounced"): 1}
    assert snap.bounces == {("normal", "yahoo", "hard", "user_unknown"): 1}
    assert snap.delivery_delay[("normal", "sent")].count == 2
    assert snap.delivery_delay[("normal", "bounced")].count == 1
    assert ("normal", "expired") not in snap.delivery_delay
    assert snap.dead_letters == {("normal", "yahoo", "rate_limited"): 1}
    assert snap.dead_letter_log[0].pending_recipients == 0


def test_lanes_follow_sender_recipient_instance_and_service() -> None:
    config = ClassificationConfig.model_validate({"lanes": {"rules": [
        {"lane": "high", "match": {"sender": "*@alerts.example"}},
        {"lane": "low", "match": {"instance": "postfix-bulk"}},
        {"lane": "low", "match": {"service": "bulk"}},
        {"lane": "high", "match": {"recipient_domain": "vip.example"}},
    ]}})
    acc = DeliveryAccounting(Classifier(config), clock=lambda: 5e9)
    acc.received("A", "pager@alerts.example", timestamp=1.0, instance="postfix")
    acc.received("B", "news@app.example", timestamp=1.0, instance="postfix-bulk")
    acc.received("C", "news@app.example", timestamp=1.0, instance="postfix")
    acc.delivery("A", "x@example.net", "sent", timestamp=2.0, delay=1.0, instance="postfix", service="smtp")
    acc.delivery("B", "x@example.net", "sent", timestamp=2.0, delay=1.0, instance="postfix-bulk", service="smtp")
    acc.delivery("C", "x@vip.example", "sent", timestamp=2.0, delay=1.0, instance="postfix", service="smtp")
    acc.delivery("C", "y@example.net", "sent", timestamp=2.0, delay=1.0, instance="postfix", service="bulk")
    acc.delivery("D", "y@example.net", "sent", timestamp=2.0, delay=1.0, instance="postfix", service="smtp")
    snap = acc.snapshot()
    assert snap.messages_received == {("high",): 1, ("low",): 1, ("normal",): 1}
    assert snap.delivery_attempts == {("high", "other", "sent"): 2, ("low", "other", "sent"): 2,
                                      ("normal", "other", "sent"): 1}


def test_eviction_by_size(acc: DeliveryAccounting) -> None:
    small = DeliveryAccounting(Classifier(), clock=lambda: 5e9, max_messages=3)
    for i in range(5):
        small.received(f"Q{i}", "a@app.example", timestamp=1000.0 + i)
    snap = small.snapshot()
    assert (snap.tracked_messages, snap.evicted_messages) == (3, 2)
    assert snap.messages_received == {("normal",): 5}
    small.received("Q0", "a@app.example", timestamp=1010.0)  # evicted: seen as new again
    assert small.snapshot().messages_received == {("normal",): 6}


def test_eviction_by_age() -> None:
    acc = DeliveryAccounting(Classifier(), clock=lambda: 5e9, message_ttl=100.0)
    acc.received("OLD", "a@app.example", timestamp=0.0)
    acc.received("NEW", "a@app.example", timestamp=50.0)
    assert acc.snapshot().tracked_messages == 2
    acc.received("NEWER", "a@app.example", timestamp=120.0)  # OLD is past the TTL, NEW is not
    snap = acc.snapshot()
    assert (snap.tracked_messages, snap.evicted_messages) == (2, 1)


def test_a_line_from_the_future_neither_evicts_nor_stops_eviction() -> None:
    clock = [0.0]
    acc = DeliveryAccounting(Classifier(), clock=lambda: clock[0])  # default TTL: 7 days
    acc.received("LIVE", "a@app.example", timestamp=0.0)
    acc.received("ODD", "a@app.example", timestamp=4e9)  # a garbage year in an RFC 3339 stamp
    assert acc.snapshot().evicted_messages == 0
    clock[0] = 8 * 86400.0
    acc.received("NEW", "a@app.example", timestamp=clock[0])  # sweeps still happen: LIVE ages out
    assert acc.snapshot().evicted_messages == 1


def test_dead_letter_log_is_bounded() -> None:
    acc = DeliveryAccounting(Classifier(), clock=lambda: 5e9, dead_letter_limit=2)
    for i in range(3):
        acc.expired(f"Q{i}", "a@app.example", timestamp=float(i))
    snap = acc.snapshot()
    assert [d.qid for d in snap.dead_letter_log] == ["Q1", "Q2"]
    assert snap.dead_letters == {("normal", "other", "other"): 3}


def test_missing_timestamps_use_the_clock() -> None:
    acc = DeliveryAccounting(Classifier(), clock=lambda: 777.0)
    acc.received("Q1", "a@app.example")
    acc.expired("Q1", "a@app.example")
    assert acc.snapshot().dead_letter_log[0].expired_at == 777.0


def test_unknown_status_is_refused(acc: DeliveryAccounting) -> None:
    with pytest.raises(ValueError, match="unknown delivery status"):
        acc.delivery("Q1", "a@b.example", "deliverable")
    assert acc.snapshot().tracked_messages == 0


def test_snapshot_is_an_independent_copy(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "a@app.example", timestamp=1.0)
    snap = acc.snapshot()
    acc.received("Q2", "a@app.example", timestamp=2.0)
    assert snap.messages_received == {("normal",): 1}
    assert acc.snapshot().messages_received == {("normal",): 2}


def test_feeding_while_snapshotting(acc: DeliveryAccounting) -> None:
    def feed() -> None:
        for i in range(20000):
            acc.received(f"Q{i}", "a@app.example", timestamp=float(i))
            acc.delivery(f"Q{i}", f"r{i}@gmail.com", "sent", timestamp=float(i), delay=1.0)
            acc.removed(f"Q{i}")

    thread = threading.Thread(target=feed)
    thread.start()
    while thread.is_alive():
        snap = acc.snapshot()
        assert sum(snap.delivery_attempts.values()) <= sum(snap.messages_received.values())
    thread.join()
    assert acc.snapshot().delivery_attempts == {("normal", "google", "sent"): 20000}


def test_hops_on_the_host_count_under_local_and_the_external_delivery_under_its_provider(
        acc: DeliveryAccounting) -> None:
    """Issue 10: a content-filter hop and the re-injected copy's delivery are one recipient, one provider."""
    acc.submitted("Q1", timestamp=1000.0)
    acc.received("Q1", "a@app.example", timestamp=1000.0)
    acc.delivery("Q1", "x@gmx.de", "deferred", timestamp=1001.0, host="127.0.0.1", dsn="4.4.1",
                 text="connect to 127.0.0.1[127.0.0.1]:10024: Connection refused", local=True)
    acc.delivery("Q1", "x@gmx.de", "sent", timestamp=1002.0, host="127.0.0.1", delay=2.0, local=True)
    acc.submitted("Q2", timestamp=1002.0)  # the content filter re-injects through smtpd
    acc.received("Q2", "a@app.example", timestamp=1002.0)
    acc.delivery("Q2", "x@gmx.de", "sent", timestamp=1003.0, host="mx00.emig.gmx.net", delay=1.0)
    snap = acc.snapshot()
    assert snap.delivery_attempts == {("normal", "local", "deferred"): 1, ("normal", "local", "sent"): 1,
                                      ("normal", "gmx", "sent"): 1}
    assert snap.deferrals == {("local", "connection"): 1}
    assert snap.messages_deferred == {("normal", "local"): 1}
    assert snap.delivery_delay[("normal", "sent")].count == 1  # the hop is not a final outcome
    assert snap.messages_received == {("normal",): 2}  # each queue id, as pflogsumm counts


def test_soft_bounce_is_a_deferral_and_counted_apart(acc: DeliveryAccounting) -> None:
    acc.received("Q1", "a@app.example", timestamp=1000.0)
    acc.delivery("Q1", "x@example.net", "deferred", timestamp=1001.0, dsn="4.1.1",
                 text="host mx said: 550 5.1.1 <x@example.net>: Recipient address rejected: User unknown",
                 soft_bounce=True)
    acc.delivery("Q1", "y@example.net", "deferred", timestamp=1001.0, dsn="4.4.1",
                 text="connect to mx[192.0.2.1]:25: Connection timed out")
    snap = acc.snapshot()
    assert snap.soft_bounces == {("user_unknown",): 1}
    assert snap.deferrals == {("other", "user_unknown"): 1, ("other", "connection"): 1}
    assert snap.delivery_attempts == {("normal", "other", "deferred"): 2}
    assert snap.bounces == {}
    acc.expired("Q1", "a@app.example", timestamp=2000.0)  # still queued until it expires
    assert acc.snapshot().bounces == {("normal", "other", "soft", "user_unknown"): 1,
                                      ("normal", "other", "soft", "connection"): 1}


@pytest.mark.parametrize("notice_first", [True, False])
def test_notifications_are_not_received_mail(acc: DeliveryAccounting, notice_first: bool) -> None:
    """Postfix logs the notification and its queue line in either order (both happen in the demo log)."""
    acc.submitted("Q1", timestamp=1000.0)
    acc.received("Q1", "a@app.example", timestamp=1000.0)
    acc.delivery("Q1", "x@example.net", "bounced", timestamp=1001.0, dsn="5.1.1", text="550 5.1.1 User unknown")
    if notice_first:
        acc.notification("N1", "non_delivery", timestamp=1001.0)
    acc.received("N1", "", timestamp=1001.0)
    if not notice_first:
        acc.notification("N1", "non_delivery", timestamp=1001.0)
    acc.notification("N2", "delay", timestamp=1001.0)
    acc.notification("N3", "made up", timestamp=1001.0)
    acc.submitted("B1", timestamp=1002.0)  # a bounce from elsewhere, received over SMTP: mail like any other
    acc.received("B1", "", timestamp=1002.0)
    snap = acc.snapshot()
    assert snap.messages_received == {("normal",): 2}
    assert snap.notifications == {("non_delivery",): 1, ("delay",): 1, ("other",): 1}


def test_received_once_per_queue_id_and_never_after_a_delivery_first(acc: DeliveryAccounting) -> None:
    acc.submitted("Q1", timestamp=1000.0)
    acc.submitted("Q1", timestamp=1000.0)
    acc.received("Q1", "a@app.example", timestamp=1000.0)
    acc.received("Q1", "a@app.example", timestamp=1300.0)
    acc.delivery("Q2", "x@example.net", "deferred", timestamp=1000.0, dsn="4.4.1", text="lost connection")
    acc.received("Q2", "a@app.example", timestamp=1300.0)  # its first queue line was before the log starts
    assert acc.snapshot().messages_received == {("normal",): 1}


def test_negative_delays_are_observed_as_zero_and_counted(acc: DeliveryAccounting) -> None:
    acc.delivery("Q1", "a@gmail.com", "sent", timestamp=1000.0, host=GMAIL_MX, delay=-5.0)
    acc.received("Q2", "s@example.com", timestamp=2000.0)
    acc.delivery("Q2", "b@gmail.com", "sent", timestamp=1990.0, host=GMAIL_MX)  # line out of order
    snap = acc.snapshot()
    histogram = snap.delivery_delay[("normal", "sent")]
    assert (histogram.count, histogram.total, histogram.counts[0]) == (2, 0.0, 2)
    assert snap.negative_delays == 2

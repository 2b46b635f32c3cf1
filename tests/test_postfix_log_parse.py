"""Postfix log line parser: envelopes, every record kind, the real samples, hostile input."""

from __future__ import annotations

import calendar
import dataclasses
import time
from collections import Counter
from pathlib import Path

import pytest

from collectors.postfix.log_parse import (
    IGNORED_FOREIGN,
    IGNORED_POSTFIX,
    MAX_LINE_CHARS,
    BounceNotice,
    Delivery,
    Expired,
    Ignored,
    MessageQueued,
    PostfixLineParser,
    Removed,
    Submitted,
    Unparsed,
)

SAMPLES = Path(__file__).parent / "fixtures" / "postfix_log" / "samples.log"
NOW = time.mktime((2026, 11, 27, 12, 0, 0, 0, 0, -1))


def local(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))


@pytest.fixture
def parser() -> PostfixLineParser:
    return PostfixLineParser(clock=lambda: NOW)


def sample_lines() -> list[str]:
    return [line for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]


# -- envelope ---------------------------------------------------------------------------------

REMOVED = "ABCDEF1234: removed"


@pytest.mark.parametrize(("line", "timestamp", "instance", "service", "program"), [
    (f"Nov 08 10:07:48 mx postfix/qmgr[1]: {REMOVED}", local(2026, 11, 8, 10, 7, 48), "postfix", "qmgr",
     "postfix/qmgr"),
    (f"Apr  7 15:35:20 123-mail postfix/qmgr[2]: {REMOVED}", local(2026, 4, 7, 15, 35, 20), "postfix", "qmgr",
     "postfix/qmgr"),
    (f"Jan 25 21:25:22 eugeni/eugeni postfix/qmgr[558]: {REMOVED}", local(2026, 1, 25, 21, 25, 22), "postfix",
     "qmgr", "postfix/qmgr"),
    (f"Απρ 15 12:20:28 mx2 postfix/qmgr[6833]: {REMOVED}", None, "postfix", "qmgr", "postfix/qmgr"),
    (f"janv. 15 12:20:28 mx2 postfix/qmgr[6833]: {REMOVED}", None, "postfix", "qmgr", "postfix/qmgr"),
    (f"2025-04-09T08:25:46.392405+00:00 86ea4d14de98 postfix/qmgr[129]: {REMOVED}",
     calendar.timegm((2025, 4, 9, 8, 25, 46)) + 0.392405, "postfix", "qmgr", "postfix/qmgr"),
    (f"2025-08-26T15:30:33.208404+02:00 smailer postfix/qmgr[1]: {REMOVED}",
     calendar.timegm((2025, 8, 26, 13, 30, 33)) + 0.208404, "postfix", "qmgr", "postfix/qmgr"),
    (f"2025-08-26T15:30:33-0500 smailer postfix/qmgr[1]: {REMOVED}",
     calendar.timegm((2025, 8, 26, 20, 30, 33)), "postfix", "qmgr", "postfix/qmgr"),
    (f"2025-08-26T15:30:33Z smailer postfix/qmgr[1]: {REMOVED}",
     calendar.timegm((2025, 8, 26, 15, 30, 33)), "postfix", "qmgr", "postfix/qmgr"),
    (f"2025-08-26T15:30:33.5 smailer postfix/qmgr[1]: {REMOVED}", local(2025, 8, 26, 15, 30, 33) + 0.5,
     "postfix", "qmgr", "postfix/qmgr"),
    (f"Nov 08 10:07:48 mx postfix-bulk/qmgr[1]: {REMOVED}", local(2026, 11, 8, 10, 7, 48), "postfix-bulk",
     "qmgr", "postfix-bulk/qmgr"),
    (f"Nov 08 10:07:48 mx postfix/submission/smtpd[1]: {REMOVED}", local(2026, 11, 8, 10, 7, 48), "postfix",
     "submission/smtpd", "postfix/submission/smtpd"),
    (f"Nov 08 10:07:48 mx postfix-mx/content-filter/smtp[1]: {REMOVED}", local(2026, 11, 8, 10, 7, 48),
     "postfix-mx", "content-filter/smtp", "postfix-mx/content-filter/smtp"),
    # Issue 10: no host name (logs pasted or collected without it), one prefix word (a container).
    (f"Dec  4 14:44:07 postfix/smtp[2097]: {REMOVED}", local(2025, 12, 4, 14, 44, 7), "postfix", "smtp",
     "postfix/smtp"),
    (f"Nov 27 10:00:01 postfix/qmgr[1]: {REMOVED}", local(2026, 11, 27, 10, 0, 1), "postfix", "qmgr",
     "postfix/qmgr"),
    (f"2025-08-26T15:30:33Z postfix/qmgr[1]: {REMOVED}", calendar.timegm((2025, 8, 26, 15, 30, 33)), "postfix",
     "qmgr", "postfix/qmgr"),
    (f"postfix-0 postfix/lmtp[216]: {REMOVED}", None, "postfix", "lmtp", "postfix/lmtp"),
    (f"2021-01-26T17:47:29.762763+01:00 INFO    postfix/qmgr[134]: {REMOVED}",
     calendar.timegm((2021, 1, 26, 16, 47, 29)) + 0.762763, "postfix", "qmgr", "postfix/qmgr"),
    (f"Nov 08 10:07:48 mx mta-bulk/qmgr[1]: {REMOVED}", local(2026, 11, 8, 10, 7, 48), "mta-bulk", "qmgr",
     "mta-bulk/qmgr"),
    (f"Nov 08 10:07:48 mx postfix/qmgr: {REMOVED}", local(2026, 11, 8, 10, 7, 48), "postfix", "qmgr",
     "postfix/qmgr"),
    (f"Nov 08 10:07:48 mx postfix/qmgr[1]: {REMOVED}\n", local(2026, 11, 8, 10, 7, 48), "postfix", "qmgr",
     "postfix/qmgr"),
    (f"Nov 08 10:07:48 mx postfix/qmgr[1]: {REMOVED}\r\n", local(2026, 11, 8, 10, 7, 48), "postfix", "qmgr",
     "postfix/qmgr"),
])
def test_envelope_variants(parser: PostfixLineParser, line: str, timestamp: float | None, instance: str,
                           service: str, program: str) -> None:
    record = parser.parse(line)
    assert isinstance(record, Removed)
    assert record.qid == "ABCDEF1234"
    assert record.timestamp == (pytest.approx(timestamp) if timestamp is not None else None)
    assert (record.instance, record.service, record.program) == (instance, service, program)


@pytest.mark.parametrize("qid", ["5270320179", "4HnkK60lBRz6tl1", "585BC3F", "D549FB08A08B"])
def test_short_and_long_queue_ids(parser: PostfixLineParser, qid: str) -> None:
    record = parser.parse(f"Nov 08 08:08:59 mx postfix/qmgr[1]: {qid}: removed")
    assert isinstance(record, Removed)
    assert record.qid == qid


@pytest.mark.parametrize(("clock", "line", "expected"), [
    # In January, a December line is last year's.
    (local(2027, 1, 1, 0, 10, 0), "Dec 31 23:59:59", local(2026, 12, 31, 23, 59, 59)),
    # Our clock slightly behind the log's: a line just past midnight belongs to the new year.
    (local(2026, 12, 31, 23, 59, 0), "Jan  1 00:00:05", local(2027, 1, 1, 0, 0, 5)),
    (NOW, "Nov 27 11:00:00", local(2026, 11, 27, 11, 0, 0)),
    (NOW, "Nov 28 11:00:00", local(2026, 11, 28, 11, 0, 0)),  # less than a day ahead: clock skew
    (NOW, "Nov 29 13:00:00", local(2025, 11, 29, 13, 0, 0)),  # more than a day ahead: last year
])
def test_year_placement(clock: float, line: str, expected: float) -> None:
    record = PostfixLineParser(clock=lambda: clock).parse(f"{line} mx postfix/qmgr[1]: ABCDEF1234: removed")
    assert isinstance(record, Removed)
    assert record.timestamp == expected


def test_timestamp_cache_serves_repeated_seconds(parser: PostfixLineParser) -> None:
    first = parser.parse("Nov 27 10:00:01 mx postfix/qmgr[1]: AAAAA11111: removed")
    second = parser.parse("Nov 27 10:00:01 mx postfix/qmgr[1]: BBBBB22222: removed")
    third = parser.parse("Nov 27 10:00:02 mx postfix/qmgr[1]: CCCCC33333: removed")
    assert isinstance(first, Removed) and isinstance(second, Removed) and isinstance(third, Removed)
    assert first.timestamp == second.timestamp == third.timestamp - 1  # type: ignore[operator]


# -- record kinds ---------------------------------------------------------------------------------

ENV = "Nov 27 10:00:01 mx "
TS = local(2026, 11, 27, 10, 0, 1)


@pytest.mark.parametrize(("line", "expected"), [
    (ENV + "postfix/qmgr[9]: 838FC8A5F: from=<out@example.org>, size=939, nrcpt=3 (queue active)",
     MessageQueued(TS, "postfix", "qmgr", "postfix/qmgr", "838FC8A5F", "out@example.org", 939, 3)),
    (ENV + "postfix/qmgr[9]: 838FC8A5F: from=<>, size=2552, nrcpt=1 (queue active)",
     MessageQueued(TS, "postfix", "qmgr", "postfix/qmgr", "838FC8A5F", "", 2552, 1)),
    (ENV + "postfix/qmgr[9]: BACE842E72: from=<noreply@domain.com>, status=expired, returned to sender",
     Expired(TS, "postfix", "qmgr", "postfix/qmgr", "BACE842E72", "noreply@domain.com", False)),
    (ENV + "postfix/qmgr[9]: BACE842E73: from=<noreply@domain.com>, status=force-expired, returned to sender",
     Expired(TS, "postfix", "qmgr", "postfix/qmgr", "BACE842E73", "noreply@domain.com", True)),
    (ENV + "postfix/qmgr[9]: 585BC3F12: from=<>, status=expired, returned to sender",
     Expired(TS, "postfix", "qmgr", "postfix/qmgr", "585BC3F12", "", False)),
    (ENV + "postfix-secondary/qmgr[8204]: AAB4D259B3: removed",
     Removed(TS, "postfix-secondary", "qmgr", "postfix-secondary/qmgr", "AAB4D259B3")),
    # Lines that carry nothing the accounting uses are Postfix's, but ignored.
    (ENV + "postfix/cleanup[1]: 838FC8A5F: message-id=<341d97ec@example.org>", IGNORED_POSTFIX),
    (ENV + "postfix/bounce[1]: 732BB407C3: sender non-delivery notification: 5DE184083C",
     BounceNotice(TS, "postfix", "bounce", "postfix/bounce", "732BB407C3", "sender non-delivery notification",
                  "5DE184083C")),
    (ENV + "postfix/bounce[1]: 264FE1A18: sender delay notification: 0A87A1A08",
     BounceNotice(TS, "postfix", "bounce", "postfix/bounce", "264FE1A18", "sender delay notification",
                  "0A87A1A08")),
    (ENV + "postfix/bounce[1]: 264FE1A18: sender delivery status notification: 0A87A1A08",
     BounceNotice(TS, "postfix", "bounce", "postfix/bounce", "264FE1A18", "sender delivery status notification",
                  "0A87A1A08")),
    (ENV + "postfix/bounce[1]: 264FE1A18: postmaster non-delivery notification: 0A87A1A08",
     BounceNotice(TS, "postfix", "bounce", "postfix/bounce", "264FE1A18", "postmaster non-delivery notification",
                  "0A87A1A08")),
    (ENV + "postfix/smtpd[1]: connect from client.example.net[192.0.2.10]", IGNORED_POSTFIX),
    (ENV + "postfix/smtpd[1]: NOQUEUE: reject: RCPT from unknown[0.0.0.0]: 450 4.7.25 Client host rejected: "
           "cannot find your hostname, [0.0.0.0]; from=<spam@example.com> to=<inbox@example.org> proto=ESMTP",
     IGNORED_POSTFIX),
    # Without an envelope, NOQUEUE still marks an smtpd reject as Postfix's.
    ("NOQUEUE: reject: RCPT from unknown[0.0.0.0]: 554 5.7.1 Relay access denied; proto=ESMTP", IGNORED_POSTFIX),
])
def test_record_kinds(parser: PostfixLineParser, line: str, expected: object) -> None:
    assert parser.parse(line) == expected


DELIVERY_FIELDS = ("qid", "to", "orig_to", "relay", "conn_use", "delay", "delays", "tls", "dsn", "status", "text",
                   "probe")


@pytest.mark.parametrize(("line", "fields"), [
    ("postfix/smtp[1]: 5270320179: to=<hebj@telia.com>, relay=mail.telia.com[81.236.60.210]:25, delay=2017, "
     "delays=0.1/2017/0.03/0.05, dsn=2.0.0, status=sent (250 2.0.0 6FVIjIMwUJwU66FVIjAEB0 mail accepted)",
     ("5270320179", "hebj@telia.com", None, "mail.telia.com[81.236.60.210]:25", None, 2017.0,
      "0.1/2017/0.03/0.05", None, "2.0.0", "sent", "250 2.0.0 6FVIjIMwUJwU66FVIjAEB0 mail accepted", False)),
    ("postfix/smtp[1]: DBF82E05E7: to=<x@gmail.com>, orig_to=<y@torproject.org>, relay=g.google.com[1.2.3.4]:25, "
     "conn_use=2, delay=2.1, delays=1.7/0/0.12/0.21, dsn=5.7.1, status=bounced (host g said: 550 5.7.1 no "
     "(in reply to end of DATA command))",
     ("DBF82E05E7", "x@gmail.com", "y@torproject.org", "g.google.com[1.2.3.4]:25", 2, 2.1, "1.7/0/0.12/0.21",
      None, "5.7.1", "bounced", "host g said: 550 5.7.1 no (in reply to end of DATA command)", False)),
    ("postfix/smtp[1]: 7EE668039: to=<user@example.com>, relay=mail.example.com[1.2.3.4]:25, delay=3.6, "
     "delays=0.08/0.02/0.85/0.14, tls=dane/!requiretls:nocertmatch, dsn=2.1.5, status=sent (250 2.0.0 Ok)",
     ("7EE668039", "user@example.com", None, "mail.example.com[1.2.3.4]:25", None, 3.6, "0.08/0.02/0.85/0.14",
      "dane/!requiretls:nocertmatch", "2.1.5", "sent", "250 2.0.0 Ok", False)),
    ("postfix/local[1]: 2A22C263F6: to=user@hostname.example.com, orig_to=root@localhost, relay=local, "
     "delay=0.07, delays=0.04/0/0/0.03, dsn=2.0.0, status=sent (delivered to command: procmail -a \"$EXTENSION\")",
     ("2A22C263F6", "user@hostname.example.com", "root@localhost", "local", None, 0.07, "0.04/0/0/0.03", None,
      "2.0.0", "sent", "delivered to command: procmail -a \"$EXTENSION\"", False)),
    ("postfix/error[1]: 2DC5552A34: to=<user@yahoo.com>, relay=none, delay=63495, delays=63350/144/0/0, "
     "dsn=4.4.2, status=deferred (delivery temporarily suspended: lost connection with mta7.am0.yahoodns.net"
     "[98.136.216.22] while sending RCPT TO)",
     ("2DC5552A34", "user@yahoo.com", None, "none", None, 63495.0, "63350/144/0/0", None, "4.4.2", "deferred",
      "delivery temporarily suspended: lost connection with mta7.am0.yahoodns.net[98.136.216.22] while sending "
      "RCPT TO", False)),
    ("postfix/retry[1]: 2DC5552A34: to=<user@yahoo.com>, relay=none, delay=1, delays=1/0/0/0, dsn=4.3.0, "
     "status=deferred (deferred transport)",
     ("2DC5552A34", "user@yahoo.com", None, "none", None, 1.0, "1/0/0/0", None, "4.3.0", "deferred",
      "deferred transport", False)),
    ("postfix/discard[1]: 2DC5552A34: to=<a@b.example>, relay=none, delay=0.1, delays=0.1/0/0/0, dsn=2.0.0, "
     "status=sent (b.example)",
     ("2DC5552A34", "a@b.example", None, "none", None, 0.1, "0.1/0/0/0", None, "2.0.0", "sent", "b.example",
      False)),
    ("postfix/lmtp[1]: 7EE668039: to=<admin@example.com>, relay=127.0.0.1[127.0.0.1]:2525, delay=3.6, "
     "delays=0.2/0.02/0.04/3.3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as 153053D)",
     ("7EE668039", "admin@example.com", None, "127.0.0.1[127.0.0.1]:2525", None, 3.6, "0.2/0.02/0.04/3.3", None,
      "2.0.0", "sent", "250 2.0.0 Ok: queued as 153053D", False)),
    ("postfix/pipe[1]: D549FB08A08B: to=<sinovv@domain.com>, relay=dovecot, delay=11, delays=1.3/0.01/0/9.8, "
     "dsn=2.0.0, status=sent (delivered via dovecot service)",
     ("D549FB08A08B", "sinovv@domain.com", None, "dovecot", None, 11.0, "1.3/0.01/0/9.8", None, "2.0.0", "sent",
      "delivered via dovecot service", False)),
    ("postfix/virtual[1]: 199041033BE: to=<me@domain.fr>, relay=virtual, delay=0.08, delays=0.08/0/0/0, "
     "dsn=2.0.0, status=sent (delivered to maildir)",
     ("199041033BE", "me@domain.fr", None, "virtual", None, 0.08, "0.08/0/0/0", None, "2.0.0", "sent",
      "delivered to maildir", False)),
    ("postfix/bulk[1]: 5FCA28903A: to=<a@b.example>, relay=x[10.0.0.1]:25, delay=0.15, delays=0.15/0/0.01/0, "
     "dsn=2.0.0, status=sent (250 Mail accepted)",
     ("5FCA28903A", "a@b.example", None, "x[10.0.0.1]:25", None, 0.15, "0.15/0/0.01/0", None, "2.0.0", "sent",
      "250 Mail accepted", False)),
    ("postfix/smtp[1]: 5FCA28903A: to=<a@b.example>, relay=x[10.0.0.1]:25, delay=0.15, delays=0.15/0/0.01/0, "
     "future=field, dsn=2.0.0, status=sent (250 Mail accepted)",
     ("5FCA28903A", "a@b.example", None, "x[10.0.0.1]:25", None, 0.15, "0.15/0/0.01/0", None, "2.0.0", "sent",
      "250 Mail accepted", False)),
    ("postfix/smtp[1]: 5FCA28903A: to=<a@b.example>, relay=x[10.0.0.1]:25, delay=0.15, dsn=4.4.1, "
     "status=deferred (truncated reply witho",
     ("5FCA28903A", "a@b.example", None, "x[10.0.0.1]:25", None, 0.15, None, None, "4.4.1", "deferred",
      "truncated reply witho", False)),
    ("postfix/smtp[1]: 3E29030F8637E: to=<user@yahoo.com>, relay=none, delay=0.01, delays=0.01/0/0/0, "
     "dsn=5.1.1, status=undeliverable-but-not-cached (User unknown in virtual alias table)",
     ("3E29030F8637E", "user@yahoo.com", None, "none", None, 0.01, "0.01/0/0/0", None, "5.1.1",
      "undeliverable-but-not-cached", "User unknown in virtual alias table", True)),
    ("postfix/smtp[1]: 3E29030F8637E: to=<user@yahoo.com>, relay=mx[1.2.3.4]:25, delay=1, delays=1/0/0/0, "
     "dsn=2.1.5, status=deliverable (250 2.1.5 Ok)",
     ("3E29030F8637E", "user@yahoo.com", None, "mx[1.2.3.4]:25", None, 1.0, "1/0/0/0", None, "2.1.5",
      "deliverable", "250 2.1.5 Ok", True)),
    ("postfix/smtp[1]: 3E29030F8637E: to=<user@yahoo.com>, relay=mx[1.2.3.4]:25, delay=1, delays=1/0/0/0, "
     "dsn=5.1.1, status=undeliverable (550 5.1.1 no)",
     ("3E29030F8637E", "user@yahoo.com", None, "mx[1.2.3.4]:25", None, 1.0, "1/0/0/0", None, "5.1.1",
      "undeliverable", "550 5.1.1 no", True)),
])
def test_delivery_lines(parser: PostfixLineParser, line: str, fields: tuple[object, ...]) -> None:
    record = parser.parse(ENV + line)
    assert isinstance(record, Delivery)
    assert tuple(getattr(record, name) for name in DELIVERY_FIELDS) == fields
    assert record.service == line.split("[", 1)[0].rsplit("/", 1)[1]


@pytest.mark.parametrize("line", [
    "postfix/postscreen[1]: CONNECT from [1.2.3.4]:5678 to [5.6.7.8]:25",
    "postfix/postscreen[1]: NOQUEUE: reject: RCPT from [216.245.194.173]:60591: 550 5.7.1 blocked; from=<a@b>",
    "postfix/smtpd[1]: disconnect from unknown[0.0.0.0] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
    "postfix/smtpd[1]: NOQUEUE: lost connection after CONNECT from unknown[192.0.2.25]",
    "postfix/smtpd[1]: warning: hostname example.com does not resolve to address 123.45.67.89",
    "postfix/smtp[1]: Verified TLS connection established to gmail-smtp-in.l.google.com[108.177.14.26]:25: TLSv1.3",
    "postfix/smtp[1]: connect to arobor.ru[178.210.73.19]:25: Connection timed out",
    "postfix/smtp[1]: 732BB407C3: host mail.domain.com[1.1.1.1] said: 451 try again (in reply to end of DATA)",
    "postfix/cleanup[1]: 6D8A61A1B2: canceled",
    "postfix/cleanup[1]: 6D8A61A1B2: reject: header Subject: spam from x[1.2.3.4]; from=<a> to=<b>: 5.7.1 no",
    "postfix/bounce[1]: 6D8A61A1B2: sender notification failed to a@b.example: mail system is down",
    "postfix/anvil[1]: statistics: max connection rate 1/60s for (smtp:1.2.3.4) at Nov 27 10:00:01",
    "postfix/master[1]: daemon started -- version 3.7.11, configuration /etc/postfix",
])
def test_uninteresting_postfix_lines_are_ignored(parser: PostfixLineParser, line: str) -> None:
    assert parser.parse(ENV + line) is IGNORED_POSTFIX


@pytest.mark.parametrize(("line", "service"), [
    # digineo/postfix_exporter testdata/mail.log; kumina/postfix_exporter postfix_exporter_test.go
    ("postfix/submission/smtpd[3646210]: 838FC8A5F: client=unknown[fe80::1:2:3:4], sasl_method=PLAIN, "
     "sasl_username=out@example.org", "submission/smtpd"),
    ("postfix/smtpd[27530]: 838FC8A5F: client=xxx[1.2.3.4], sasl_method=PLAIN, sasl_username=user@domain", "smtpd"),
    ("postfix/pickup[1]: 838FC8A5F: uid=0 from=<root>", "pickup"),
    ("postfix/pickup[1]: 838FC8A5F: sender=<root>", "pickup"),
])
def test_submissions(parser: PostfixLineParser, line: str, service: str) -> None:
    """Mail entering from outside (smtpd, pickup): what received counts, as pflogsumm does."""
    record = parser.parse(ENV + line)
    assert isinstance(record, Submitted)
    assert (record.qid, record.service) == ("838FC8A5F", service)


def test_softbounce_status_is_a_deferral(parser: PostfixLineParser) -> None:
    """``soft_bounce = yes`` logs would-be bounces as SOFTBOUNCE (real lab lines); the mail stays queued."""
    lines = [line for line in (SAMPLES.parent / "softbounce_lab.log").read_text().splitlines()
             if not line.startswith("#")]
    records = [parser.parse(line) for line in lines]
    assert [(r.status, r.soft_bounce, r.dsn, r.to) for r in records if isinstance(r, Delivery)] == [
        ("deferred", True, "4.1.1", "user0@gmx.de"), ("deferred", True, "4.7.1", "user1@comcast.net")]
    assert records[0].text.startswith("host 127.0.0.1[127.0.0.1] said: 550 5.1.1")
    bogus = lines[0].replace("status=SOFTBOUNCE", "status=BOGUS")
    assert isinstance(parser.parse(bogus), Unparsed)


@pytest.mark.parametrize("line", [
    "dovecot: imap-login: Login: user=<a@b>, method=PLAIN, rip=1.2.3.4",
    "kernel: [12345.678] eth0: link up",
    "CRON[123]: (root) CMD (run-parts /etc/cron.hourly)",
    "opendkim[55]: 838FC8A5F: DKIM-Signature field added (s=mail, d=example.org)",
    "bulk/worker[1]: 838FC8A5F: to=<a@b>, status=sent",
])
def test_other_programs_are_foreign(parser: PostfixLineParser, line: str) -> None:
    assert parser.parse(ENV + line) is IGNORED_FOREIGN


@pytest.mark.parametrize("line", [
    "",
    " ",
    "garbage",
    "Nov 27 10:00:01 mx",
    "Nov 27 10:00:01 mx postfix/smtp[1]",
    "some free words postfix/qmgr[1]: ABCDEF1234: removed",  # neither a timestamp nor one prefix word
    "mta-0 kernel[1]: ABCDEF1234: removed",  # a prefix word, but not a Postfix program
    "Nov 27 25:61:01 mx postfix/qmgr[1]: ABCDEF1234: removed",  # impossible time
    "Nov 32 10:00:01 mx postfix/qmgr[1]: ABCDEF1234: removed",  # impossible day
    "2025-13-45T08:25:46+00:00 mx postfix/qmgr[1]: ABCDEF1234: removed",
    "2025-04-09T08:25:46.x+00:00 mx postfix/qmgr[1]: ABCDEF1234: removed",
    "Nov 27 10:00:01 mx postfix/qmgr[x]: ABCDEF1234: removed",  # pid not a number
    "Nov 27 10:00:01 mx postfix/smtp[1]: ABCDEF1234: to=<a@b>, relay=x",  # cut before status
    "Nov 27 10:00:01 mx postfix/smtp[1]: ABCDEF1234: to=<a@b>, relay=x, dsn=2.0.0, status=sen",
    "Nov 27 10:00:01 mx postfix/smtp[1]: ABCDEF1234: to=<a@b.example",
    "Nov 27 10:00:01 mx postfix/qmgr[1]: ABCDEF1234: from=<a@b>, size=12",
    "Nov 27 10:00:01 mx postfix/qmgr[1]: ABCDEF1234: from=<a@b>, size=x, nrcpt=1 (queue active)",
    "Nov 27 10:00:01 mx postfix/qmgr[1]: ABCDEF1234: from=<a@b>, status=sent",
    "Nov 27 10:00:01 mx postfix/bounce[1]: ABCDEF1234: sender non-delivery notification: ",
    "\x00\x01\x02\xff binary \ufffd\ufffd junk",
    "Hello: world",  # no envelope, and not a Postfix message
    "Nov 27 10:00:01 mx postfix/qmgr[1]: ABCDEF1234: removed" + "x" * MAX_LINE_CHARS,
])
def test_malformed_lines_are_unparsed(parser: PostfixLineParser, line: str) -> None:
    assert isinstance(parser.parse(line), Unparsed)


def test_records_are_frozen_and_hashable(parser: PostfixLineParser) -> None:
    record = parser.parse(ENV + "postfix/qmgr[9]: 838FC8A5F: from=<out@example.org>, size=939, nrcpt=3 (queue active)")
    assert isinstance(record, MessageQueued)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.sender = "x"  # type: ignore[misc]
    assert record == MessageQueued(*dataclasses.astuple(record))
    assert hash(record) == hash(MessageQueued(*dataclasses.astuple(record)))


# -- the real samples ---------------------------------------------------------------------------


def test_fixture_is_the_reference_sample_file() -> None:
    # The project's shared/ folder sits beside the checkout (also in CI's clone).
    reference = Path(__file__).resolve().parents[2] / "shared" / "reference" / "postfix-log-samples.txt"
    if not reference.exists():
        pytest.skip("reference samples not available here")
    assert SAMPLES.read_bytes() == reference.read_bytes()


def test_every_sample_line_is_a_record_or_deliberately_ignored(parser: PostfixLineParser) -> None:
    results = [parser.parse(line) for line in sample_lines()]
    assert len(results) == 60
    assert [r for r in results if isinstance(r, Unparsed)] == []
    kinds = Counter(type(r).__name__ for r in results)
    assert kinds == {"Delivery": 20, "Ignored": 26, "Expired": 4, "BounceNotice": 3, "MessageQueued": 2,
                     "Removed": 2, "Submitted": 3}
    assert all(r is IGNORED_POSTFIX for r in results if isinstance(r, Ignored))
    deliveries = [r for r in results if isinstance(r, Delivery)]
    assert Counter(d.status for d in deliveries) == {"sent": 11, "deferred": 4, "bounced": 4,
                                                     "undeliverable-but-not-cached": 1}
    assert [d.qid for d in deliveries if d.probe] == ["3E29030F8637E"]
    # Envelope-less lines (grok fixtures) keep their content but carry no envelope facts.
    bare = [r for r in results if not isinstance(r, Ignored) and r.program == ""]
    assert len(bare) == 10
    assert all(r.timestamp is None and r.instance is None and r.service is None for r in bare)


def test_sample_envelopes(parser: PostfixLineParser) -> None:
    by_qid = {r.qid: r for r in (parser.parse(line) for line in sample_lines())
              if isinstance(r, Delivery | MessageQueued)}
    relay = by_qid["5FCA28903A"]
    assert isinstance(relay, Delivery)
    assert (relay.instance, relay.service, relay.program) == ("postfix", "relay/smtp", "postfix/relay/smtp")
    assert relay.timestamp == pytest.approx(calendar.timegm((2025, 4, 9, 8, 25, 46)) + 0.545425)
    content_filter = by_qid["4HnkK60lBRz6tl1"]
    assert (content_filter.instance, content_filter.service) == ("postfix-mx", "content-filter/smtp")
    assert content_filter.timestamp == local(2026, 11, 8, 8, 8, 59)
    # Dec 29 is more than a day after the clock (Nov 27 2026): last year's.
    assert by_qid["732BB407C3"].timestamp == local(2025, 12, 29, 3, 3, 48)  # the last line of that id


def test_localized_month_line_keeps_its_envelope(parser: PostfixLineParser) -> None:
    line = next(line for line in sample_lines() if line.startswith("Απρ"))
    assert parser.parse(line) is IGNORED_POSTFIX
    record = parser.parse(line.replace("Anonymous TLS connection established from  xx[5.5.5.5]: TLSv1.2 with "
                                       "cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits)",
                                       "ABCDEF1234: removed"))
    assert record == Removed(None, "postfix", "submission/smtpd", "postfix/submission/smtpd", "ABCDEF1234")


# -- hostile input ------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "\x00" * 1000,
    "\ud800 lone surrogate: ABCDEF1234: removed",
    "Nov 27 10:00:01 mx postfix/smtp[1]: " + "A" * 5000,
    "Nov 27 10:00:01 mx postfix/smtp[1]: ABCDEF1234: to=<" + "a" * 10000,
    "x" * 1_048_576,
    "Nov 27 10:00:01 mx postfix/smtp[1]: ABCDEF1234: to=<a@b>, " + "k=v, " * 3000 + "status=sent (ok)",
    ":" * 100,
    ": " * 100,
    "[" * 100 + "]: x",
    "2025-04-09T" + "9" * 100,
    "Nov 27 10:00:01 mx " + "/" * 50 + "[1]: ABCDEF1234: removed",
])
def test_hostile_lines_never_raise(parser: PostfixLineParser, line: str) -> None:
    assert isinstance(parser.parse(line), Unparsed | Ignored | Delivery | Removed)

"""The Exim main log: the parser on every line form (and hostile input), the adapter's events, and
the collector on a real lab log (``collectors/data/demo_exim_mainlog.log``) against an independent
count of the same file."""

from __future__ import annotations

import calendar
import time
from pathlib import Path

import pytest

from collectors.classify import ClassificationConfig, Classifier
from collectors.delivery_accounting import merge_snapshots
from collectors.exim.log_events import EXIM_LOG
from collectors.exim.log_parse import (
    Arrival,
    Cancelled,
    Completed,
    Delivery,
    EximLineParser,
    FreezeChange,
    parse_duration,
    reply_codes,
)
from collectors.log_pipeline import Ignored, LogProcessor, Unparsed
from exporter.agent import Agent, build_collectors
from exporter.config import load_config
from exporter.summary import collect_samples
from tests.exim_reference import line_results, reference, series
from tests.helpers import FakeClock

LAB_LOG = Path(__file__).parent.parent / "collectors" / "data" / "demo_exim_mainlog.log"
LAB = {"local_delivery": {"loopback": False}, "postfix": {"enabled": False}}
ID = "1xYPwB-0006EL-0J"


def parse(line: str) -> object:
    return EximLineParser().parse(line)


# -- the envelope ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("prefix", "epoch"), [
    ("2026-12-01 15:38:36", time.mktime((2026, 12, 1, 15, 38, 36, 0, 0, -1))),  # local time
    ("2026-12-01 15:38:36.545", time.mktime((2026, 12, 1, 15, 38, 36, 0, 0, -1)) + 0.545),
    ("2026-12-01 15:38:36 +0000", calendar.timegm((2026, 12, 1, 15, 38, 36, 0, 0, 0))),
    ("2026-12-01 15:38:36.545 +0100 [25381]", calendar.timegm((2026, 12, 1, 14, 38, 36, 0, 0, 0)) + 0.545),
    ("2026-12-01 15:38:36 -0230 [7]", calendar.timegm((2026, 12, 1, 18, 8, 36, 0, 0, 0))),
    ("2026-12-01 15:38:36 [25381]", time.mktime((2026, 12, 1, 15, 38, 36, 0, 0, -1))),
])
def test_every_prefix_the_selectors_make(prefix: str, epoch: float) -> None:
    record = parse(f"{prefix} {ID} Completed QT=1m2s")
    assert record == Completed(pytest.approx(epoch), None, ID)


@pytest.mark.parametrize("line", [
    "", "garbage", "\x00\x01\x02 binary junk \xff", "2026-13-01 15:38:36 1xYPwB-0006EL-0J Completed",
    "2026-12-01 25:38:36 1xYPwB-0006EL-0J Completed", "2026-12-01T15:38:36 1xYPwB-0006EL-0J Completed",
    "2026-12-01 15:38:36.x 1xYPwB-0006EL-0J Completed", "2026-12-01 15:38:36 [12x] 1xYPwB-0006EL-0J Completed",
    "Dec  1 15:38:36 host exim[123]: 1xYPwB-0006EL-0J Completed", "2026-12-01 15:38:3",
    "2026-12-01 15:38:36 " + "x" * 20000, "\ufffd\ufffd2026-12-01 15:38:36 1xYPwB-0006EL-0J Completed",
])
def test_lines_that_are_no_exim_lines_are_unparsed(line: str) -> None:
    assert isinstance(parse(line), Unparsed)


@pytest.mark.parametrize("line", [
    f"2026-12-01 15:38:36 {ID} => ",
    f"2026-12-01 15:38:36 {ID} == user@example.com R=r T=t defer (-44 H=x [1.2.3.4]: never closed",
    f"2026-12-01 15:38:36 {ID} ** user@example.com R=r T=t no reason at all",
    f"2026-12-01 15:38:36 {ID} <= ",
    f"2026-12-01 15:38:36 {ID} == a\\nb@example.com R=r T=t defer (-44): x",
])
def test_malformed_message_lines_are_unparsed(line: str) -> None:
    assert parse(line) == Unparsed("message")


@pytest.mark.parametrize("line", [
    "2026-12-01 15:38:36 exim 4.96 daemon started: pid=25090, -q15s, listening for SMTP on [127.0.0.1]:25250",
    "2026-12-01 15:38:36 [25092] Start queue run: pid=25092",
    "2026-12-01 15:38:36 +0000 [25092] exim user lost privilege for using -C option",
    "2026-12-01 15:38:36 H=(x) [192.0.2.1] F=<a@b.example> rejected RCPT <c@d.example>: relay not permitted",
    f"2026-12-01 15:38:36 {ID} H=127.0.0.3 [127.0.0.3]: SMTP error from remote mail server after RCPT TO:<x>: 421",
    f"2026-12-01 15:38:36 {ID} Failed to connect to mx.example [192.0.2.1]: Connection refused",
    f"2026-12-01 15:38:36 {ID} SMTP connection outbound 1550682735 {ID} example.com a@b.example",
    f"2026-12-01 15:38:36 {ID} cancelled by system filter: spam",
    f"2026-12-01 15:38:36 {ID} removed by root",
    " Suggested action: either install a certificate or change tls_advertise_hosts option",
])
def test_exim_chatter_is_ignored(line: str) -> None:
    assert parse(line) == Ignored("exim")


# -- message lines -----------------------------------------------------------------------------------

def test_arrivals() -> None:
    arrival = parse(f"2026-12-01 15:38:36 {ID} <= ops@alerts.example.com H=([127.0.0.1]) [127.0.0.1] P=esmtp S=391")
    assert isinstance(arrival, Arrival)
    assert (arrival.sender, arrival.size, arrival.reference, arrival.fake_reject) == (
        "ops@alerts.example.com", 391, None, False)
    bounce = parse(f"2026-12-01 15:38:36 1xYPpA-00035B-0x <= <> R={ID} U=Debian-exim P=local S=2204")
    assert isinstance(bounce, Arrival) and (bounce.sender, bounce.reference) == ("", ID)
    fake = parse(f"2026-12-01 15:38:36 {ID} (= a@b.example H=x [192.0.2.1] P=esmtp S=10")
    assert isinstance(fake, Arrival) and fake.fake_reject


def test_a_deferral_of_the_current_layout() -> None:
    record = parse(
        "2026-12-01 15:38:36.552 +0000 [25381] 1xYPwC-0006Lm-1k == user04@gmail.com R=to_provider T=remote_smtp "
        "defer (-44) H=127.0.0.3 [127.0.0.3]:32917* DT=0.000s: SMTP error from remote mail server after RCPT "
        "TO:<user04@gmail.com>: 421-4.7.28 [127.0.0.1] Our system has detected an unusual rate of\\n421-4.7.28 "
        "unsolicited mail originating from your IP address.\\n421 4.7.28 rate limited. - gsmtp")
    assert isinstance(record, Delivery)
    assert (record.status, record.address, record.router, record.transport) == (
        "deferred", "user04@gmail.com", "to_provider", "remote_smtp")
    assert (record.host, record.ip, record.port, record.errno, record.dsn) == (
        "127.0.0.3", "127.0.0.3", "32917", "-44", "4.7.28")
    assert record.text == ("SMTP error from remote mail server after RCPT TO:<user04@gmail.com>: 421-4.7.28 "
                           "[127.0.0.1] Our system has detected an unusual rate of 421-4.7.28 unsolicited mail "
                           "originating from your IP address. 421 4.7.28 rate limited. - gsmtp")


def test_a_deferral_of_the_older_layout_names_its_host_in_the_text() -> None:
    record = parse(
        "2017-01-28 12:54:29 1cWVWv-0007kW-AW == wcandace48@yahoo.com R=dnslookup T=remote_smtp defer (-45): SMTP "
        "error from remote mail server after MAIL FROM:<test@chyjr.com> SIZE=5704: host mta6.am0.yahoodns.net "
        "[66.196.118.240]: 421 4.7.0 [TSS04] Messages from <my ip address> temporarily deferred")
    assert isinstance(record, Delivery)
    assert (record.host, record.ip, record.dsn, record.errno) == ("mta6.am0.yahoodns.net", "66.196.118.240", "4.7.0",
                                                                 "-45")


def test_a_failure_drops_its_trailing_deliver_time() -> None:
    record = parse(
        "2026-12-01 15:32:50.680 +0000 [25397] 1xYPqc-0006bc-21 ** user06@gmx.de R=to_provider T=remote_smtp "
        "H=127.0.0.4 [127.0.0.4]:43013: SMTP error from remote mail server after RCPT TO:<user06@gmx.de>: 550 5.1.1 "
        "<unknown@gmx.de>: Recipient address rejected: User unknown DT=0.000s")
    assert isinstance(record, Delivery)
    assert record.text.endswith("User unknown") and record.dsn == "5.1.1" and not record.retry_timeout


def test_a_retry_timeout() -> None:
    record = parse(f"2026-12-01 15:31:20.295 +0000 [11850] {ID} ** other3@yahoo.com: retry timeout exceeded")
    assert isinstance(record, Delivery) and record.retry_timeout and record.address == "other3@yahoo.com"


def test_freeze_thaw_and_cancel_lines() -> None:
    for text, frozen in (("Frozen (delivery error message)", True), ("Message is frozen", True),
                         ("frozen by root", True), ("Unfrozen by errmsg timer", False),
                         ("Unfrozen by auto-thaw", False), ("unfrozen by CALLER", False)):
        assert parse(f"2026-12-01 15:38:36 {ID} {text}") == FreezeChange(pytest.approx(0, abs=2e9), None, ID, frozen)
    timeout = parse(f"2026-12-01 15:38:36 {ID} cancelled by timeout_frozen_after")
    admin = parse(f"2026-12-01 15:38:36 {ID} cancelled by root")
    assert isinstance(timeout, Cancelled) and timeout.timed_out
    assert isinstance(admin, Cancelled) and not admin.timed_out


@pytest.mark.parametrize(("text", "seconds"), [("3m45s", 225), ("1.578s", 1.578), ("2d3h", 183600), ("1w", 604800),
                                               ("qqs", None), ("", None), ("5", None), ("1m x", None)])
def test_exim_durations(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize(("text", "dsn"), [("550 5.1.1 <a>: User unknown", "5.1.1"), ("SMTP error ...: 452 Temporary",
                                                                                        "4.0.0"),
                                           ("Connection refused", None), ("x: 421-4.7.28 a\\n421 4.7.28 b", "4.7.28")])
def test_the_dsn_of_a_failure(text: str, dsn: str | None) -> None:
    assert reply_codes(text) == dsn


def test_the_parser_never_raises_on_random_bytes() -> None:
    import random
    rng = random.Random(14)
    parser = EximLineParser()
    prefix = f"2026-12-01 15:38:36 {ID} "
    for _ in range(2000):
        junk = "".join(chr(rng.randrange(0, 0x2FF)) for _ in range(rng.randrange(0, 80)))
        flag = rng.choice(["=>", "==", "**", "<=", "->", "Completed", ""])
        assert isinstance(parser.parse(f"{prefix}{flag} {junk}"), (Delivery, Arrival, Completed, Ignored, Unparsed))


# -- the adapter -------------------------------------------------------------------------------------

def account(lines: list[str], **config: object) -> LogProcessor:
    processor = LogProcessor(EXIM_LOG, Classifier(ClassificationConfig.model_validate(config)), clock=FakeClock(2e9))
    processor.process_lines("test", lines)
    return processor


def test_a_retry_timeout_is_a_dead_letter_with_the_last_deferral() -> None:
    """gvengel/exim_exporter's test log: a deferral, then the retry timeout in the same run."""
    snap = merge_snapshots(account([
        "2020-06-19 04:51:49 [123] 1jmFYj-00039V-QX <= noreply@test.corp H=(test.corp) [2.2.2.2] P=smtp S=7386",
        "2020-06-19 04:54:02 1jmFYj-00039V-QX == bob@null.corp R=dnslookup T=remote_smtp defer (110): Connection "
        "timed out",
        "2020-06-19 04:54:02 1jmFYj-00039V-QX ** bob@null.corp: retry timeout exceeded",
        "2020-06-19 04:54:02 1jmFas-0004f6-EB <= <> R=1jmFYj-00039V-QX U=Debian-exim P=local S=8656",
        "2020-06-19 04:54:02 [456] 1jmFYj-00039V-QX Completed",
    ]).accounts.snapshots().values())
    assert snap.dead_letters == {("normal", "other", "connection"): 1}
    assert snap.bounces == {("normal", "other", "soft", "connection"): 1}
    assert snap.messages_received == {("normal",): 1}
    assert snap.notifications == {("non_delivery",): 1}
    assert snap.tracked_messages == 1  # the bounce message; the expired one was removed
    (letter,) = snap.dead_letter_log
    assert (letter.qid, letter.sender, letter.attempts) == ("1jmFYj-00039V-QX", "noreply@test.corp", 1)


#: Captured from the Exim 4.96 lab (``tests/lab/exim.py``) with ``delay_warning = 20s`` and
#: ``log_selector = … +subject``, 2026-12-01: a deferred message, then the delay warning Exim sent its sender.
DELAY_WARNING_LOG = [
    '2026-12-01 18:32:52.934 +0000 [18377] 1xYSeq-0004mP-2z <= ops@alerts.example.com H=([127.0.0.1]) '
    '[127.0.0.1] P=esmtp S=390 T="order 1234"',
    "2026-12-01 18:33:22.930 +0000 [19320] 1xYSeq-0004mP-2z == late@gmail.com R=to_provider T=remote_smtp "
    "defer (-44) H=127.0.0.3 [127.0.0.3]:33579 DT=0.000s: SMTP error from remote mail server after RCPT "
    "TO:<late@gmail.com>: 421-4.7.28 [127.0.0.1] Our system has detected an unusual rate of\\n421-4.7.28 "
    "unsolicited mail originating from your IP address. To protect our\\n421-4.7.28 users from spam, mail "
    "sent from your IP address has been temporarily\\n421 4.7.28 rate limited. "
    "https://support.google.com/mail/answer/81126 - gsmtp",
    '2026-12-01 18:33:22.936 +0000 [19323] 1xYSfK-00051f-31 <= <> R=1xYSeq-0004mP-2z U=Debian-exim P=local '
    'S=2706 T="Warning: message 1xYSeq-0004mP-2z delayed 0 minutes"',
    '2026-12-01 18:33:22.987 +0000 [19324] 1xYSfK-00051f-31 => ops@alerts.example.com R=to_provider '
    'T=remote_smtp H=127.0.0.1 [127.0.0.1]:33579 C="250 2.0.0 Ok: queued" QT=0.052s DT=0.045s',
    "2026-12-01 18:33:22.988 +0000 [19324] 1xYSfK-00051f-31 Completed QT=0.052s",
]


def test_a_delay_warning_is_told_by_its_logged_subject() -> None:
    snap = merge_snapshots(account(DELAY_WARNING_LOG).accounts.snapshots().values())
    assert snap.notifications == {("delay",): 1}
    assert snap.messages_received == {("normal",): 1}  # the warning is no received mail
    without_subject = [line.partition(' T="Warning')[0] if "<= <>" in line else line for line in DELAY_WARNING_LOG]
    snap = merge_snapshots(account(without_subject).accounts.snapshots().values())
    assert snap.notifications == {("other",): 1}  # the default selectors do not say what it is


def test_a_frozen_message_that_times_out_is_a_dead_letter_and_an_admin_cancel_a_forced_one() -> None:
    snap = merge_snapshots(account([
        f"2026-12-01 15:00:00 {ID} <= a@shop.example S=10",
        f"2026-12-01 15:00:01 {ID} == b@gmail.com R=r T=t defer (-44) H=mx.google.com [192.0.2.1]: SMTP error from "
        "remote mail server after RCPT TO:<b@gmail.com>: 452 4.2.2 over quota",
        f"2026-12-01 15:00:02 {ID} frozen by root",
        f"2026-12-01 16:00:00 {ID} cancelled by timeout_frozen_after",
        "2026-12-01 15:00:00 1xYPwB-0006EL-1J <= c@shop.example S=10",
        "2026-12-01 15:00:05 1xYPwB-0006EL-1J cancelled by root",
    ]).accounts.snapshots().values())
    assert snap.dead_letters == {("normal", "google", "mailbox_full"): 1, ("normal", "other", "other"): 1}
    assert {d.qid: d.forced for d in snap.dead_letter_log} == {ID: False, "1xYPwB-0006EL-1J": True}
    assert snap.bounces == {("normal", "google", "soft", "mailbox_full"): 1}


def test_hosts_decide_what_stays_on_the_host() -> None:
    lines = [
        f"2026-12-01 15:00:00 {ID} => a <a@local.example> R=localuser T=local_delivery",
        f"2026-12-01 15:00:00 {ID} => b@gmail.com R=r T=remote_smtp H=127.0.0.1 [127.0.0.1] C=\"250 OK\"",
        f"2026-12-01 15:00:00 {ID} -> c@example.com R=r T=remote_smtp H=mx.google.com [192.0.2.7]:25 C=\"250 OK\"",
        f"2026-12-01 15:00:00 {ID} *> d@gmail.com R=r T=t H=192.0.2.9 [192.0.2.9] C=\"delivery bypassed by -N\"",
        f"2026-12-01 15:00:00 {ID} == e@gmail.com R=r T=remote_smtp defer (111): Connection refused",
    ]
    snap = merge_snapshots(account(lines).accounts.snapshots().values())
    assert snap.delivery_attempts == {("normal", "local", "sent"): 3, ("normal", "google", "sent"): 1,
                                      ("normal", "google", "deferred"): 1}
    snap = merge_snapshots(account(lines, local_delivery={"loopback": False}).accounts.snapshots().values())
    assert snap.delivery_attempts[("normal", "google", "sent")] == 2


def test_lane_rules_see_the_transport_and_the_instance() -> None:
    processor = account([f"2026-12-01 15:00:00 {ID} => b@gmail.com R=r T=bulk_smtp H=mx.google.com [192.0.2.1]"],
                        lanes={"rules": [{"lane": "low", "match": {"service": "bulk_smtp", "instance": "exim"}}]})
    snap = merge_snapshots(processor.accounts.snapshots().values())
    assert snap.delivery_attempts == {("low", "google", "sent"): 1}


def test_self_inflicted_deferrals_never_count_as_provider_retries() -> None:
    snap = merge_snapshots(account([
        f"2026-12-01 15:00:00 {ID} == a@gmail.com defer (-23): domain is held",
        f"2026-12-01 15:00:00 {ID} == a@gmail.com R=r T=t defer (-57): concurrency limit reached for transport",
        f"2026-12-01 15:00:00 {ID} == a@gmail.com R=r T=t defer (-54): retry time not reached for any host for "
        "'gmail.com'",
    ]).accounts.snapshots().values())
    assert snap.self_deferrals == {("self",): 3}
    assert snap.deferrals == {} and snap.delivery_attempts == {}


# -- the collector on a real lab log -------------------------------------------------------------------

def test_the_lab_log_counts_as_an_independent_count_of_it() -> None:
    lines = LAB_LOG.read_text().splitlines()
    config = load_config(environ={}, overrides={**LAB, "exim": {"instances": [
        {"name": "exim-lab", "log_path": str(LAB_LOG)}]}, "collectors": {"exim_queue": False}})
    (collector,) = build_collectors(config, Classifier(config))
    collector.process_lines(str(LAB_LOG), lines)
    samples = collect_samples([collector])
    expected = reference(lines)
    assert series(samples, "mtaq_messages_received_total", "mta_instance") == {"exim-lab": expected["received"][()]}
    assert series(samples, "mtaq_delivery_attempts_total", "provider", status="sent") == expected["sent"]
    assert series(samples, "mtaq_deferrals_total", "provider", "reason") == expected["deferrals"]
    assert series(samples, "mtaq_self_deferrals_total", "mta") == ({"exim": expected["self"][()]}
                                                                   if expected["self"] else {})
    assert series(samples, "mtaq_bounces_total", "provider", "type", "reason") == expected["bounces"]
    assert series(samples, "mtaq_dead_letters_total", "provider", "reason") == expected["dead_letters"]
    assert series(samples, "mtaq_log_lines_total", "result") == line_results(lines)
    assert sum(expected["dead_letters"].values()) >= 4 and expected["bounces"]


def test_each_main_log_counts_under_its_own_instance(tmp_path: Path) -> None:
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    line = f"2026-12-01 15:00:00 {ID} <= a@shop.example S=10"
    config = load_config(environ={}, overrides={**LAB, "exim": {"instances": [
        {"name": "exim-a", "log_path": str(one)}, {"name": "exim-b", "log_path": str(two)}]},
        "collectors": {"exim_queue": False}})
    (collector,) = build_collectors(config, Classifier(config))
    collector.process_lines(str(one), [line])
    collector.process_lines(str(two), [line, line.replace(ID, "1xYPwB-0006EL-1J")])
    assert series(collect_samples([collector]), "mtaq_messages_received_total", "mta_instance") == {
        "exim-a": 1, "exim-b": 2}


def test_one_dead_letter_route_shows_both_mtas(tmp_path: Path) -> None:
    """Postfix and Exim logs tailed by one agent: GET /api/v1/dead-letters lists both."""
    postfix_log, exim_log = tmp_path / "mail.log", tmp_path / "mainlog"
    postfix_log.write_text("")
    exim_log.write_text("")
    config = load_config(environ={}, overrides={**LAB, "web": {"listen_address": "127.0.0.1:0"},
                                                "log": {"paths": [str(postfix_log)]},
                                                "exim": {"instances": [{"log_path": str(exim_log)}]},
                                                "collectors": {"exim_queue": False}})
    agent = Agent(config)
    logs = {c.id: c for c in agent.collectors}
    logs["exim_log"].process_lines(str(exim_log), [
        f"2026-12-01 15:00:00 {ID} == b@gmail.com R=r T=t defer (-44) H=mx.google.com [192.0.2.1]: x: 452 4.2.2 full",
        f"2026-12-01 15:00:09 {ID} ** b@gmail.com: retry timeout exceeded"])
    logs["postfix_log"].process_lines(str(postfix_log), [
        "Dec  1 15:00:00 mx postfix/qmgr[1]: 3F1A2B4C5D: from=<x@shop.example>, status=expired, returned to sender"])
    route = next(r for r in agent.http.routes.values() if r.path == "/api/v1/dead-letters")
    from collectors.base import Request
    document = route.handler(Request("GET", "/api/v1/dead-letters", "", {}, b"", trusted=True)).body
    assert b'"qid": "3F1A2B4C5D"' in document and f'"qid": "{ID}"'.encode() in document

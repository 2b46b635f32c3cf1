"""Postfix log collector: the samples end to end into exact metric values, the tailer wiring, health."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from collectors.classify import Classifier
from collectors.log_collector import LogCollector
from collectors.postfix.log_events import POSTFIX_LOG
from collectors.tailer import Tailer
from tests.helpers import FakeTailer

SAMPLES = Path(__file__).parent / "fixtures" / "postfix_log" / "samples.log"
NOW = time.mktime((2026, 11, 27, 12, 0, 0, 0, 0, -1))
SOURCE = "/var/log/mail.log"


class Registered:
    def __init__(self, collector: LogCollector) -> None:
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        return self.collector.families()


def make(paths: list[str] | None = None) -> tuple[LogCollector, FakeTailer, CollectorRegistry]:
    tailers: list[FakeTailer] = []

    def factory(*args: Any, **kwargs: Any) -> FakeTailer:
        tailers.append(FakeTailer(*args, **kwargs))
        return tailers[-1]

    collector = LogCollector("postfix_log", POSTFIX_LOG, [SOURCE] if paths is None else paths, Classifier(),
                             checkpoint_path="/tmp/ck", start_at="start", clock=lambda: NOW, tailer_factory=factory)
    registry = CollectorRegistry()
    registry.register(Registered(collector))
    return collector, tailers[0], registry


def sample_lines() -> list[str]:
    return [line for line in SAMPLES.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]


@pytest.fixture
def fed() -> tuple[LogCollector, CollectorRegistry]:
    collector, _, registry = make()
    collector.process_lines(SOURCE, sample_lines())
    return collector, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """The sample's value, summed over MTA instances unless ``mta_instance`` is given; None if absent."""
    found = [s.value for family in registry.collect() for s in family.samples
             if s.name == name and labels.items() <= s.labels.items()
             and s.labels.keys() - labels.keys() <= {"mta", "mta_instance"}]
    return sum(found) if found else None


def test_constructor_wires_the_tailer() -> None:
    collector, tailer, _ = make()
    assert tailer.paths == [SOURCE]
    assert tailer.options == {"checkpoint_path": "/tmp/ck", "start_at": "start", "clock": tailer.options["clock"],
                              "poll_interval": 0.25}
    assert collector.id == "postfix_log"
    assert collector.interval is None
    collector.start()
    assert tailer.running
    collector.stop()
    assert not tailer.running


def test_samples_messages_and_attempts(fed: tuple[LogCollector, CollectorRegistry]) -> None:
    _, registry = fed
    assert value(registry, "mtaq_messages_received_total", lane="normal") == 2
    assert value(registry, "mtaq_messages_received_total", lane="high") == 0
    # Hops that stay on the host (virtual, pipe to dovecot, local, content filter and LMTP on loopback)
    # count under provider "local", never as deliveries to the recipient's provider.
    attempts = {
        ("other", "sent"): 5, ("local", "sent"): 5, ("google", "sent"): 1, ("other", "deferred"): 3,
        ("other", "bounced"): 1, ("local", "bounced"): 1, ("google", "bounced"): 2,
        ("google", "deferred"): 0, ("local", "deferred"): 0,  # zero-filled: provider seen in this lane
    }
    for (provider, status), expected in attempts.items():
        assert value(registry, "mtaq_delivery_attempts_total", lane="normal", provider=provider,
                     status=status) == expected
    for lane in ("high", "low"):
        for status in ("sent", "deferred", "bounced"):
            assert value(registry, "mtaq_delivery_attempts_total", lane=lane, provider="other", status=status) == 0
        assert value(registry, "mtaq_delivery_attempts_total", lane=lane, provider="google", status="sent") is None
    assert value(registry, "mtaq_messages_deferred_total", lane="normal", provider="other") == 3
    assert value(registry, "mtaq_messages_deferred_total", lane="normal", provider="google") == 0


def test_samples_deferrals_bounces_dead_letters(fed: tuple[LogCollector, CollectorRegistry]) -> None:
    _, registry = fed
    assert value(registry, "mtaq_deferrals_total", provider="other", reason="connection") == 2
    assert value(registry, "mtaq_deferrals_total", provider="other", reason="content") == 1  # NetEase DT:SPM
    bounces = {
        ("google", "hard", "reputation"): 2, ("other", "hard", "content"): 1, ("local", "hard", "user_unknown"): 1,
        ("other", "soft", "connection"): 1,  # C93CEB08A046: still pending when it expired
        ("other", "soft", "other"): 0,
    }
    for (provider, kind, reason), expected in bounces.items():
        assert value(registry, "mtaq_bounces_total", lane="normal", provider=provider, type=kind,
                     reason=reason) == expected
    assert value(registry, "mtaq_dead_letters_total", lane="normal", provider="other", reason="other") == 3
    assert value(registry, "mtaq_dead_letters_total", lane="normal", provider="other", reason="connection") == 1
    assert value(registry, "mtaq_dead_letters_total", lane="low", provider="other", reason="other") == 0
    assert value(registry, "mtaq_self_deferrals_total", reason="connection") == 1
    assert value(registry, "mtaq_verify_probes_total", status="undeliverable-but-not-cached") == 1


def test_samples_delay_histogram(fed: tuple[LogCollector, CollectorRegistry]) -> None:
    _, registry = fed

    def bucket(status: str, le: str) -> float | None:
        return value(registry, "mtaq_delivery_delay_seconds_bucket", lane="normal", status=status, le=le)

    # Sent on the host (provider local) is not a final outcome: 6 of the 11 sent lines are observed.
    assert value(registry, "mtaq_delivery_delay_seconds_count", lane="normal", status="sent") == 6
    assert value(registry, "mtaq_delivery_delay_seconds_sum", lane="normal", status="sent") == pytest.approx(2027.85)
    assert [bucket("sent", le) for le in ("1.0", "5.0", "15.0", "1800.0", "3600.0", "+Inf")] == [1, 5, 5, 5, 6, 6]
    assert value(registry, "mtaq_delivery_delay_seconds_count", lane="normal", status="bounced") == 4
    assert value(registry, "mtaq_delivery_delay_seconds_sum", lane="normal", status="bounced") == pytest.approx(586.05)
    assert [bucket("bounced", le) for le in ("1.0", "5.0", "300.0", "900.0")] == [1, 3, 3, 4]
    # C93CEB08A046 arrived 307136 s before its Dec 27 deferral and expired on Dec 28 13:39:28.
    assert value(registry, "mtaq_delivery_delay_seconds_sum", lane="normal", status="expired") == 433140
    assert bucket("expired", "432000.0") == 0
    assert bucket("expired", "+Inf") == 1
    assert value(registry, "mtaq_delivery_delay_seconds_count", lane="low", status="expired") == 0


def test_samples_line_statistics(fed: tuple[LogCollector, CollectorRegistry]) -> None:
    _, registry = fed
    assert value(registry, "mtaq_log_lines_total", source=SOURCE, result="parsed") == 34
    assert value(registry, "mtaq_log_lines_total", source=SOURCE, result="ignored") == 26
    assert value(registry, "mtaq_log_lines_total", source=SOURCE, result="unparsed") == 0
    assert value(registry, "mtaq_log_reopens_total", source=SOURCE) == 0
    assert value(registry, "mtaq_log_last_line_timestamp_seconds", source=SOURCE) == NOW
    # The fixture jumps between years: states older than the 7-day TTL (in log time) were dropped.
    # Also tracked: a submission (smtpd client=) and notifications (bounce) whose queue line is not in the samples.
    assert value(registry, "mtaq_log_tracked_messages") == 14
    assert value(registry, "mtaq_log_evicted_messages_total") == 8


def test_exposition_has_help_naming_the_source(fed: tuple[LogCollector, CollectorRegistry]) -> None:
    _, registry = fed
    text = generate_latest(registry).decode()
    for line in text.splitlines():
        if line.startswith("# HELP mtaq_") and "_log_" not in line.split()[2]:
            assert "from the mail log" in line, line
    assert "# TYPE mtaq_delivery_delay_seconds histogram" in text


def test_zero_filled_before_any_line() -> None:
    _, _, registry = make(["/var/log/a.log", "/var/log/b.log"])
    for source in ("/var/log/a.log", "/var/log/b.log"):
        for result in ("parsed", "ignored", "unparsed"):
            assert value(registry, "mtaq_log_lines_total", source=source, result=result) == 0
        assert value(registry, "mtaq_log_last_line_timestamp_seconds", source=source) is None
    assert value(registry, "mtaq_messages_received_total", lane="low") == 0
    assert value(registry, "mtaq_delivery_delay_seconds_count", lane="high", status="sent") == 0
    assert value(registry, "mtaq_log_tracked_messages") == 0


def test_sink_decodes_invalid_utf8_and_counts_every_line() -> None:
    _, tailer, registry = make()
    lines = [
        b"Nov 27 10:00:01 mx postfix/qmgr[1]: ABCDEF1234: from=<caf\xc3\xa9@app.example>, size=1, nrcpt=1 "
        b"(queue active)",
        b"Nov 27 10:00:01 mx postfix/qmgr[1]: \xff\xfe\xfd: removed",
        b"\xc3",  # a cut multi-byte sequence
        b"",
        b"Nov 27 10:00:02 mx dovecot: imap-login: Login: user=<a@b>",
    ]
    tailer.sink(SOURCE, lines)
    assert value(registry, "mtaq_log_lines_total", source=SOURCE, result="parsed") == 1
    assert value(registry, "mtaq_log_lines_total", source=SOURCE, result="ignored") == 2
    assert value(registry, "mtaq_log_lines_total", source=SOURCE, result="unparsed") == 2
    assert value(registry, "mtaq_messages_received_total", lane="normal") == 1


def test_health_follows_the_tailer() -> None:
    collector, tailer, registry = make()
    collector.check_sources()
    assert collector.health.view().success
    tailer.stats[SOURCE].last_error = "FileNotFoundError: [Errno 2] No such file or directory"
    tailer.stats[SOURCE].reopens = 3
    collector.check_sources()
    collector.check_sources()
    health = collector.health.view()
    assert not health.success
    assert health.last_error == f"{SOURCE}: FileNotFoundError: [Errno 2] No such file or directory"
    assert health.errors_total == 2  # every check that finds it failing
    assert value(registry, "mtaq_log_reopens_total", source=SOURCE) == 3
    tailer.stats[SOURCE].last_error = None
    tailer.stats[SOURCE].last_line_time = NOW - 5
    collector.check_sources()
    assert collector.health.view().success
    assert value(registry, "mtaq_log_last_line_timestamp_seconds", source=SOURCE) == NOW - 5


def test_duration_is_that_of_the_last_batch() -> None:
    collector, _, _ = make()
    assert collector.health.view().duration_seconds == 0
    collector.process_lines(SOURCE, sample_lines() * 20)
    assert collector.health.view().duration_seconds > 0


def test_with_the_real_tailer(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(SAMPLES.read_bytes() + b"\xff\xfe junk\n")
    tailers: list[Tailer] = []

    def factory(*args: Any, **kwargs: Any) -> Tailer:
        tailers.append(Tailer(*args, use_inotify=False, **kwargs))
        return tailers[-1]

    collector = LogCollector("postfix_log", POSTFIX_LOG, [str(log)], Classifier(), checkpoint_path=None,
                             start_at="start", clock=lambda: NOW, tailer_factory=factory)
    registry = CollectorRegistry()
    registry.register(Registered(collector))
    tailers[0].poll_once()
    comments = sum(1 for line in SAMPLES.read_text().splitlines() if not line or line.startswith("#"))
    assert value(registry, "mtaq_log_lines_total", source=str(log), result="parsed") == 34
    assert value(registry, "mtaq_log_lines_total", source=str(log), result="ignored") == 26
    assert value(registry, "mtaq_log_lines_total", source=str(log), result="unparsed") == comments + 1
    assert value(registry, "mtaq_delivery_attempts_total", lane="normal", provider="google", status="bounced") == 2
    assert value(registry, "mtaq_log_last_line_timestamp_seconds", source=str(log)) == NOW
    collector.stop()


def test_snapshot_exposes_dead_letters(fed: tuple[LogCollector, CollectorRegistry]) -> None:
    collector, _ = fed
    dead = {d.qid: d for d in collector.snapshots()["postfix"].dead_letter_log}
    assert set(dead) == {"BACE842E72", "BACE842E73", "C93CEB08A046", "585BC3F"}
    assert dead["BACE842E73"].forced
    assert (dead["C93CEB08A046"].reason, dead["C93CEB08A046"].pending_recipients) == ("connection", 1)


def test_an_accounting_failure_costs_one_record(caplog: pytest.LogCaptureFixture) -> None:
    collector, _, registry = make()
    lines = sample_lines()
    original = collector._processor.accounts.get("postfix").received
    calls = []

    def flaky(*args: Any) -> None:
        calls.append(args)
        if len(calls) == 1:
            raise RuntimeError("bug")
        original(*args)

    collector._processor.accounts.get("postfix").received = flaky  # type: ignore[method-assign]
    collector.process_lines(SOURCE, lines)
    assert value(registry, "mtaq_log_lines_total", source=SOURCE, result="parsed") == 34
    assert value(registry, "mtaq_messages_received_total", lane="normal") == 1  # the other one
    assert "accounting a MessageQueued record failed" in caplog.text

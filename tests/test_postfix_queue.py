"""Postfix queue collector on captured real showq output, and its failure handling."""

import json
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors.classify import ClassificationConfig, Classifier
from collectors.deadline import Deadline
from collectors.postfix.instance import PostfixInstance, PostfixQueueReader
from collectors.postfix.showq import POSTFIX_QUEUES, decode_showq
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage
from exporter.registry import build_registry

RAW = (Path(__file__).parent / "fixtures" / "postfix_queue" / "showq.bin").read_bytes()
LANES = ClassificationConfig.model_validate({"lanes": {"rules": [
    {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
    {"lane": "low", "match": {"sender_domain": "bulk.example.com"}},
]}})
MTA = {"mta": "postfix", "mta_instance": "postfix"}


class FlakySource:
    """A queue reader serving the captured queue, or failing when told to (the MTA going away
    and coming back)."""

    source_info = ("showq", "captured")

    def __init__(self, name: str = "postfix") -> None:
        self.name = name
        self.fail: str | None = None

    def source(self) -> str:
        return "captured showq output"

    def read(self, _deadline: Deadline) -> Iterator[QueueMessage]:
        if self.fail:
            raise ConnectionRefusedError(self.fail)
        return decode_showq([RAW])


def collector_for(*readers: FlakySource | PostfixQueueReader) -> QueueCollector:
    return QueueCollector("postfix_queue", "postfix", readers, Classifier(LANES), POSTFIX_QUEUES,
                          clock=lambda: 1234.0)


def make() -> tuple[QueueCollector, CollectorRegistry, FlakySource]:
    source = FlakySource()
    collector = collector_for(source)
    return collector, build_registry([collector]), source


def expected_from(messages: list[QueueMessage]) -> dict[tuple[str, str], tuple[int, int, int, float]]:
    """Independent reference: totals per (queue, lane) computed straight from the records."""
    def lane(sender: str) -> str:
        return "high" if sender.endswith("@alerts.example.com") else (
            "low" if sender.endswith("@bulk.example.com") else "normal")
    out: dict[tuple[str, str], tuple[int, int, int, float]] = {}
    for m in messages:
        n, r, s, o = out.get((m.queue, lane(m.sender)), (0, 0, 0, float("inf")))
        out[(m.queue, lane(m.sender))] = (n + 1, r + len(m.recipients), s + m.size, min(o, m.arrival))
    return out


def test_queue_metrics_equal_reference() -> None:
    collector, registry, _ = make()
    assert collector.run_refresh()
    expected = expected_from(list(decode_showq([RAW])))
    for queue in ("maildrop", "incoming", "active", "deferred", "hold"):
        for lane in ("high", "normal", "low"):
            labels = {**MTA, "queue": queue, "lane": lane}
            n, r, s, oldest = expected.get((queue, lane), (0, 0, 0, None))
            assert registry.get_sample_value("mtaq_queue_messages", labels) == n
            assert registry.get_sample_value("mtaq_queue_recipients", labels) == r
            assert registry.get_sample_value("mtaq_queue_size_bytes", labels) == s
            assert registry.get_sample_value("mtaq_queue_oldest_message_timestamp_seconds", labels) == oldest
    assert registry.get_sample_value("mtaq_up", MTA) == 1
    assert registry.get_sample_value("mtaq_collector_success", {"collector": "postfix_queue"}) == 1
    assert registry.get_sample_value("mtaq_queue_last_scan_timestamp_seconds", MTA) == 1234.0


def test_deferred_recipients_by_provider_and_reason() -> None:
    collector, registry, _ = make()
    collector.run_refresh()
    # Independent reference from postqueue -j: the simulator's domain and its reply code.
    providers = {"gmail.com": "google", "yahoo.com": "yahoo", "outlook.com": "microsoft", "icloud.com": "apple"}
    reasons = {"4.7.28": "rate_limited", "[TSS04]": "rate_limited", "4.7.650": "rate_limited",
               "4.2.2": "mailbox_full"}
    expected: dict[tuple[str, str], int] = {}
    held = 0
    for line in (Path(__file__).parent / "fixtures" / "postfix_queue" / "postqueue.jsonl").read_text().splitlines():
        message = json.loads(line)
        for rcpt in message["recipients"]:
            if "delay_reason" in rcpt:
                if message["queue_name"] != "deferred":  # qshape's view: the deferred queue only
                    held += 1
                    continue
                reason = next(r for code, r in reasons.items() if code in rcpt["delay_reason"])
                key = (providers[rcpt["address"].split("@")[1]], reason)
                expected[key] = expected.get(key, 0) + 1
    assert sum(expected.values()) == 11
    assert held == 1  # a message put on hold after its deferral keeps its reason, and is not counted
    snapshot = collector.snapshot("postfix")
    assert snapshot is not None
    assert snapshot.deferred == expected
    for (provider, reason), count in expected.items():
        assert registry.get_sample_value(
            "mtaq_queue_deferred_recipients", {**MTA, "provider": provider, "reason": reason}) == count


def test_mta_down_keeps_serving_and_recovers() -> None:
    collector, registry, source = make()
    collector.run_refresh()
    source.fail = "Connection refused"
    assert not collector.run_refresh()
    assert registry.get_sample_value("mtaq_up", MTA) == 0
    assert registry.get_sample_value("mtaq_collector_success", {"collector": "postfix_queue"}) == 0
    assert "Connection refused" in (collector.health.view().last_error or "")
    # the last good scan stays visible, its timestamp shows its age
    assert registry.get_sample_value("mtaq_queue_messages", {**MTA, "queue": "deferred", "lane": "low"}) is not None
    source.fail = None
    assert collector.run_refresh()
    assert registry.get_sample_value("mtaq_up", MTA) == 1
    assert collector.health.view().errors_total == 1


def test_one_failing_instance_is_down_alone_and_named() -> None:
    good, bad = FlakySource("postfix"), FlakySource("postfix-bulk")
    bad.fail = "Permission denied"
    collector = collector_for(good, bad)
    registry = build_registry([collector])
    assert not collector.run_refresh()
    assert collector.health.view().last_error == "OSError: postfix-bulk: Permission denied"
    assert registry.get_sample_value("mtaq_up", {"mta": "postfix", "mta_instance": "postfix"}) == 1
    assert registry.get_sample_value("mtaq_up", {"mta": "postfix", "mta_instance": "postfix-bulk"}) == 0
    # each instance has its own series: the good one's numbers, none for the one never read
    deferred_low = {"queue": "deferred", "lane": "low"}
    expected = expected_from(list(decode_showq([RAW])))[("deferred", "low")][0]
    assert registry.get_sample_value("mtaq_queue_messages", {**MTA, **deferred_low}) == expected > 0
    assert registry.get_sample_value("mtaq_queue_messages", {**MTA, **deferred_low, "mta_instance": "postfix-bulk"}) \
        is None


def test_a_configured_socket_that_is_missing_is_down_without_fallback(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    postqueue = tmp_path / "postqueue"
    postqueue.write_text(f"#!/bin/sh\ntouch {marker}\n")
    postqueue.chmod(0o755)
    instance = PostfixInstance(name="x", showq_path=str(tmp_path / "showq"), postqueue=str(postqueue))
    collector = collector_for(PostfixQueueReader(instance))
    registry = build_registry([collector])
    assert not collector.run_refresh()
    assert collector.health.view().last_error == \
        f"OSError: x: configured showq socket {tmp_path / 'showq'}: No such file or directory"
    assert not marker.exists()  # never another instance's queue through postqueue
    assert registry.get_sample_value("mtaq_up", {"mta": "postfix", "mta_instance": "x"}) == 0


def test_a_discovered_socket_falls_back_and_the_error_names_both_attempts(tmp_path: Path) -> None:
    instance = PostfixInstance(name="x", config_dir=str(tmp_path), postqueue=str(tmp_path / "no-postqueue"))
    reader = PostfixQueueReader(instance)  # postconf fails here: the default queue directory is assumed
    reader.showq_path = str(tmp_path / "showq")
    collector = collector_for(reader)
    assert not collector.run_refresh()
    error = collector.health.view().last_error or ""
    assert "showq socket" in error and "fallback" in error and "no-postqueue" in error

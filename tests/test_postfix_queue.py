"""Postfix queue collector on captured real showq output, and its failure handling."""

import json
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors.classify import ClassificationConfig, Classifier
from collectors.postfix_queue import PostfixInstance, PostfixQueueCollector
from collectors.queue_model import QueueMessage
from collectors.showq import decode_showq
from exporter.registry import build_registry

RAW = (Path(__file__).parent / "fixtures" / "postfix_queue" / "showq.bin").read_bytes()
LANES = ClassificationConfig.model_validate({"lanes": {"rules": [
    {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
    {"lane": "low", "match": {"sender_domain": "bulk.example.com"}},
]}})
INSTANCE = PostfixInstance("postfix", "/nonexistent/showq")


class FlakySource:
    """Serves the captured queue, or fails when told to (the MTA going away and coming back)."""

    def __init__(self) -> None:
        self.fail: str | None = None

    def __call__(self, _instance: PostfixInstance) -> Iterator[QueueMessage]:
        if self.fail:
            raise ConnectionRefusedError(self.fail)
        return decode_showq([RAW])


def make() -> tuple[PostfixQueueCollector, CollectorRegistry, FlakySource]:
    source = FlakySource()
    collector = PostfixQueueCollector([INSTANCE], Classifier(LANES), source=source, clock=lambda: 1234.0)
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
            labels = {"queue": queue, "lane": lane}
            n, r, s, oldest = expected.get((queue, lane), (0, 0, 0, None))
            assert registry.get_sample_value("mtaq_queue_messages", labels) == n
            assert registry.get_sample_value("mtaq_queue_recipients", labels) == r
            assert registry.get_sample_value("mtaq_queue_size_bytes", labels) == s
            assert registry.get_sample_value("mtaq_queue_oldest_message_timestamp_seconds", labels) == oldest
    assert registry.get_sample_value("mtaq_up", {"mta": "postfix"}) == 1
    assert registry.get_sample_value("mtaq_collector_success", {"collector": "postfix_queue"}) == 1
    assert registry.get_sample_value("mtaq_queue_last_scan_timestamp_seconds") == 1234.0


def test_deferred_recipients_by_provider_and_reason() -> None:
    collector, registry, _ = make()
    collector.run_refresh()
    # Independent reference from postqueue -j: the simulator's domain and its reply code.
    providers = {"gmail.com": "google", "yahoo.com": "yahoo", "outlook.com": "microsoft", "icloud.com": "apple"}
    reasons = {"4.7.28": "rate_limited", "[TSS04]": "rate_limited", "4.7.650": "rate_limited",
               "4.2.2": "mailbox_full"}
    expected: dict[tuple[str, str], int] = {}
    for line in (Path(__file__).parent / "fixtures" / "postfix_queue" / "postqueue.jsonl").read_text().splitlines():
        for rcpt in json.loads(line)["recipients"]:
            if "delay_reason" in rcpt:
                reason = next(r for code, r in reasons.items() if code in rcpt["delay_reason"])
                key = (providers[rcpt["address"].split("@")[1]], reason)
                expected[key] = expected.get(key, 0) + 1
    assert sum(expected.values()) == 12
    assert collector.snapshot is not None
    assert collector.snapshot.deferred == expected
    for (provider, reason), count in expected.items():
        assert registry.get_sample_value(
            "mtaq_queue_deferred_recipients", {"provider": provider, "reason": reason}) == count


def test_mta_down_keeps_serving_and_recovers() -> None:
    collector, registry, source = make()
    collector.run_refresh()
    source.fail = "Connection refused"
    assert not collector.run_refresh()
    assert registry.get_sample_value("mtaq_up", {"mta": "postfix"}) == 0
    assert registry.get_sample_value("mtaq_collector_success", {"collector": "postfix_queue"}) == 0
    assert "Connection refused" in (collector.health.last_error or "")
    # the last good scan stays visible, its timestamp shows its age
    assert registry.get_sample_value("mtaq_queue_messages", {"queue": "deferred", "lane": "low"}) is not None
    source.fail = None
    assert collector.run_refresh()
    assert registry.get_sample_value("mtaq_up", {"mta": "postfix"}) == 1
    assert collector.health.errors_total == 1


def test_one_failing_instance_marks_down_but_names_it() -> None:
    good = PostfixInstance("a", "/a")
    bad = PostfixInstance("b", "/b")

    def source(instance: PostfixInstance) -> Iterator[QueueMessage]:
        if instance is bad:
            raise PermissionError("Permission denied")
        return decode_showq([RAW])

    collector = PostfixQueueCollector([good, bad], Classifier(LANES), source=source)
    assert not collector.run_refresh()
    assert collector.health.last_error == "OSError: b: Permission denied"
    assert not collector.up


def test_real_socket_fallback_error_names_both_attempts(tmp_path: Path) -> None:
    instance = PostfixInstance("x", str(tmp_path / "showq"), postqueue=str(tmp_path / "no-postqueue"))
    collector = PostfixQueueCollector([instance], Classifier(LANES))
    assert not collector.run_refresh()
    error = collector.health.last_error or ""
    assert "showq socket" in error and "fallback" in error and "no-postqueue" in error

"""Queue reads that misbehave: a showq that hangs or drips, a stream without separators, records
that must not become labels or totals, and shutdown while a read is stuck."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import Classifier
from collectors.deadline import Deadline, ReadTimeout
from collectors.postfix.instance import PostfixInstance, PostfixQueueReader
from collectors.postfix.showq import POSTFIX_QUEUES, ShowqProtocolError, decode_showq
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage, QueueRecipient
from exporter.registry import build_registry
from tests.helpers import AgentProcess, scrape, wait_until

MTA = {"mta": "postfix", "mta_instance": "postfix"}


class SlowShowq:
    """A unix socket that accepts and then sends one byte every ``gap`` seconds (never NUL), or
    nothing at all when ``gap`` is None."""

    def __init__(self, path: Path, gap: float | None) -> None:
        self.path = str(path)
        self.gap = gap
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            while not self.stop.wait(self.gap or 3600):
                try:
                    conn.sendall(b"x")
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture(params=[0.2, None], ids=["dripping", "hanging"])
def slow_showq(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SlowShowq]:
    server = SlowShowq(tmp_path / "showq", request.param)
    yield server
    server.close()


def test_a_slow_showq_read_ends_at_its_deadline(slow_showq: SlowShowq) -> None:
    reader = PostfixQueueReader(PostfixInstance(showq_path=slow_showq.path))
    began = time.monotonic()
    with pytest.raises(ReadTimeout, match="timed out after 1 s"):
        list(reader.read(Deadline(1.0)))
    assert time.monotonic() - began < 2


def test_a_slow_showq_is_down_with_a_reason(slow_showq: SlowShowq) -> None:
    reader = PostfixQueueReader(PostfixInstance(showq_path=slow_showq.path))
    collector = QueueCollector("postfix_queue", "postfix", [reader], Classifier(), POSTFIX_QUEUES,
                               interval=1.0)
    registry = build_registry([collector])
    assert not collector.run_refresh()
    assert registry.get_sample_value("mtaq_up", MTA) == 0
    assert collector.health.view().last_error == "OSError: postfix: timed out after 0.8 s; the next read may take 1.6 s"


class Growing:
    """A queue reader whose read takes ``seconds`` (checking its deadline like a real one)."""

    source_info = ("test", "-")

    def __init__(self, seconds: float) -> None:
        self.name = "postfix"
        self.seconds = seconds
        self.allowed: list[float] = []

    def source(self) -> str:
        return "a queue that takes long to list"

    def read(self, deadline: Deadline) -> Iterator[QueueMessage]:
        self.allowed.append(deadline.seconds)
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            deadline.check()
            time.sleep(0.01)
        yield message("deferred")


def test_a_queue_too_large_for_one_interval_is_read_with_more_time_not_never() -> None:
    reader = Growing(0.5)
    collector = QueueCollector("postfix_queue", "postfix", [reader], Classifier(), POSTFIX_QUEUES,
                               interval=0.25, read_timeout=0.2)
    registry = build_registry([collector])
    assert not collector.run_refresh()  # 0.2 s
    assert not collector.run_refresh()  # 0.4 s
    assert "the next read may take 0.8 s" in str(collector.health.view().last_error)
    assert collector.run_refresh()  # 0.8 s: done
    assert registry.get_sample_value("mtaq_up", MTA) == 1
    assert registry.get_sample_value("mtaq_queue_messages", {**MTA, "queue": "deferred", "lane": "normal"}) == 1
    reader.seconds = 0.0  # the backlog drained: back to the usual time
    assert collector.run_refresh()
    assert collector.run_refresh()
    assert reader.allowed == [0.2, 0.4, 0.8, 0.8, 0.2]


def test_the_longer_read_time_has_a_ceiling() -> None:
    reader = Growing(60.0)
    collector = QueueCollector("postfix_queue", "postfix", [reader], Classifier(), POSTFIX_QUEUES,
                               interval=0.1, read_timeout=0.05)
    for _ in range(7):
        assert not collector.run_refresh()
    # Doubling up to MAX_READ_TIMEOUT_INTERVALS (10) scan intervals, then no further.
    assert reader.allowed == [0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert collector.health.view().last_error == "OSError: postfix: timed out after 1 s"


def test_a_stream_without_separators_is_refused_early() -> None:
    chunks = (b"x" * 65536 for _ in range(1000))  # 64 MiB that would never end a token
    with pytest.raises(ShowqProtocolError, match="more than 1048576 bytes without a separator"):
        list(decode_showq(chunks))


class Records:
    """A queue reader yielding the given records."""

    source_info = ("test", "-")

    def __init__(self, messages: list[QueueMessage]) -> None:
        self.name = "postfix"
        self.messages = messages

    def source(self) -> str:
        return "test records"

    def read(self, _deadline: Deadline) -> Iterator[QueueMessage]:
        return iter(self.messages)


def message(queue: str, arrival: float = 1.7e9, size: int = 100) -> QueueMessage:
    return QueueMessage(queue, "ABC", arrival, size, "a@example.com", (QueueRecipient("b@example.org"),))


def test_records_that_cannot_be_labels_or_totals_are_counted_apart() -> None:
    messages = [message("deferred"), message("deferred"), *(message(f"junk{i}") for i in range(5000)),
                message("active", arrival=float("nan")), message("active", arrival=float("-inf")),
                message("hold", size=-1)]
    collector = QueueCollector("postfix_queue", "postfix", [Records(messages)], Classifier(), POSTFIX_QUEUES)
    registry = build_registry([collector])
    assert collector.run_refresh()
    series = [s for family in registry.collect() for s in family.samples if s.name == "mtaq_queue_messages"]
    assert {s.labels["queue"] for s in series} == set(POSTFIX_QUEUES)
    assert sum(s.value for s in series) == 2
    assert registry.get_sample_value("mtaq_queue_skipped_messages", {**MTA, "reason": "unknown_queue"}) == 5000
    assert registry.get_sample_value("mtaq_queue_skipped_messages", {**MTA, "reason": "bad_value"}) == 3
    oldest = [s for family in registry.collect() for s in family.samples
              if s.name == "mtaq_queue_oldest_message_timestamp_seconds"]
    assert [s.value for s in oldest] == [1.7e9]


def test_sigterm_ends_the_agent_while_a_queue_read_is_stuck(tmp_path: Path) -> None:
    server = SlowShowq(tmp_path / "showq", 0.5)
    try:
        with AgentProcess("--postfix.showq-path", server.path, "--collector.postfix_queue",
                          env={**os.environ, "MTAQ_POSTFIX__QUEUE_SCAN_INTERVAL": "60s"}) as agent:
            agent.wait_ready()
            time.sleep(1)  # the first scan is under way, dripping
            up = ("mtaq_up", (("mta", "postfix"), ("mta_instance", "postfix")))
            assert scrape(agent.port)[up] == 0  # no complete scan yet
            began = time.monotonic()
            agent.proc.send_signal(signal.SIGTERM)
            assert agent.proc.wait(10) == 0
            assert time.monotonic() - began < 5
    finally:
        server.close()


def test_the_dripping_read_turns_up_0_within_its_deadline(tmp_path: Path) -> None:
    server = SlowShowq(tmp_path / "showq", 0.2)
    try:
        with AgentProcess("--postfix.showq-path", server.path, "--collector.postfix_queue",
                          env={**os.environ, "MTAQ_POSTFIX__QUEUE_SCAN_INTERVAL": "2s"}) as agent:
            agent.wait_ready()
            began = time.monotonic()
            wait_until(lambda: "timed out after 1.6 s" in urlopen_text(agent.url("/")), 10, "the timeout on /")
            assert time.monotonic() - began < 5
            assert agent.stop() == 0
    finally:
        server.close()


def urlopen_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()

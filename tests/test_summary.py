"""The incident summary (``exporter/summary.py``) on real collectors fed by the test, with an
injected clock: the depth trend per lane, rates over the window, states against the lane
objectives, masking, and the sections a collector brings."""

from __future__ import annotations

from collections.abc import Iterator

from collectors.classify import Classifier
from collectors.deadline import Deadline
from collectors.lane_objectives import BUILTIN, resolve
from collectors.log_collector import LogCollector
from collectors.postfix.log_events import POSTFIX_LOG
from collectors.postfix.showq import POSTFIX_QUEUES
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage, QueueRecipient
from exporter.config import load_config
from exporter.summary import TREND_POINTS, WINDOW, Summary
from tests.helpers import FakeClock, FakeTailer

LANES = {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}}]}
CONFIG = load_config(None, environ={}, overrides={"lanes": LANES})
OBJECTIVES = resolve(["high", "normal", "low"], "normal", {})


class ListQueue:
    """A queue reader over a list the test changes between scans."""

    name = "postfix"
    source_info = ("test", "-")

    def __init__(self) -> None:
        self.messages: list[QueueMessage] = []

    def source(self) -> str:
        return "a test queue"

    def preflight(self) -> list[str]:
        return []

    def read(self, _deadline: Deadline) -> Iterator[QueueMessage]:
        return iter(list(self.messages))


def message(i: int, arrival: float, sender: str = "news@shop.example", queue: str = "deferred",
            reason: str = "host mx[192.0.2.1] said: 421-4.7.28 rate limited") -> QueueMessage:
    return QueueMessage(queue, f"Q{i:06X}", arrival, 1000, sender, (QueueRecipient(f"u{i}@gmail.com", reason),))


def line(second: int, qid: str, to: str, status: str, dsn: str, reply: str) -> str:
    return (f"Dec  1 10:{second // 60:02d}:{second % 60:02d} mx postfix/smtp[2]: {qid}: to=<{to}>, "
            f"relay=mx.example[192.0.2.1]:25, delay=1, delays=0/0/0/1, dsn={dsn}, status={status} ({reply})")


DEFER = "host mx.example[192.0.2.1] said: 421-4.7.28 unusual rate of unsolicited mail"
SENT = "250 2.0.0 OK"
UNKNOWN = "host mx.example[192.0.2.1] said: 550 5.1.1 user unknown"


def log_collector(clock: FakeClock) -> LogCollector:
    return LogCollector("postfix_log", POSTFIX_LOG, ["mail.log"], Classifier(CONFIG), checkpoint_path=None,
                        clock=clock, tailer_factory=FakeTailer)


def test_trend_keeps_the_depth_of_each_new_scan_only() -> None:
    clock = FakeClock(1_000_000.0)
    reader = ListQueue()
    queue = QueueCollector("postfix_queue", "postfix", [reader], Classifier(CONFIG), POSTFIX_QUEUES, clock=clock)
    summary = Summary([queue], OBJECTIVES, clock=clock)
    depths = [3, 5, 5, 2]
    for depth in depths:
        reader.messages = [message(i, clock.now - 60) for i in range(depth)]
        queue.run_refresh()
        summary.sample()
        summary.sample()  # no new scan in between: no new point
        clock.now += 30
    normal = next(lane for lane in summary.document(trusted=False)["queue"]["lanes"] if lane["lane"] == "normal")
    assert normal["trend"] == depths and normal["trend_seconds"] == 90
    assert (normal["messages"], normal["deferred"], normal["recipients"]) == (2, 2, 2)
    for _ in range(TREND_POINTS + 5):
        queue.run_refresh()
        summary.sample()
        clock.now += 30
    normal = next(lane for lane in summary.document(trusted=False)["queue"]["lanes"] if lane["lane"] == "normal")
    assert len(normal["trend"]) == TREND_POINTS


def test_lane_states_against_the_objectives() -> None:
    clock = FakeClock(1_000_000.0)
    reader = ListQueue()
    high = BUILTIN["high"]
    reader.messages = [
        message(1, clock.now - high.critical_oldest_age - 1, "ops@alerts.example.com"),  # high: too old, critical
        *(message(100 + i, clock.now - 10) for i in range(BUILTIN["normal"].max_messages + 1)),  # normal: too deep
        message(2, clock.now - 10, "ops@alerts.example.com", queue="hold"),
    ]
    queue = QueueCollector("postfix_queue", "postfix", [reader], Classifier(CONFIG), POSTFIX_QUEUES, clock=clock)
    queue.run_refresh()
    lanes = {lane["lane"]: lane for lane in Summary([queue], OBJECTIVES, clock=clock).document(trusted=False)
             ["queue"]["lanes"]}
    assert {name: lane["state"] for name, lane in lanes.items()} == {
        "high": "critical", "normal": "warning", "low": "ok"}
    assert lanes["high"]["oldest_age_seconds"] == high.critical_oldest_age + 1
    assert (lanes["high"]["messages"], lanes["high"]["held"]) == (1, 1)  # hold apart
    assert lanes["normal"]["objective"] == BUILTIN["normal"].model_dump()


def test_rates_and_ratios_over_the_window() -> None:
    clock = FakeClock(1_000_000.0)
    log = log_collector(clock)
    log.process_lines("mail.log", [
        line(0, "AAA111", "a@gmail.com", "deferred", "4.7.28", DEFER),
        line(1, "AAA112", "b@gmail.com", "deferred", "4.7.28", DEFER),
        line(2, "AAA113", "c@yahoo.com", "sent", "2.0.0", SENT)])
    summary = Summary([log], OBJECTIVES, clock=clock)
    summary.sample()
    clock.now += 100
    log.process_lines("mail.log", [
        line(100, "AAA111", "a@gmail.com", "sent", "2.0.0", SENT),
        line(101, "AAA112", "b@gmail.com", "deferred", "4.7.28", DEFER),
        line(102, "AAA114", "d@yahoo.com", "bounced", "5.1.1", UNKNOWN)])
    document = summary.document(trusted=False)
    assert document["window_seconds"] == 100
    providers = {p["provider"]: p for p in document["providers"]}
    assert providers["google"]["window"] == {"sent": 1, "deferred": 1, "bounced": 0, "hard_bounces": 0,
                                             "soft_bounces": 0, "retry_rate": 0.5, "bounce_ratio": 0.0}
    assert providers["yahoo"]["window"] == {"sent": 0, "deferred": 0, "bounced": 1, "hard_bounces": 1,
                                            "soft_bounces": 0, "retry_rate": 0.0, "bounce_ratio": 1.0}
    assert (providers["google"]["sent"], providers["google"]["deferred"]) == (1, 3)  # since start
    (deferred,) = document["deferred"]  # no queue collector: the log's deferrals in the window
    assert deferred == {"provider": "google", "reason": "rate_limited", "recipients": 0, "deferrals_in_window": 1,
                        "sample": DEFER}
    assert document["queue"] is None and document["blocklists"] is None
    # Later, with nothing new: the rate window starts at the newest sample at least WINDOW old.
    summary.sample()
    clock.now += WINDOW + 50
    later = summary.document(trusted=False)
    assert later["window_seconds"] == WINDOW + 50
    assert all(p["window"]["sent"] == p["window"]["deferred"] == 0 for p in later["providers"])
    assert {p["provider"]: p["window"]["retry_rate"] for p in later["providers"]}["google"] is None


def test_dead_letters_masked_unless_trusted() -> None:
    clock = FakeClock(1_000_000.0)
    log = log_collector(clock)
    log.process_lines("mail.log", [
        "Dec  1 10:00:00 mx postfix/qmgr[1]: BBB222: from=<john@shop.example>, size=10, nrcpt=1 (queue active)",
        line(1, "BBB222", "jane@gmail.com", "deferred", "4.7.28", DEFER),
        "Dec  1 10:05:00 mx postfix/qmgr[1]: BBB222: from=<john@shop.example>, status=expired, returned to sender"])
    summary = Summary([log], OBJECTIVES, clock=clock)
    masked, trusted = summary.document(trusted=False), summary.document(trusted=True)
    assert masked["dead_letters"]["total"] == trusted["dead_letters"]["total"] == 1
    (letter,) = masked["dead_letters"]["recent"]
    assert (letter["qid"], letter["sender"], letter["recipients"]) == ("BBB222", "j***@shop.example",
                                                                      ["j***@gmail.com"])
    assert (letter["provider"], letter["reason"], letter["attempts"]) == ("google", "rate_limited", 1)
    assert trusted["dead_letters"]["recent"][0]["sender"] == "john@shop.example"
    assert masked["addresses_masked"] and not trusted["addresses_masked"]


def test_disabled_collectors_banner_and_the_actions_hook() -> None:
    summary = Summary([], OBJECTIVES, disabled=[("dnsbl", "off (`dnsbl.enabled`)")], banner="DEMO")
    document = summary.document(trusted=False)
    assert document["disabled_collectors"] == [{"id": "dnsbl", "default": "off (`dnsbl.enabled`)"}]
    assert document["banner"] == "DEMO" and "actions" not in document
    with_actions = Summary([], OBJECTIVES, actions=lambda: [{"action": "throttle", "provider": "google"}])
    assert with_actions.document(trusted=False)["actions"] == [{"action": "throttle", "provider": "google"}]

"""End to end with two real Postfix instances on one host: the agent's queue metrics for each
instance (``mta_instance`` = its syslog_name) equal that instance's ``postqueue -c DIR -j``, and
each instance's ``mtaq_up`` follows that instance alone."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import scrape, wait_until
from tests.lab.postfix import TRAFFIC, PostfixLab, send_traffic
from tests.lab.provider_smtp import ProviderSMTP

pytestmark = pytest.mark.lab

LANES = {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}},
                   {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]}
PROVIDERS = {"gmail.com": "google", "yahoo.com": "yahoo", "outlook.com": "microsoft", "icloud.com": "apple"}
REASON_CODES = {"4.7.28": "rate_limited", "[TSS04]": "rate_limited", "4.7.650": "rate_limited",
                "4.2.2": "mailbox_full"}
#: The second instance gets bulk mail only, so that its numbers differ from the first one's.
BULK = [("news@bulk.example.com", ["gmail.com", "yahoo.com", "outlook.com", "example.net"])]


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, PostfixLab]]:
    provider = ProviderSMTP().start()
    root = tmp_path_factory.mktemp("pfq")
    labs = {name: PostfixLab(root / name, relay_port=provider.port, syslog_name=name)
            for name in ("postfix-lab", "postfix-bulk")}
    try:
        for lab in labs.values():
            lab.start()
        send_traffic(labs["postfix-lab"])
        send_traffic(labs["postfix-bulk"], traffic=BULK)
        for name, traffic in (("postfix-lab", TRAFFIC), ("postfix-bulk", BULK)):
            lab = labs[name]
            deferred = sum(1 for _, domains in traffic for d in domains if d in PROVIDERS)
            lab.wait_for(lambda lab=lab, n=deferred: sum(1 for m in lab.queue_json()
                                                         if m["queue_name"] == "deferred") == n,
                         what=f"{deferred} deferred messages in {name}")
        yield labs
    finally:
        for lab in labs.values():
            lab.abort()
        provider.stop()


@pytest.fixture(scope="module")
def agent(labs: dict[str, PostfixLab]) -> Iterator[Agent]:
    config = load_config(None, environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0"},
        "postfix": {"enabled": True, "queue_scan_interval": "0.5s",
                    "instances": [{"name": name, "config_dir": str(lab.config_dir)} for name, lab in labs.items()]},
        "lanes": LANES,
    })
    agent = Agent(config)
    agent.start()
    yield agent
    agent.stop()


def lane_of(sender: str) -> str:
    return {"alerts.example.com": "high", "bulk.example.com": "low"}.get(sender.split("@")[-1], "normal")


def reference(queue: list[dict], queues: tuple[str, ...] = ("deferred",)) -> tuple[dict, dict]:
    """Per (queue, lane) totals, and per (provider, reason) recipients with a defer reason in
    ``queues`` (the deferred queue: qshape's view), from postqueue -j."""
    cells: dict[tuple[str, str], list[float]] = {}
    deferred: dict[tuple[str, str], int] = {}
    for m in queue:
        cell = cells.setdefault((m["queue_name"], lane_of(m["sender"])), [0, 0, 0, float("inf")])
        cell[0] += 1
        cell[1] += len(m["recipients"])
        cell[2] += m["message_size"]
        cell[3] = min(cell[3], m["arrival_time"])
        for r in m["recipients"]:
            if "delay_reason" in r and m["queue_name"] in queues:
                reason = next(v for code, v in REASON_CODES.items() if code in r["delay_reason"])
                key = (PROVIDERS[r["address"].split("@")[1]], reason)
                deferred[key] = deferred.get(key, 0) + 1
    return cells, deferred


def of_instance(metrics: dict, name: str, instance: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of family ``name`` for one MTA instance, keyed by their other labels."""
    out = {}
    for (sample, labels), value in metrics.items():
        label_map = dict(labels)
        if sample == name and label_map.get("mta") == "postfix" and label_map.get("mta_instance") == instance:
            out[tuple(sorted((k, v) for k, v in labels if k not in ("mta", "mta_instance")))] = value
    return out


def up(instance: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return "mtaq_up", (("mta", "postfix"), ("mta_instance", instance))


def test_queue_metrics_of_each_instance_match_its_postqueue(labs: dict[str, PostfixLab], agent: Agent) -> None:
    first = labs["postfix-lab"]
    # Issue 10: messages put on hold after their deferral keep their defer reasons; the deferred
    # recipients gauge must count the deferred queue only (held mail shows in queue="hold").
    deferred_ids = [m["queue_id"] for m in first.queue_json() if m["queue_name"] == "deferred"]
    held = deferred_ids[: len(deferred_ids) // 2]
    first.postfix("reload")  # harmless; proves the agent copes with a reload
    for queue_id in held:
        subprocess.run(["postsuper", "-c", str(first.config_dir), "-h", queue_id], check=True, capture_output=True)
    queue = first.queue_json()
    assert sum(1 for m in queue if m["queue_name"] == "hold") == len(held) > 0
    references = {name: reference(lab.queue_json()) for name, lab in labs.items()}
    assert references["postfix-lab"][0] != references["postfix-bulk"][0]
    with_held = reference(queue, ("deferred", "hold"))[1]
    assert sum(with_held.values()) > sum(references["postfix-lab"][1].values())  # the held ones have reasons

    def scraped_matches() -> dict | None:
        metrics = scrape(agent.port)
        for name, (cells, _) in references.items():
            got = {(dict(k)["queue"], dict(k)["lane"]): v
                   for k, v in of_instance(metrics, "mtaq_queue_messages", name).items() if v}
            if got != {k: v[0] for k, v in cells.items()}:
                return None
        return metrics

    metrics = wait_until(scraped_matches, what="the next scans to show each instance's queue, the held message too")
    assert isinstance(metrics, dict)
    for name, (cells, deferred) in references.items():
        families = {family: of_instance(metrics, family, name) for family in (
            "mtaq_queue_messages", "mtaq_queue_recipients", "mtaq_queue_size_bytes",
            "mtaq_queue_oldest_message_timestamp_seconds", "mtaq_queue_deferred_recipients")}
        for queue_name in ("maildrop", "incoming", "active", "deferred", "hold"):
            for lane in ("high", "normal", "low"):
                labels = (("lane", lane), ("queue", queue_name))
                count, recipients, size, oldest = cells.get((queue_name, lane), (0, 0, 0, None))
                assert families["mtaq_queue_messages"][labels] == count, (name, labels)
                assert families["mtaq_queue_recipients"][labels] == recipients, (name, labels)
                assert families["mtaq_queue_size_bytes"][labels] == size, (name, labels)
                assert families["mtaq_queue_oldest_message_timestamp_seconds"].get(labels) == oldest, (name, labels)
        got_deferred = {(dict(k)["provider"], dict(k)["reason"]): v
                        for k, v in families["mtaq_queue_deferred_recipients"].items()}
        assert got_deferred == deferred, name
        assert metrics[up(name)] == 1
    assert set(with_held) == {("google", "rate_limited"), ("yahoo", "rate_limited"),
                              ("microsoft", "rate_limited"), ("apple", "mailbox_full")}
    assert any(queue == "hold" for queue, _ in references["postfix-lab"][0])


def test_each_instance_is_up_or_down_on_its_own(labs: dict[str, PostfixLab], agent: Agent) -> None:
    wait_until(lambda: scrape(agent.port)[up("postfix-bulk")] == 1, what="postfix-bulk up")
    labs["postfix-bulk"].stop()
    wait_until(lambda: scrape(agent.port)[up("postfix-bulk")] == 0, what="mtaq_up 0 after stopping postfix-bulk")
    assert scrape(agent.port)[up("postfix-lab")] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/", timeout=10) as response:
        page = response.read().decode()
    assert "postfix-bulk: Postfix is not running" in page
    labs["postfix-bulk"].postfix("start")
    wait_until(lambda: scrape(agent.port)[up("postfix-bulk")] == 1, timeout=30,
               what="mtaq_up 1 after starting postfix-bulk")

"""End to end with a real Postfix: the agent's queue metrics equal ``postqueue -j``."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest

from exporter.agent import Agent
from exporter.config import load_config
from tests.capture_demo_data import TRAFFIC, send_traffic
from tests.conftest import scrape
from tests.helpers import wait_until
from tests.postfix_lab import PostfixLab, start_lab

pytestmark = pytest.mark.lab

LANES = {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}},
                   {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]}
PROVIDERS = {"gmail.com": "google", "yahoo.com": "yahoo", "outlook.com": "microsoft", "icloud.com": "apple"}
REASON_CODES = {"4.7.28": "rate_limited", "[TSS04]": "rate_limited", "4.7.650": "rate_limited",
                "4.2.2": "mailbox_full"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostfixLab]:
    lab, provider = start_lab(tmp_path_factory.mktemp("pfq"))
    try:
        send_traffic(lab)
        deferred = sum(1 for _, domains in TRAFFIC for d in domains if d in PROVIDERS)
        lab.wait_for(lambda: sum(1 for m in lab.queue_json() if m["queue_name"] == "deferred") == deferred,
                     what=f"{deferred} deferred messages")
        yield lab
    finally:
        lab.abort()
        provider.stop()


@pytest.fixture(scope="module")
def agent(lab: PostfixLab) -> Iterator[Agent]:
    config = load_config(None, environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0"},
        "postfix": {"enabled": True, "queue_scan_interval": "0.5s",
                    "instances": [{"name": "postfix-lab", "config_dir": str(lab.config_dir)}]},
        "lanes": LANES,
    })
    agent = Agent(config)
    agent.start()
    yield agent
    agent.stop()


def lane_of(sender: str) -> str:
    return {"alerts.example.com": "high", "bulk.example.com": "low"}.get(sender.split("@")[-1], "normal")


def reference(queue: list[dict]) -> tuple[dict, dict]:
    """Per (queue, lane) totals and per (provider, reason) deferred recipients from postqueue -j."""
    cells: dict[tuple[str, str], list[float]] = {}
    deferred: dict[tuple[str, str], int] = {}
    for m in queue:
        cell = cells.setdefault((m["queue_name"], lane_of(m["sender"])), [0, 0, 0, float("inf")])
        cell[0] += 1
        cell[1] += len(m["recipients"])
        cell[2] += m["message_size"]
        cell[3] = min(cell[3], m["arrival_time"])
        for r in m["recipients"]:
            if "delay_reason" in r:
                reason = next(v for code, v in REASON_CODES.items() if code in r["delay_reason"])
                key = (PROVIDERS[r["address"].split("@")[1]], reason)
                deferred[key] = deferred.get(key, 0) + 1
    return cells, deferred


def test_queue_metrics_match_postqueue(lab: PostfixLab, agent: Agent) -> None:
    held = lab.queue_json()[0]["queue_id"]
    lab.postfix("reload")  # harmless; proves the agent copes with a reload
    import subprocess
    subprocess.run(["postsuper", "-c", str(lab.config_dir), "-h", held], check=True, capture_output=True)
    queue = lab.queue_json()
    cells, deferred = reference(queue)
    assert ("hold", lane_of(next(m["sender"] for m in queue if m["queue_id"] == held))) in cells

    def scraped_matches() -> dict | None:
        metrics = scrape(agent.port)
        got = {}
        for (name, labels), value in metrics.items():
            if name == "mtaq_queue_messages" and value:
                got[(dict(labels)["queue"], dict(labels)["lane"])] = value
        want = {k: v[0] for k, v in cells.items()}
        return metrics if got == want else None

    metrics = wait_until(scraped_matches, what="the next scan to show the held message")
    assert isinstance(metrics, dict)
    for queue_name in ("maildrop", "incoming", "active", "deferred", "hold"):
        for lane in ("high", "normal", "low"):
            labels = (("lane", lane), ("queue", queue_name))
            count, recipients, size, oldest = cells.get((queue_name, lane), (0, 0, 0, None))
            assert metrics[("mtaq_queue_messages", labels)] == count
            assert metrics[("mtaq_queue_recipients", labels)] == recipients
            assert metrics[("mtaq_queue_size_bytes", labels)] == size
            assert metrics.get(("mtaq_queue_oldest_message_timestamp_seconds", labels)) == oldest
    got_deferred = {(dict(labels)["provider"], dict(labels)["reason"]): value
                    for (name, labels), value in metrics.items() if name == "mtaq_queue_deferred_recipients"}
    assert got_deferred == deferred
    assert {k for k in deferred} == {("google", "rate_limited"), ("yahoo", "rate_limited"),
                                     ("microsoft", "rate_limited"), ("apple", "mailbox_full")}
    assert metrics[("mtaq_up", (("mta", "postfix"),))] == 1


def test_postfix_stop_and_start(lab: PostfixLab, agent: Agent) -> None:
    up = ("mtaq_up", (("mta", "postfix"),))
    wait_until(lambda: scrape(agent.port)[up] == 1, what="mtaq_up 1")
    lab.stop()
    wait_until(lambda: scrape(agent.port)[up] == 0, what="mtaq_up 0 after postfix stop")
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/", timeout=10) as response:
        page = response.read().decode()
    assert "Postfix is not running" in page
    lab.postfix("start")
    wait_until(lambda: scrape(agent.port)[up] == 1, timeout=30, what="mtaq_up 1 after postfix start")

"""The incident summary page at ``/``, rendered by a real headless Chromium: the demo (with its
banner, and the README's screenshot), a real Postfix lab queue with deferrals and its log, and a
100k-message queue. The numbers on the page are compared with ``/metrics`` scraped around the
render (independent: the exposition the collectors render for Prometheus)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import Classifier
from collectors.deadline import Deadline
from collectors.postfix.instance import MTA
from collectors.postfix.showq import POSTFIX_QUEUES
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage, QueueRecipient
from exporter.agent import Agent
from exporter.commands.demo import BANNER
from exporter.config import load_config
from exporter.render import age
from tests import chromium
from tests.helpers import AgentProcess, scrape, wait_until
from tests.lab.dnsbl_server import CLEAN_IP, LISTED_IP, FakeDnsbl, settings_for, standard_world
from tests.lab.postfix import TRAFFIC, PostfixLab, send_traffic
from tests.lab.provider_smtp import ProviderSMTP

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "screenshot-landing.png"
Metrics = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(metrics: Metrics, name: str) -> list[tuple[dict[str, str], float]]:
    return [(dict(labels), value) for (sample, labels), value in metrics.items() if sample == name]


def status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=10) as response:
        return json.loads(response.read())


def render_between_scrapes(port: int, stable: bool = True) -> tuple[chromium.Page, Metrics, float]:
    """The page as Chromium renders it, with /metrics scraped just before and after; with
    ``stable``, retried until both scrapes agree (nothing moved while the page was rendered)."""
    for _ in range(20):
        before = scrape(port)
        dom, seconds = chromium.dump_dom(f"http://127.0.0.1:{port}/")
        after = scrape(port)
        if not stable or _queue_and_log(before) == _queue_and_log(after):
            return chromium.parse(dom), after, seconds
    raise AssertionError("the metrics kept moving while the page was rendered")


def _queue_and_log(metrics: Metrics) -> Metrics:
    # Process metrics (CPU, memory), scan times and durations move with every scan or scrape.
    return {k: v for k, v in metrics.items()
            if k[0].startswith("mtaq_") and "duration" not in k[0] and "last_scan" not in k[0]}


def check_lanes(page: chromium.Page, metrics: Metrics) -> int:
    """Every lane row equals the queue families of /metrics (hold apart; held / frozen: Postfix's hold
    or Exim's frozen, "-" where the MTA has no such queue); returns the rows checked."""
    generated = float(page.attrs["generated"]["data-epoch"])
    expected: dict[tuple[str, str], dict] = {}
    for labels, value in samples(metrics, "mtaq_queue_messages"):
        cell = expected.setdefault((labels["mta_instance"], labels["lane"]),
                                   {"messages": 0, "deferred": None, "held": None, "recipients": 0, "oldest": None})
        queue = labels["queue"]
        if queue != "hold":
            cell["messages"] += int(value)
        if queue == "deferred":
            cell["deferred"] = (cell["deferred"] or 0) + int(value)
        if queue in ("hold", "frozen"):
            cell["held"] = (cell["held"] or 0) + int(value)
    for labels, value in samples(metrics, "mtaq_queue_recipients"):
        if labels["queue"] != "hold":
            expected[(labels["mta_instance"], labels["lane"])]["recipients"] += int(value)
    for labels, value in samples(metrics, "mtaq_queue_oldest_message_timestamp_seconds"):
        cell = expected[(labels["mta_instance"], labels["lane"])]
        if labels["queue"] != "hold" and value:
            cell["oldest"] = value if cell["oldest"] is None else min(cell["oldest"], value)
    objectives = {(labels["lane"], labels["objective"]): value
                  for name in ("mtaq_lane_objective_messages", "mtaq_lane_objective_seconds")
                  for labels, value in samples(metrics, name)}
    rows = page.rows("lanes")
    assert {(r.attrs["data-instance"], r.attrs["data-lane"]) for r in rows} == set(expected)
    for row in rows:
        lane = row.attrs["data-lane"]
        want = expected[(row.attrs["data-instance"], lane)]
        for column in ("messages", "deferred", "held", "recipients"):
            assert row.by_class(column).text == ("-" if want[column] is None else str(want[column])), (lane, column)
        oldest = row.by_class("oldest")
        if want["oldest"] is None:
            assert oldest.text == "-"
        else:
            assert float(oldest.attrs["data-epoch"]) == want["oldest"]
            assert oldest.text == age(generated - want["oldest"])
        assert row.by_class("objective").text == (
            f"{objectives[(lane, 'max_messages')]:g} msgs, {age(objectives[(lane, 'max_oldest_age')])} / "
            f"{age(objectives[(lane, 'critical_oldest_age')])}")
    return len(rows)


def check_deferred(page: chromium.Page, metrics: Metrics) -> None:
    """The provider x reason rows equal mtaq_queue_deferred_recipients (summed over instances)."""
    expected: dict[tuple[str, str], int] = {}
    for labels, value in samples(metrics, "mtaq_queue_deferred_recipients"):
        key = (labels["provider"], labels["reason"])
        expected[key] = expected.get(key, 0) + int(value)
    shown = {(r.by_class("provider").text, r.by_class("reason").text): int(r.by_class("recipients").text)
             for r in page.rows("deferred")}
    assert {k: v for k, v in shown.items() if v} == {k: v for k, v in expected.items() if v}


def check_providers(page: chromium.Page, metrics: Metrics) -> None:
    """Since-start totals per provider equal the delivery counters (provider local left out)."""
    attempts: dict[tuple[str, str], int] = {}
    bounces: dict[tuple[str, str], int] = {}
    for labels, value in samples(metrics, "mtaq_delivery_attempts_total"):
        key = (labels["provider"], labels["status"])
        attempts[key] = attempts.get(key, 0) + int(value)
    for labels, value in samples(metrics, "mtaq_bounces_total"):
        key = (labels["provider"], labels["type"])
        bounces[key] = bounces.get(key, 0) + int(value)
    rows = {r.attrs["data-provider"]: r for r in page.rows("providers")}
    assert set(rows) == {p for p, _ in attempts if p != "local"} | {p for p, _ in bounces if p != "local"}
    for provider, row in rows.items():
        assert int(row.by_class("sent").text) == attempts.get((provider, "sent"), 0), provider
        assert int(row.by_class("deferred").text) == attempts.get((provider, "deferred"), 0), provider
        assert int(row.by_class("hard").text) == bounces.get((provider, "hard"), 0), provider
        assert int(row.by_class("soft").text) == bounces.get((provider, "soft"), 0), provider


# -- the demo ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo() -> Iterator[AgentProcess]:
    # MTAQ_* variables are the agent's configuration: the screenshot switch is not one of them.
    env = {k: v for k, v in os.environ.items() if k != "MTAQ_UPDATE_SCREENSHOT"}
    with AgentProcess("demo", "--lines-per-second", "400", env=env) as agent:
        agent.wait_ready()
        # The first replay of each bundled log is done once its 12 expiries are in: the Postfix
        # log's (554 lines), then the Exim main log's (259 lines, 12 retry timeouts).

        def first_replays() -> bool:
            letters = samples(scrape(agent.port), "mtaq_dead_letters_total")
            return all(sum(v for labels, v in letters if labels["mta"] == mta) >= 12 for mta in ("postfix", "exim"))

        wait_until(first_replays, what="the first replay of each log")
        yield agent


def test_demo_page_renders_with_its_banner_and_equals_metrics(demo: AgentProcess) -> None:
    page, metrics, _ = render_between_scrapes(demo.port, stable=False)
    assert page.texts["banner"] == BANNER
    assert check_lanes(page, metrics) == 6  # the demo's two instances, Postfix and Exim: high, normal, low
    check_deferred(page, metrics)
    states = {r.attrs["data-collector"]: r.cells[1].text for r in page.rows("collectors")}
    assert states == {"postfix_queue": "ok", "postfix_log": "ok", "exim_queue": "ok", "exim_log": "ok"}
    scans = {f"queue {labels['mta']}/{labels['mta_instance']}": v
             for labels, v in samples(metrics, "mtaq_queue_last_scan_timestamp_seconds")}
    shown = {r.cells[0].text: float(r.by_class("last-scan").attrs["data-epoch"])
             for r in page.rows("freshness") if r.cells[0].text.startswith("queue ")}
    assert shown == scans and set(scans) == {"queue postfix/postfix-lab", "queue exim/exim-lab"}
    # The log keeps moving in the demo: the page's count lies between the scrapes around it.
    before = sum(v for _, v in samples(scrape(demo.port), "mtaq_dead_letters_total"))
    page, metrics, _ = render_between_scrapes(demo.port, stable=False)
    shown = int(page.texts["dead-letters-total"])
    assert before <= shown <= sum(v for _, v in samples(metrics, "mtaq_dead_letters_total"))
    # No authentication configured: addresses are masked on the page too.
    senders = {r.by_class("sender").text for r in page.rows("dead-letters")}
    assert senders and all("***@" in s for s in senders), senders


def test_demo_screenshot_for_the_readme(demo: AgentProcess, tmp_path: Path) -> None:
    """Renders the README's screenshot; ``MTAQ_UPDATE_SCREENSHOT=1`` writes it to
    docs/screenshot-landing.png (checked in), else it goes to a temporary file so that a test run
    leaves the checkout clean."""
    target = SCREENSHOT if os.environ.get("MTAQ_UPDATE_SCREENSHOT") == "1" else tmp_path / "landing.png"
    chromium.screenshot(demo.url("/"), target, 1280, 2000)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_page_fits_a_phone(demo: AgentProcess, tmp_path: Path) -> None:
    dom, _ = chromium.dump_dom(demo.url("/"))
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in dom
    assert '<meta http-equiv="refresh" content="15">' in dom
    assert "<script" not in dom and "http://" not in dom.replace(f"http://127.0.0.1:{demo.port}", "")
    chromium.screenshot(demo.url("/"), tmp_path / "phone.png", 390, 844)


# -- a real Postfix queue with deferrals, and its log ----------------------------------------------

@pytest.mark.lab
def test_lab_queue_and_log_on_the_page_equal_metrics(tmp_path: Path) -> None:
    provider = ProviderSMTP().start()
    lab = PostfixLab(tmp_path / "lab", relay_port=provider.port)
    try:
        lab.start()
        send_traffic(lab)
        to_providers = sum(1 for _, domains in TRAFFIC for d in domains
                           if d in ("gmail.com", "yahoo.com", "outlook.com", "icloud.com"))
        lab.wait_for(lambda: sum(1 for m in lab.queue_json() if m["queue_name"] == "deferred") == to_providers,
                     what=f"{to_providers} deferred messages")
        config = load_config(None, environ={}, overrides={
            "web": {"listen_address": "127.0.0.1:0"},
            "postfix": {"enabled": True, "queue_scan_interval": "0.5s",
                        "instances": [{"name": "postfix-lab", "config_dir": str(lab.config_dir)}]},
            "log": {"paths": [str(lab.log_file)], "from": "start"},
            "lanes": {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}},
                                {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]},
            "local_delivery": {"loopback": False}})
        agent = Agent(config)
        agent.start()
        try:
            lines = len(lab.log_file.read_text().splitlines())
            wait_until(lambda: sum(v for _, v in samples(scrape(agent.port), "mtaq_log_lines_total")) >= lines
                       and status(agent.port)["summary"]["queue"]["lanes"], what="the log read and a queue scan")
            page, metrics, _ = render_between_scrapes(agent.port)
            assert check_lanes(page, metrics) == 3
            assert sum(int(r.by_class("deferred").text) for r in page.rows("lanes")) == to_providers
            check_deferred(page, metrics)
            assert page.rows("deferred")  # the provider simulator's deferrals are on the page
            assert all(r.by_class("reply").text.startswith("host 127.0.0.1[127.0.0.1] said:")
                       for r in page.rows("deferred")), "one sample reply per provider x reason, from the log"
            check_providers(page, metrics)
            assert int(page.texts["dead-letters-total"]) == sum(
                v for _, v in samples(metrics, "mtaq_dead_letters_total"))
        finally:
            agent.stop()
    finally:
        lab.abort()
        provider.stop()


# -- 100k queued messages ------------------------------------------------------------------------------

class SyntheticQueue:
    """A queue reader with ``count`` messages over lanes, queues and providers."""

    name = "postfix"
    source_info = ("synthetic", "-")

    def __init__(self, count: int, now: float) -> None:
        domains = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "example.com")
        replies = ("host mx[192.0.2.1] said: 421-4.7.28 rate limited", "host mx[192.0.2.2] said: 421 4.7.0 [TSS04]",
                   "connect to mx[192.0.2.3]:25: Connection timed out", "")
        senders = ("ops@alerts.example.com", "news@bulk.example.com", "billing@shop.example.com")
        self.messages = [QueueMessage(
            POSTFIX_QUEUES[3 if i % 10 else 2], f"Q{i:08X}", now - 60 - (i % 7200), 2000 + i % 5000, senders[i % 3],
            (QueueRecipient(f"user{i}@{domains[i % 5]}", replies[i % 4] if i % 10 else ""),))
            for i in range(count)]

    def source(self) -> str:
        return "a synthetic queue"

    def preflight(self) -> list[str]:
        return []

    def read(self, _deadline: Deadline) -> Iterator[QueueMessage]:
        return iter(self.messages)


def test_a_100k_message_queue_renders_from_memory(capsys: pytest.CaptureFixture[str]) -> None:
    """The page reads the last scan's summary, never the queue: report how long it takes."""
    config = load_config(None, environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0"}, "postfix": {"enabled": False},
        "lanes": {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}},
                            {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]}})
    queue = QueueCollector("postfix_queue", MTA, [SyntheticQueue(100_000, time.time())], Classifier(config),
                           POSTFIX_QUEUES, interval=3600)
    agent = Agent(config, [queue])
    agent.start()
    try:
        wait_until(lambda: queue.snapshot("postfix") is not None, what="the scan of 100k messages")
        start = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/", timeout=30) as response:
            response.read()
        server_seconds = time.monotonic() - start
        page, metrics, browser_seconds = render_between_scrapes(agent.port)
        assert check_lanes(page, metrics) == 3
        assert sum(int(r.by_class("messages").text) for r in page.rows("lanes")) == 100_000
        check_deferred(page, metrics)
        with capsys.disabled():
            print(f"\n100k-message queue: GET / {1000 * server_seconds:.1f} ms; Chromium start, render and "
                  f"exit {browser_seconds:.2f} s; scan {queue.snapshot('postfix').duration_seconds:.2f} s")
    finally:
        agent.stop()


# -- blocklists ---------------------------------------------------------------------------------------

def test_blocklist_listings_with_delisting_links_equal_metrics() -> None:
    with FakeDnsbl() as server:
        standard_world(server)
        dnsbl = settings_for(server).model_dump(mode="json")
        dnsbl["targets"] = {"ips": [LISTED_IP, CLEAN_IP], "domains": []}
        config = load_config(None, environ={}, overrides={
            "web": {"listen_address": "127.0.0.1:0"}, "postfix": {"enabled": False}, "dnsbl": dnsbl})
        agent = Agent(config)
        agent.start()
        try:
            wait_until(lambda: agent.collectors[0].health.view().last_run, what="the first blocklist run")
            page, metrics, _ = render_between_scrapes(agent.port)
        finally:
            agent.stop()
    listings: dict[str, set[tuple[str, str, str, str]]] = {}
    for labels, _ in samples(metrics, "mtaq_dnsbl_listing_info"):
        listings.setdefault(labels["target"], set()).add(
            (labels["list"], labels["code"], labels["meaning"], labels["delist_url"]))
    impact = {labels["target"]: value for labels, value in samples(metrics, "mtaq_dnsbl_impact_score")}
    rows = {r.attrs["data-target"]: r for r in page.rows("blocklists")}
    assert set(rows) == {LISTED_IP, CLEAN_IP} and set(listings) == {LISTED_IP}
    for target, row in rows.items():
        assert float(row.by_class("impact").text) == impact[target]
    # Each listing: the list's name linked to its delisting page, its code and meaning.
    assert set(rows[LISTED_IP].cells[2].links) == {(zone, url) for zone, _, _, url in listings[LISTED_IP]}
    for zone, code, meaning, _ in listings[LISTED_IP]:
        assert f"{zone} {code} {meaning}" in rows[LISTED_IP].cells[2].text
    assert rows[CLEAN_IP].cells[2].text == "not listed"
    assert f"{LISTED_IP} listed on" in page.texts["attention"]

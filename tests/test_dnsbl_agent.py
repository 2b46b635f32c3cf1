"""The blocklist monitor inside the running agent: scheduled run, metrics, JSON API, re-check."""

import json
import urllib.request
from collections.abc import Iterator

import pytest

from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import scrape, wait_until
from tests.lab.dnsbl_server import LISTED_IP, FakeDnsbl, ip4_name, settings_for, standard_world


@pytest.fixture
def running(tmp_path) -> Iterator[tuple[Agent, FakeDnsbl]]:
    with FakeDnsbl() as server:
        standard_world(server)
        dnsbl = settings_for(server).model_dump(mode="json")
        dnsbl["targets"] = {"ips": [LISTED_IP], "domains": []}
        config = load_config(None, environ={}, overrides={
            "web": {"listen_address": "127.0.0.1:0"}, "postfix": {"enabled": False}, "dnsbl": dnsbl})
        agent = Agent(config)
        agent.start()
        try:
            yield agent, server
        finally:
            agent.stop()


def test_scheduled_run_metrics_api_and_recheck(running) -> None:
    agent, server = running
    wait_until(lambda: agent.collectors[0].health.view().last_run, what="first blocklist run")
    metrics = scrape(agent.port)
    assert metrics[("mtaq_dnsbl_listed", (("list", "zen.spamhaus.org"), ("target", LISTED_IP)))] == 1
    assert metrics[("mtaq_collector_success", (("collector", "dnsbl"),))] == 1
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/api/v1/blocklists", timeout=10) as response:
        results = json.loads(response.read())
    assert results["targets"][LISTED_IP]["lists"]["zen.spamhaus.org"]["status"] == "listed"
    assert "SBL" in " ".join(results["targets"][LISTED_IP]["lists"]["zen.spamhaus.org"]["txt"])

    server.remove(ip4_name(LISTED_IP, "zen.spamhaus.org"))
    first = agent.collectors[0].health.view().last_run
    request = urllib.request.Request(f"http://127.0.0.1:{agent.port}/api/v1/blocklists/check", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 202
    wait_until(lambda: agent.collectors[0].health.view().last_run != first, what="the re-check")
    metrics = scrape(agent.port)
    assert metrics[("mtaq_dnsbl_listed", (("list", "zen.spamhaus.org"), ("target", LISTED_IP)))] == 0

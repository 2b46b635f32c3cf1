"""The blocklist monitor inside the running agent: scheduled run, metrics, JSON API, re-check."""

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import scrape, wait_until
from tests.lab.dnsbl_server import LISTED_IP, FakeDnsbl, ip4_name, settings_for, standard_world


def post(port: int, path: str, content_type: str = "application/json") -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(params=[{"unauthenticated_writes": True}], ids=["writes allowed"])
def running(request: pytest.FixtureRequest) -> Iterator[tuple[Agent, FakeDnsbl]]:
    with FakeDnsbl() as server:
        standard_world(server)
        dnsbl = settings_for(server).model_dump(mode="json")
        dnsbl["targets"] = {"ips": [LISTED_IP], "domains": []}
        config = load_config(None, environ={}, overrides={
            "web": {"listen_address": "127.0.0.1:0", **request.param}, "postfix": {"enabled": False},
            "dnsbl": dnsbl})
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
    # A cross-site form posts text/plain: refused before anything runs.
    assert post(agent.port, "/api/v1/blocklists/check", "text/plain") == 415
    assert post(agent.port, "/api/v1/blocklists/check") == 202
    wait_until(lambda: agent.collectors[0].health.view().last_run != first, what="the re-check")
    metrics = scrape(agent.port)
    assert metrics[("mtaq_dnsbl_listed", (("list", "zen.spamhaus.org"), ("target", LISTED_IP)))] == 0
    # Blocklist operators rate-limit resolvers: another on-demand run waits dnsbl.min_recheck_interval.
    queries = len(server.queries)
    assert post(agent.port, "/api/v1/blocklists/check") == 429
    assert len(server.queries) == queries


@pytest.mark.parametrize("running", [{}], ids=["default config"], indirect=True)
def test_default_config_refuses_the_recheck(running) -> None:
    agent, server = running
    wait_until(lambda: agent.collectors[0].health.view().last_run, what="first blocklist run")
    queries = len(server.queries)
    assert post(agent.port, "/api/v1/blocklists/check") == 403
    assert len(server.queries) == queries

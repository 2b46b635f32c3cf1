"""End to end with real tools: Postfix → agent → Prometheus (shipped rules) → Alertmanager → webhook.

Real Postfix relays to the provider simulator, the agent tails its log and reads its queue and
checks a loopback blocklist server, a real Prometheus scrapes the agent with the shipped rules
(``for:`` shortened so the test does not wait minutes; promtool's unit tests cover the real
durations), and a real Alertmanager with the example routing delivers the throttle alert to the
agent's webhook (actions in dry-run) and the rest to a local receiver standing in for Slack.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import free_port, wait_until
from tests.lab import prometheus as promlab
from tests.lab.dnsbl_server import LISTED_IP, FakeDnsbl, settings_for, standard_world
from tests.lab.postfix import PostfixLab, send_traffic, start_lab
from tests.lab.prometheus import Receiver

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "e2e-webhook-token"
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m", "${datasource}": "",
             "$job": "mtaq", "$instance": ".+", "$mta_instance": ".*", "$mta": ".*"}  # the longer name first


def dashboard_queries() -> list[tuple[str, str]]:
    """(dashboard panel title, PromQL with Grafana variables substituted) for every target."""
    found = []
    for path in sorted((ROOT / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        panels = [p for panel in board["panels"] for p in [panel, *panel.get("panels", [])]]
        for panel in panels:
            for target in panel.get("targets", []):
                expr = target.get("expr", "")
                for name, value in VARIABLES.items():
                    expr = expr.replace(name, value)
                found.append((f"{path.name}: {panel.get('title')}", expr))
    return found


def recorded_series() -> list[str]:
    groups = yaml.safe_load((ROOT / "rules" / "mtaq.rules.yml").read_text())["groups"]
    return [rule["record"] for group in groups for rule in group["rules"] if "record" in rule]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("e2e")
    lab, provider = start_lab(tmp / "postfix", queue_run_delay="1s", minimal_backoff_time="1s",
                              maximal_backoff_time="2s", maximal_queue_lifetime="20s",
                              bounce_queue_lifetime="20s")
    dns = FakeDnsbl().start()
    standard_world(dns)
    dnsbl = settings_for(dns).model_dump(mode="json")
    dnsbl["targets"] = {"ips": [LISTED_IP], "domains": []}
    port = free_port()
    token = tmp / "token"
    token.write_text(TOKEN)
    agent = Agent(load_config(None, environ={}, overrides={
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "postfix": {"enabled": True, "queue_scan_interval": "1s",
                    "instances": [{"name": "postfix-lab", "config_dir": str(lab.config_dir)}]},
        "log": {"paths": [str(lab.log_file)], "from": "start"},
        "lanes": {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}},
                            {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]},
        "dnsbl": dnsbl,
        "local_delivery": {"loopback": False},  # the lab's loopback relay stands in for the providers
        # Dry-run, as an operator starts: the throttle route of the example reaches the agent,
        # which decides and counts but changes nothing (tests/test_actions_e2e.py acts).
        "actions": {"enabled": True, "agent_labels": {"instance": f"127.0.0.1:{port}"},
                    "webhook": {"bearer_token_file": str(token)},
                    "rules": [{"alertname": "MtaqProviderRateLimited", "action": "postfix_throttle",
                               "params": {"destination_rate_delay": "2s"}, "ttl": "1h"}]},
    }))
    agent.start()
    receiver = Receiver()
    rules = tmp / "rules.yml"
    rules.write_text(re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 1s", (ROOT / "rules" / "mtaq.rules.yml").read_text()))
    am_config = yaml.safe_load((ROOT / "examples" / "alertmanager.yml").read_text())
    am_config["global"]["slack_api_url"] = f"{receiver.url}/slack"
    for entry in am_config["receivers"]:
        for hook in entry.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{port}/api/v1/alerts"
            hook["http_config"]["authorization"]["credentials_file"] = str(token)
    servers: list[promlab.Server] = []
    try:
        am = promlab.start_alertmanager(tmp / "am", config=am_config)
        servers.append(am)
        prom = promlab.start_prometheus(tmp / "prom", targets=[f"127.0.0.1:{agent.port}"], rule_files=[rules],
                                        alertmanager=am)
        servers.append(prom)
        yield {"lab": lab, "agent": agent, "prom": prom, "receiver": receiver}
    finally:
        for server in servers:
            promlab.stop(server)
        receiver.stop()
        agent.stop()
        dns.stop()
        lab.abort()
        provider.stop()


def test_rate_limit_alert_fires_and_reaches_the_webhook(stack: dict) -> None:
    lab: PostfixLab = stack["lab"]
    send_traffic(lab, rounds=2)
    alert = promlab.wait_for_alert(stack["prom"].url, "MtaqProviderRateLimited", labels={"provider": "google"},
                                   timeout=120)
    assert alert["labels"]["action"] == "throttle"
    agent: Agent = stack["agent"]

    def decided() -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/api/v1/actions", timeout=10) as response:
            history = json.loads(response.read())["history"]
        return [h for h in history if h.get("source") == "webhook" and h.get("provider") == "google"]

    # Alertmanager authenticated with the token (else 401, and no decision) and the agent, in
    # dry-run, decided what it would do. The history is newest first: take the first decision.
    decision = wait_until(decided, 60, "the webhook decision", interval=0.5)[-1]
    assert (decision["alertname"], decision["decision"], decision["status"]) == (
        "MtaqProviderRateLimited", "dry_run", "firing")
    receiver: Receiver = stack["receiver"]
    wait_until(lambda: any(path == "/slack" for path, _, _ in receiver.posts), 60, "the Slack notification",
               interval=0.5)


def test_every_recording_rule_and_dashboard_query_returns_data(stack: dict) -> None:
    lab: PostfixLab = stack["lab"]
    prom = stack["prom"]
    send_traffic(lab)  # a later round keeps rates alive while the first rounds expire
    queries = [(f"recording rule {name}", name) for name in recorded_series()] + dashboard_queries()
    deadline = time.monotonic() + 150
    while True:
        empty = [(where, expr) for where, expr in queries if not promlab.query(prom.url, expr)]
        if not empty:
            break
        if time.monotonic() > deadline:
            pytest.fail("queries without data:\n" + "\n".join(f"  {w}: {e}" for w, e in empty))
        time.sleep(2)
        send_traffic(lab)

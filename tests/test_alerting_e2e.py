"""End to end with real tools: Postfix → agent → Prometheus (shipped rules) → Alertmanager → webhook.

Real Postfix relays to the provider simulator, the agent tails its log and reads its queue and
checks a loopback blocklist server, a real Prometheus scrapes the agent with the shipped rules
(``for:`` shortened so the test does not wait minutes; promtool's unit tests cover the real
durations), and a real Alertmanager with the example routing delivers to a local receiver.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from exporter.agent import Agent
from exporter.config import load_config
from tests.lab import prometheus as promlab
from tests.lab.dnsbl_server import LISTED_IP, FakeDnsbl, settings_for, standard_world
from tests.lab.postfix import PostfixLab, send_traffic, start_lab

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "e2e-webhook-token"
VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m", "${datasource}": "",
             "$job": "mtaq", "$instance": ".+", "$mta_instance": ".*", "$mta": ".*"}  # the longer name first


class Receiver:
    """Records every POST (Alertmanager webhook and Slack notifications) on a loopback port."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], dict]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((self.path, dict(self.headers), json.loads(body or b"{}")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()


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
    agent = Agent(load_config(None, environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0"},
        "postfix": {"enabled": True, "queue_scan_interval": "1s",
                    "instances": [{"name": "postfix-lab", "config_dir": str(lab.config_dir)}]},
        "log": {"paths": [str(lab.log_file)], "from": "start"},
        "lanes": {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}},
                            {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]},
        "dnsbl": dnsbl,
        "local_delivery": {"loopback": False},  # the lab's loopback relay stands in for the providers
    }))
    agent.start()
    receiver = Receiver()
    rules = tmp / "rules.yml"
    rules.write_text(re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 1s", (ROOT / "rules" / "mtaq.rules.yml").read_text()))
    am_config = yaml.safe_load((ROOT / "examples" / "alertmanager.yml").read_text())
    am_config["global"]["slack_api_url"] = f"{receiver.url}/slack"
    token = tmp / "token"
    token.write_text(TOKEN)
    for entry in am_config["receivers"]:
        for hook in entry.get("webhook_configs", []):
            hook["url"] = f"{receiver.url}/api/v1/alerts"
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
    receiver: Receiver = stack["receiver"]
    deadline = time.monotonic() + 60
    while True:
        hooks = [(headers, body) for path, headers, body in receiver.posts if path == "/api/v1/alerts"]
        names = {a["labels"]["alertname"] for _, body in hooks for a in body.get("alerts", [])}
        if "MtaqProviderRateLimited" in names:
            break
        assert time.monotonic() < deadline, f"webhook never got the alert; posts: {receiver.posts[:3]}"
        time.sleep(0.5)
    headers, body = next((h, b) for h, b in hooks if any(a["labels"]["alertname"] == "MtaqProviderRateLimited"
                                                         for a in b["alerts"]))
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert body["version"] == "4" and body["status"] == "firing"


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

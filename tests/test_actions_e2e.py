"""Actions end to end with real parts: a provider starts rate-limiting, the shipped rule fires in a
real Prometheus, the example Alertmanager routing delivers it to the agent's webhook, the agent
throttles that provider's transport in a real Postfix, the simulator sees deliveries slow to the
throttle's pace, and once the provider recovers and the alert resolves, ``postconf -n`` is
byte-identical to before. A second test drives the same through pull mode from a real
Alertmanager, across an agent restart.

Shortened for the test (the promtool unit tests check the real values): the rules' ``for:`` (1 s)
and their 5-minute rate windows (20 s), Alertmanager's group timings, the throttle's cool-down.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import free_port, scrape, wait_until
from tests.lab import prometheus as promlab
from tests.lab.postfix import PostfixLab, start_lab
from tests.lab.prometheus import Receiver
from tests.lab.provider_smtp import ProviderSMTP, RateLimit

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "actions-e2e-token"
DOMAIN = "googlemail.com"  # a Google domain the simulator answers only through its rate limit
LIMIT = RateLimit(limit=5, window=10.0)
DELAY = 3  # seconds between deliveries under the throttle: 10 s / 3 s well under LIMIT.limit
# The throttle removes its own cause: deferrals stop, and the alert resolves one rate window
# later. The cool-down is what holds the throttle after that; here it outlasts the observation.
THROTTLE = {"alertname": "MtaqProviderRateLimited", "action": "postfix_throttle",
            "params": {"destination_rate_delay": f"{DELAY}s"}, "ttl": "10m", "cooldown": "40s"}


def postconf_n(lab: PostfixLab) -> str:
    return subprocess.run(["postconf", "-c", str(lab.config_dir), "-n"], capture_output=True, text=True,
                          check=True).stdout


def start_agent(lab: PostfixLab, tmp: Path, port: int, **actions: object) -> Agent:
    token = tmp / "webhook-token"
    token.write_text(TOKEN + "\n")
    agent = Agent(load_config(None, environ={}, overrides={
        "web": {"listen_address": f"127.0.0.1:{port}"},
        "postfix": {"enabled": True, "queue_scan_interval": "1s",
                    "instances": [{"name": "postfix-lab", "config_dir": str(lab.config_dir)}]},
        "log": {"paths": [str(lab.log_file)], "from": "end"},
        "local_delivery": {"loopback": False},  # the lab's loopback relay stands in for the providers
        "actions": {"enabled": True, "dry_run": False, "state_file": str(tmp / "actions.json"),
                    "agent_labels": {"instance": f"127.0.0.1:{port}"},
                    "webhook": {"bearer_token_file": str(token)}, "rules": [THROTTLE], **actions},
    }))
    agent.start()
    return agent


def actions_document(agent: Agent) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/api/v1/actions", timeout=10) as response:
        return json.loads(response.read())


def in_force(agent: Agent, action_id: str) -> bool:
    return any(a["id"] == action_id and a["changes"] for a in actions_document(agent)["active"])


def counted(agent: Agent, provider: str, result: str) -> float:
    return scrape(agent.port).get(("mtaq_actions_total", (("action", "postfix_throttle"), ("provider", provider),
                                                          ("result", result))), 0.0)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostfixLab, ProviderSMTP, str]]:
    """A Postfix set up for throttling by the operator's command; yields the ``postconf -n`` the
    actions must always return to."""
    provider = ProviderSMTP(limits={})
    lab, provider = start_lab(tmp_path_factory.mktemp("actions-e2e"), provider=provider, queue_run_delay="1s",
                              minimal_backoff_time="1s", maximal_backoff_time="2s")
    try:
        setup = subprocess.run([sys.executable, "-m", "exporter.cli", "actions", "setup-postfix", "--config-dir",
                                str(lab.config_dir), "--apply"], capture_output=True, text=True, timeout=120)
        assert setup.returncode == 0, setup.stdout + setup.stderr
        yield lab, provider, postconf_n(lab)
    finally:
        lab.abort()
        provider.stop()


class Traffic:
    """Submits one message to ``DOMAIN`` every ``pause`` seconds until stopped."""

    def __init__(self, lab: PostfixLab, pause: float = 0.2) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(lab, pause), daemon=True)
        self._thread.start()

    def _run(self, lab: PostfixLab, pause: float) -> None:
        while not self._stop.is_set():
            lab.send("news@bulk.example.com", [f"user{self.sent}@{DOMAIN}"], subject="burst")
            self.sent += 1
            self._stop.wait(pause)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(30)
        return self.sent


def alertmanager_config(agent: Agent, tmp: Path, receiver: Receiver) -> dict:
    """The example routing, pointed at this agent and a local receiver, with test-speed timings."""
    config = yaml.safe_load((ROOT / "examples" / "alertmanager.yml").read_text())
    config["global"]["slack_api_url"] = f"{receiver.url}/slack"
    token = tmp / "am-token"
    token.write_text(TOKEN)
    for entry in config["receivers"]:
        for hook in entry.get("webhook_configs", []):
            hook["url"] = f"http://127.0.0.1:{agent.port}/api/v1/alerts"
            hook["http_config"]["authorization"]["credentials_file"] = str(token)
    [throttle] = [r for r in config["route"]["routes"] if r["receiver"] == "mtaq-throttle"]
    throttle.update(group_wait="0s", group_interval="1s")
    return config


def test_a_rate_limited_provider_is_throttled_then_restored(lab: tuple[PostfixLab, ProviderSMTP, str],
                                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    postfix, provider, original = lab
    agent = start_agent(postfix, tmp_path, free_port())
    receiver = Receiver()
    rules = tmp_path / "rules.yml"
    text = (ROOT / "rules" / "mtaq.rules.yml").read_text()
    rules.write_text(re.sub(r"(?m)^(\s+)for: \S+$", r"\1for: 1s", text).replace("[5m]", "[20s]"))
    servers: list[promlab.Server] = []
    traffic: Traffic | None = None
    try:
        am = promlab.start_alertmanager(tmp_path / "am", config=alertmanager_config(agent, tmp_path, receiver))
        servers.append(am)
        prom = promlab.start_prometheus(tmp_path / "prom", targets=[f"127.0.0.1:{agent.port}"],
                                        rule_files=[rules], alertmanager=am)
        servers.append(prom)

        provider.limits[DOMAIN] = LIMIT  # the provider starts answering bursts with 421 4.7.28
        traffic = Traffic(postfix)
        started = time.time()
        promlab.wait_for_alert(prom.url, "MtaqProviderRateLimited", labels={"provider": "google"}, timeout=120)
        fired_at = time.time()
        wait_until(lambda: in_force(agent, "postfix_throttle:google"), 60, "the throttle to be applied",
                   interval=0.5)
        applied_at = time.time()
        attempts_before = (provider.stats.delivered_to(DOMAIN, started, applied_at)
                           + provider.stats.rejected.get(DOMAIN, 0)) / (applied_at - started) * 60
        assert f"mtaq-google_destination_rate_delay = {DELAY}s\n" in postconf_n(postfix)
        assert counted(agent, "google", "applied") == 1
        wait_until(lambda: promlab.query_value(prom.url, 'mtaq_action_active{provider="google"}') == 1, 30,
                   "Prometheus to see the throttle in force", interval=0.5)

        # Under the throttle Postfix delivers one message per DELAY seconds and the provider,
        # which allows LIMIT.limit per LIMIT.window, stops deferring.
        time.sleep(LIMIT.window + 2)  # the provider's window forgets the burst before the throttle
        observe_from = time.time()
        rejected_before = provider.stats.rejected.get(DOMAIN, 0)
        time.sleep(25)
        observe_to = time.time()
        sent = traffic.stop()
        traffic = None
        with provider.stats.lock:
            times = sorted(at for at, d in provider.stats.delivered_at if d == DOMAIN
                           and observe_from <= at < observe_to)
        # qmgr's timers tick in whole seconds and the simulator stamps a delivery when DATA ends,
        # so single gaps vary by a second or so: check the pace over the window.
        gaps = [round(b - a, 2) for a, b in itertools.pairwise(times)]
        assert rejected_before > 0  # what made the alert fire
        assert len(times) >= 5, f"the throttled transport stalled: {gaps}"
        assert (times[-1] - times[0]) / (len(times) - 1) >= DELAY - 0.5, gaps
        assert provider.stats.rejected.get(DOMAIN, 0) - rejected_before == 0
        # Attempts per minute at the simulator: Postfix's retries hammering it before, the
        # throttle's pace after.
        attempts_after = len(times) / (observe_to - observe_from) * 60
        assert attempts_after <= 60 / (DELAY - 0.5) < attempts_before, (attempts_before, attempts_after)
        with capsys.disabled():
            print(f"\nactions e2e: alert fired after {fired_at - started:.1f} s of traffic, throttle in force "
                  f"{applied_at - fired_at:.1f} s later; attempts/min at the simulator {attempts_before:.0f} "
                  f"before, {attempts_after:.0f} under the throttle")

        # The provider recovers; the alert has resolved (no deferrals for a rate window), and
        # after the cool-down the throttle is undone exactly.
        provider.limits.clear()
        wait_until(lambda: not actions_document(agent)["active"], 150, "the throttle to be restored",
                   interval=0.5)
        assert postconf_n(postfix) == original
        assert counted(agent, "google", "restored") == 1 and counted(agent, "google", "failed") == 0
        history = [h["decision"] for h in actions_document(agent)["history"]]
        assert history[:3] == ["restored", "restore_scheduled", "in_force"], history
        assert time.time() - applied_at > 20  # it was the resolution that ended it, not a lapse

        # Nothing was lost: every message reaches the provider once the throttle is gone.
        postfix.wait_for(lambda: sum(1 for _, d in provider.stats.delivered_at if d == DOMAIN) >= sent,
                         timeout=120, what=f"all {sent} messages to {DOMAIN} delivered")
        assert sum(1 for _, d in provider.stats.delivered_at if d == DOMAIN) == sent
    finally:
        if traffic is not None:
            traffic.stop()
        provider.limits.clear()
        for server in servers:
            promlab.stop(server)
        receiver.stop()
        agent.stop()


def post_alert(am: promlab.Server, labels: dict[str, str], ends: datetime) -> None:
    """Push an alert into Alertmanager as Prometheus does (API v2)."""
    now = datetime.now(UTC)
    body = json.dumps([{"labels": labels, "startsAt": (now - timedelta(minutes=1)).isoformat(),
                        "endsAt": ends.isoformat()}]).encode()
    request = urllib.request.Request(f"{am.url}/api/v2/alerts", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


def test_pull_mode_across_a_restart(lab: tuple[PostfixLab, ProviderSMTP, str], tmp_path: Path) -> None:
    postfix, _provider, original = lab
    port = free_port()
    am = promlab.start_alertmanager(tmp_path / "am")  # no receivers: the agent asks for its alerts
    pull = {"webhook": {"enabled": False}, "pull": {"url": am.url, "interval": "1s"}}
    labels = {"alertname": "MtaqProviderRateLimited", "provider": "yahoo", "action": "throttle",
              "instance": f"127.0.0.1:{port}", "severity": "warning"}
    agent = start_agent(postfix, tmp_path, port, **pull)
    try:
        post_alert(am, labels, datetime.now(UTC) + timedelta(minutes=10))
        post_alert(am, {**labels, "instance": "other-mta:10154"}, datetime.now(UTC) + timedelta(minutes=10))
        wait_until(lambda: in_force(agent, "postfix_throttle:yahoo"), 30, "the throttle from pull mode", interval=0.5)
        throttled = postconf_n(postfix)
        assert f"mtaq-yahoo_destination_rate_delay = {DELAY}s\n" in throttled
        assert [a["id"] for a in actions_document(agent)["active"]] == ["postfix_throttle:yahoo"]

        # A restart finds the action in its state file and keeps it in force, changing nothing.
        agent.stop()
        agent = start_agent(postfix, tmp_path, port, **pull)
        wait_until(lambda: any(h["why"] == "applied again after a restart"
                               for h in actions_document(agent)["history"]), 30, "the re-apply after the restart",
                   interval=0.5)
        assert postconf_n(postfix) == throttled

        post_alert(am, labels, datetime.now(UTC))  # resolved: it leaves Alertmanager's active list
        wait_until(lambda: not actions_document(agent)["active"], 60, "the restore after the alert resolved",
                   interval=0.5)
        assert postconf_n(postfix) == original
        assert counted(agent, "yahoo", "restored") == 1
    finally:
        agent.stop()
        promlab.stop(am)

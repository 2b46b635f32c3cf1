"""Both MTAs in one agent: a real Postfix and a real Exim on one host, one agent reading both
queues and both logs. The exposition is clean for promtool, each family has one HELP line, and
every queue and delivery series says which MTA it comes from."""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import scrape, wait_until
from tests.lab import exim as exim_lab
from tests.lab import postfix as postfix_lab
from tests.lab.postfix import send_traffic
from tests.lab.provider_smtp import ProviderSMTP

pytestmark = pytest.mark.lab


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    reason = exim_lab.available()
    if reason:
        pytest.skip(reason)
    provider = ProviderSMTP(addresses=(exim_lab.DEFAULT_HOST, *exim_lab.PROVIDER_HOSTS.values()))
    postfix, _ = postfix_lab.start_lab(tmp_path / "postfix", provider=provider)  # starts the simulator too
    exim = exim_lab.EximLab(tmp_path / "exim", relay_port=provider.port)
    try:
        exim.start()
        agent = Agent(load_config(environ={}, overrides={
            "web": {"listen_address": "127.0.0.1:0"}, "local_delivery": {"loopback": False},
            "postfix": {"enabled": True, "queue_scan_interval": "1s", "instances": [
                {"name": "postfix-lab", "config_dir": str(postfix.config_dir), "showq_path": str(postfix.showq_path)}]},
            "log": {"paths": [str(postfix.log_file)], "from": "start"},
            "exim": {"queue_scan_interval": "1s", "instances": [
                {"name": "exim-lab", "spool_directory": str(exim.spool), "log_path": str(exim.mainlog)}]}}))
        agent.start()
        send_traffic(postfix)
        send_traffic(exim)  # type: ignore[arg-type] - it only needs send()
        yield agent
        agent.stop()
    finally:
        exim.stop()
        postfix.abort()
        provider.stop()


def test_one_agent_two_mtas(agent: Agent) -> None:
    def both_deferring() -> bool:
        metrics = scrape(agent.port)
        return all(metrics.get(("mtaq_deferrals_total", (("mta", mta), ("mta_instance", f"{mta}-lab"),
                                                         ("provider", "google"), ("reason", "rate_limited"))), 0) >= 1
                   for mta in ("postfix", "exim"))

    wait_until(both_deferring, 90, "Gmail's throttle reply deferring mail in both MTAs")
    metrics = scrape(agent.port)
    assert metrics[("mtaq_up", (("mta", "exim"), ("mta_instance", "exim-lab")))] == 1
    assert metrics[("mtaq_up", (("mta", "postfix"), ("mta_instance", "postfix-lab")))] == 1
    queues = {(dict(labels)["mta"], dict(labels)["queue"]) for (name, labels), _ in metrics.items()
              if name == "mtaq_queue_messages"}
    assert {("exim", "queued"), ("exim", "frozen"), ("postfix", "deferred"), ("postfix", "hold")} <= queues
    for mta in ("postfix", "exim"):
        attempts = sum(v for (name, labels), v in metrics.items()
                       if name == "mtaq_delivery_attempts_total" and dict(labels)["mta"] == mta)
        assert attempts >= 1, mta
    with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=10) as response:
        text = response.read().decode()
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps))
    if shutil.which("promtool") is None:
        pytest.skip("promtool (Debian package prometheus) is not installed")
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr

"""The real Prometheus and Alertmanager load the shipped rules (tests/promlab.py)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import wait_until
from tests.lab import prometheus as promlab

pytestmark = pytest.mark.skipif(
    promlab.binary(promlab.PROMETHEUS) is None or promlab.binary(promlab.ALERTMANAGER) is None,
    reason="Debian packages prometheus / prometheus-alertmanager are not installed",
)


def shipped_rules() -> dict[str, set[str]]:
    """Group name -> names of its alerts and recording rules, from rules/mtaq.rules.yml."""
    doc = yaml.safe_load(promlab.RULES.read_text())
    return {g["name"]: {r.get("alert") or r["record"] for r in g["rules"]} for g in doc["groups"]}


def test_prometheus_loads_and_evaluates_shipped_rules(tmp_path: Path) -> None:
    am = promlab.start_alertmanager(tmp_path / "am", webhook_url="http://127.0.0.1:9/api/v1/alerts",
                                    bearer_token="test-token")
    prom = None
    try:
        prom = promlab.start_prometheus(tmp_path / "prom", rule_files=[promlab.RULES], alertmanager=am)

        groups = promlab.rules(prom.url)
        loaded = {g["name"]: {r["name"] for r in g["rules"]} for g in groups}
        assert loaded == shipped_rules()

        # Every rule is evaluated by the real engine without error (1 s evaluation interval).
        def all_evaluated() -> bool:
            rules = [r for g in promlab.rules(prom.url) for r in g["rules"]]
            errors = [(r["name"], r.get("lastError")) for r in rules if r.get("health") == "err"]
            assert not errors, errors
            return all(r.get("health") == "ok" for r in rules)

        wait_until(all_evaluated, timeout=10, what="every rule evaluated once")

        # No mtaq target at all: the meta-alert is pending (it fires after 15 minutes).
        alert = promlab.wait_for_alert(prom.url, "MtaqAgentAbsent", state="pending", timeout=10)
        assert alert["labels"]["severity"] == "warning"
        assert promlab.query_value(prom.url, 'absent(up{job=~".*mtaq.*"})') == 1.0

        # The Alertmanager runs unclustered with the generated webhook receiver. (Prometheus picks
        # it up through service discovery a few seconds after start; end-to-end tests wait for it.)
        with urllib.request.urlopen(f"{am.url}/api/v2/status", timeout=5) as response:
            status = json.load(response)
        assert status["cluster"]["status"] == "disabled"
        assert "http://127.0.0.1:9/api/v1/alerts" in status["config"]["original"]
    finally:
        promlab.stop(prom)
        promlab.stop(am)
    assert prom.process.returncode is not None and am.process.returncode is not None

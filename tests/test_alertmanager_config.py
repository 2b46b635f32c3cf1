"""examples/alertmanager.yml and examples/prometheus.yml: valid for amtool/promtool, and the throttle
route reaches the agent's webhook."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTMANAGER_YML = ROOT / "examples" / "alertmanager.yml"
PROMETHEUS_YML = ROOT / "examples" / "prometheus.yml"
RULES = ROOT / "rules" / "mtaq.rules.yml"
WEBHOOK_URL = "http://localhost:10154/api/v1/alerts"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian packages prometheus / prometheus-alertmanager)")
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL)


def routes(*labels: str) -> list[str]:
    """Receivers `amtool config routes test` picks for an alert with these labels."""
    result = run(tool("amtool"), "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


def receiver(name: str) -> dict:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    return next(r for r in config["receivers"] if r["name"] == name)


def test_amtool_check_config() -> None:
    result = run(tool("amtool"), "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rate_limited_alert_reaches_the_throttle_webhook() -> None:
    reached = routes("alertname=MtaqProviderRateLimited", "action=throttle", "provider=google")
    assert "mtaq-throttle" in reached
    hooks = receiver("mtaq-throttle")["webhook_configs"]
    assert [h["url"] for h in hooks] == [WEBHOOK_URL]
    hook = hooks[0]
    assert hook["send_resolved"] is True
    auth = hook["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer" and auth["credentials_file"]
    assert "credentials" not in auth


def test_throttle_alerts_also_reach_humans() -> None:
    reached = routes("alertname=MtaqProviderRateLimited", "action=throttle", "provider=google",
                     "severity=warning")
    assert reached == ["mtaq-throttle", "slack-mail-ops"]


@pytest.mark.parametrize(("labels", "expected"), [
    (["alertname=MtaqProviderAuthFailures", "provider=google", "severity=warning"], ["slack-mail-ops"]),
    (["alertname=MtaqQueueUnreadable", "severity=critical"], ["slack-mail-oncall"]),
    (["alertname=MtaqSomethingInformational", "severity=info"], ["null"]),
])
def test_other_alerts_go_to_slack_only(labels: list[str], expected: list[str]) -> None:
    assert routes(*labels) == expected


def test_slack_receivers_send_resolved() -> None:
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    slack = [c for r in config["receivers"] for c in r.get("slack_configs", [])]
    assert slack and all(c["send_resolved"] is True for c in slack)


def test_promtool_check_prometheus_config() -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    # rule_files are relative to the config file.
    assert [(PROMETHEUS_YML.parent / f).resolve() for f in config["rule_files"]] == [RULES.resolve()]
    targets = [t for job in config["scrape_configs"] for s in job["static_configs"] for t in s["targets"]]
    assert any(t.endswith(":10154") for t in targets)
    assert all("mtaq" in job["job_name"] for job in config["scrape_configs"])
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout

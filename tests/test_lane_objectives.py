"""Per-lane objectives: configuration, fallbacks, errors, the exported gauges and check-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from collectors.lane_objectives import BUILTIN, LaneObjective, resolve
from collectors.settings import ConfigError
from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import scrape

ROOT = Path(__file__).resolve().parent.parent
CUSTOM = {"names": ["otp", "receipts", "newsletters"], "default": "receipts",
          "objectives": {"otp": {"max_messages": 100, "max_oldest_age": "5m", "critical_oldest_age": "15m",
                                 "max_first_attempt_wait": "2m"},
                         "newsletters": {"max_oldest_age": "12h", "critical_oldest_age": "2d"}}}


def test_the_defaults_are_the_thresholds_the_rules_used_to_hard_code() -> None:
    assert load_config(None, environ={}).lanes.resolved_objectives() == {
        "high": LaneObjective(max_messages=500, max_oldest_age=900, critical_oldest_age=3600,
                              max_first_attempt_wait=300),
        "normal": LaneObjective(max_messages=5000, max_oldest_age=3600, critical_oldest_age=21600),
        "low": LaneObjective(max_messages=20000, max_oldest_age=21600, critical_oldest_age=86400)}


def test_custom_lanes_fall_back_to_the_default_lane() -> None:
    objectives = load_config(None, environ={}, overrides={"lanes": CUSTOM}).lanes.resolved_objectives()
    assert objectives["otp"] == LaneObjective(max_messages=100, max_oldest_age=300, critical_oldest_age=900,
                                              max_first_attempt_wait=120)
    assert objectives["receipts"] == BUILTIN["normal"]  # the default lane, itself without objectives
    # A key left out comes from the default lane's.
    assert objectives["newsletters"] == LaneObjective(max_messages=5000, max_oldest_age=43200,
                                                      critical_oldest_age=172800)
    # A built-in lane keeps its own built-in values for the keys left out.
    assert resolve(["high", "normal"], "normal", {"high": LaneObjective(max_messages=50)})["high"] == \
        LaneObjective(max_messages=50, max_oldest_age=900, critical_oldest_age=3600, max_first_attempt_wait=300)


@pytest.mark.parametrize(("objectives", "problem"), [
    ({"bulk": {"max_messages": 10}}, "lanes: objectives.bulk: 'bulk' is not one of names ['high', 'normal', 'low']"),
    ({"high": {"max_oldest_age": "2h"}}, "lanes: objectives.high: critical_oldest_age (3600 s) must not be below "
                                         "max_oldest_age (7200 s)"),
    ({"low": {"max_messages": 0}}, "lanes.objectives.low.max_messages: Input should be greater than or equal to 1"),
    ({"low": {"max_oldest_age": "soon"}}, "lanes.objectives.low.max_oldest_age: expected a duration like 30s"),
    ({"low": {"max_age": "1h"}}, "lanes.objectives.low.max_age: unknown key"),
])
def test_bad_objectives_name_the_key(objectives: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={}, overrides={"lanes": {"objectives": objectives}})
    assert caught.value.problems[0].startswith(problem), caught.value.problems


def test_the_agent_exports_every_lanes_objectives() -> None:
    config = load_config(None, environ={}, overrides={
        "lanes": CUSTOM, "web": {"listen_address": "127.0.0.1:0"}, "postfix": {"enabled": False}})
    agent = Agent(config, [])
    agent.start()
    try:
        metrics = scrape(agent.port)
    finally:
        agent.stop()
    exported = {(dict(labels)["lane"], dict(labels)["objective"]): value for (name, labels), value in metrics.items()
                if name in ("mtaq_lane_objective_messages", "mtaq_lane_objective_seconds")}
    expected = {}
    for lane, objective in config.lanes.resolved_objectives().items():
        expected.update({(lane, key): float(value) for key, value in objective.model_dump().items()
                         if value is not None})  # an unset first-attempt wait: no series
    assert exported == expected
    assert exported[("otp", "max_oldest_age")] == 300 and exported[("receipts", "max_messages")] == 5000
    assert exported[("otp", "max_first_attempt_wait")] == 120 and ("receipts", "max_first_attempt_wait") not in exported


def test_check_config_prints_each_lanes_objectives(tmp_path: Path) -> None:
    config = tmp_path / "mtaq.yml"
    config.write_text(yaml.safe_dump({"lanes": CUSTOM, "postfix": {"enabled": False}}))
    done = subprocess.run([sys.executable, "-m", "exporter.cli", "check-config", "--config.file", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-3:] == [
        "  lane otp: at most 100 messages queued, oldest message warning after 5.0m, critical after 15.0m, "
        "first attempt within 2.0m while less urgent lanes deliver",
        "  lane receipts: at most 5000 messages queued, oldest message warning after 1.0h, critical after 6.0h",
        "  lane newsletters: at most 5000 messages queued, oldest message warning after 12.0h, critical after 2.0d"]

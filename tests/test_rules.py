"""rules/mtaq.rules.yml: promtool validity and unit tests, alert metadata, runbooks, test coverage."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules" / "mtaq.rules.yml"
RULE_TESTS = ROOT / "rules" / "mtaq.rules.test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/mtaq-exporter/mtaq-exporter/blob/main/docs/runbooks.md#"
SEVERITIES = {"critical", "warning", "info"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def alerting_rules() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict]:
    return [r for g in rule_groups() for r in g["rules"] if "record" in r]


def unit_tests() -> list[dict]:
    return yaml.safe_load(RULE_TESTS.read_text())["tests"]


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a Markdown document."""
    anchors: set[str] = set()
    counts: dict[str, int] = defaultdict(int)
    in_code = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_code or not match:
            continue
        text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", match.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        anchors.add(slug if counts[slug] == 0 else f"{slug}-{counts[slug]}")
        counts[slug] += 1
    return anchors


def test_github_anchor_algorithm() -> None:
    assert github_anchors("# Dead letters\n## MtaqAgentDown\n## `x` y\n## Dead letters\n") == {
        "dead-letters", "mtaqagentdown", "x-y", "dead-letters-1"}


def test_promtool_check_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests() -> None:
    result = subprocess.run([promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_metadata() -> None:
    alerts = alerting_rules()
    assert len({a["alert"] for a in alerts}) >= 15
    for rule in alerts:
        name = rule["alert"]
        assert re.fullmatch(r"Mtaq[A-Z][A-Za-z0-9]+", name), name
        assert rule.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name}: missing {key}"
        assert annotations["runbook_url"] == RUNBOOK_BASE + name.lower(), name
        # A threshold alert says the value that crossed it (not needed for 0/1 states and absent()).
        expr = rule["expr"].strip()
        if not (re.search(r"==\s*[01]$", expr) or expr.startswith("absent(")):
            assert "$value" in annotations["description"], name


def test_every_runbook_url_has_a_section() -> None:
    anchors = github_anchors(RUNBOOKS.read_text())
    for rule in alerting_rules():
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor in anchors, f"{rule['alert']}: no heading for #{anchor} in docs/runbooks.md"


def test_runbook_cross_links_resolve() -> None:
    text = RUNBOOKS.read_text()
    anchors = github_anchors(text)
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, anchor


def test_only_rate_limiting_asks_for_throttling() -> None:
    actions = {r["alert"]: r.get("labels", {}).get("action") for r in alerting_rules()}
    assert actions["MtaqProviderRateLimited"] == "throttle"
    assert actions["MtaqProviderAuthFailures"] is None
    assert {name for name, action in actions.items() if action} == {"MtaqProviderRateLimited"}
    rate_limited = next(r for r in alerting_rules() if r["alert"] == "MtaqProviderRateLimited")
    assert 'reason="rate_limited"' in rate_limited["expr"]


def test_every_alert_fires_and_stays_quiet_in_unit_tests() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in unit_tests():
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {r["alert"] for r in alerting_rules()}
    assert names - firing == set(), "alerts without a firing test"
    assert names - quiet == set(), "alerts without a non-firing test"
    assert (firing | quiet) - names == set(), "tests for alerts that do not exist"


def test_every_severity_of_an_alert_is_tested() -> None:
    expected = {(r["alert"], r["labels"]["severity"]) for r in alerting_rules()}
    tested = {(case["alertname"], alert["exp_labels"]["severity"])
              for group in unit_tests() for case in group.get("alert_rule_test", [])
              for alert in case.get("exp_alerts") or []}
    assert expected - tested == set()


def test_every_recording_rule_value_is_tested() -> None:
    tested = {case["expr"].strip() for group in unit_tests() for case in group.get("promql_expr_test", [])
              if case.get("exp_samples")}
    missing = {r["record"] for r in recording_rules()} - tested
    assert missing == set()


def test_recording_rule_names() -> None:
    names = [r["record"] for r in recording_rules()]
    assert len(names) == len(set(names))
    for name in names:
        # level:metric:operations (prometheus docs, practices/rules).
        level, metric, operations = name.split(":")
        assert re.fullmatch(r"(instance|job)(_[a-z]+)*", level), name
        assert metric.startswith("mtaq_") and not metric.endswith("_total"), name
        assert re.fullmatch(r"[a-z0-9_]+", operations), name
    # Every per-instance rule has a fleet-wide twin.
    for name in names:
        if name.startswith("instance"):
            assert "job" + name[len("instance"):] in names, name


def divisor(expr: str, slash: int) -> str:
    """The operand right of the ``/`` at ``slash``: an optional ``agg by (...)`` and one (...) group."""
    rest = expr[slash + 1:].lstrip()
    prefix = re.match(r"[a-z_]+\s*(by|without)?\s*(\([^()]*\))?\s*", rest)
    i = prefix.end() if prefix and rest[prefix.end():].startswith("(") else 0
    if not rest[i:].startswith("("):
        return rest.split()[0]
    depth = 0
    for j, char in enumerate(rest[i:], i):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return rest[:j + 1]
    raise AssertionError(f"unbalanced: {rest}")


def test_ratios_are_guarded_against_division_by_zero() -> None:
    for rule in recording_rules() + alerting_rules():
        expr = " ".join(rule["expr"].split())
        for match in re.finditer(r"/", expr):
            operand = divisor(expr, match.start())
            assert re.search(r"> 0\)*$", operand), (rule.get("record") or rule.get("alert"), operand)

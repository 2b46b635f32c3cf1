"""Lint of dashboards/*.json (the grafana/dashboard-linter rules, re-implemented) and of the metric
names and label values used by the dashboards and rules/ against the SPEC §5 metric contract."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from collectors.families import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
RULE_FILES = sorted((ROOT / "rules").glob("*.rules.yml"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# The metric contract: the catalogue in code (collectors/families.py), by the names samples carry.
FAMILY_OF_SAMPLE = {sample: family for family in CATALOGUE.values() for sample in family.sample_names()}
SPEC_METRICS = set(FAMILY_OF_SAMPLE)
# Series Prometheus itself or prometheus_client's default collectors produce.
BUILTIN_METRICS = {"up", "scrape_duration_seconds", "process_resident_memory_bytes", "process_cpu_seconds_total"}
# Closed label value sets from SPEC §4/§5.
LABEL_VALUES = {
    "status": {"sent", "deferred", "bounced"},
    "type": {"hard", "soft"},
    "result": {"parsed", "ignored", "unparsed"},
    "reason": {"rate_limited", "reputation", "blocklisted", "auth", "mailbox_full", "user_unknown",
               "domain_unknown", "content", "policy", "connection", "dns", "tls", "greylisted", "self", "other"},
}
GRAFANA_VARS = {"$__rate_interval": "5m", "$__range": "1h", "$__interval": "1m", "${job}": ".+", "$job": ".+",
                "${instance}": ".+", "$instance": ".+",
                # $mta_instance before $mta: str.replace in insertion order, and $mta is its prefix.
                "${mta_instance}": ".*", "$mta_instance": ".*", "${mta}": ".*", "$mta": ".*"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return path


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def all_panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[tuple[str, str, str]]:
    """(dashboard file, panel title, expr) for every target of every dashboard."""
    return [(path.name, panel.get("title", ""), target["expr"])
            for path in DASHBOARDS for panel in all_panels(load(path)) for target in panel.get("targets", [])]


def rule_exprs() -> list[tuple[str, str]]:
    """(rule name, expr) for every rule, plus the PromQL inside annotation templates."""
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("alert") or rule["record"]
                out.append((name, rule["expr"]))
                for text in rule.get("annotations", {}).values():
                    out += [(name, q) for q in re.findall(r'printf "([^"]*)"', text)]
    return out


def recording_rule_names() -> set[str]:
    return {r["record"] for path in RULE_FILES for g in yaml.safe_load(path.read_text())["groups"]
            for r in g["rules"] if "record" in r}


def strip_strings(expr: str) -> str:
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: selectors with braces, recording-rule names, mtaq_* names."""
    code = strip_strings(expr)
    names = set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", code))
    names |= set(re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*:[a-zA-Z0-9_:]+)", code))
    names |= set(re.findall(r"(?<![\w:])(mtaq_[a-zA-Z0-9_]+)(?![\w:])", code))
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """(metric name, matcher text) of every vector selector written as name{...}."""
    return re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{((?:[^{}\"]|\"(?:[^\"\\]|\\.)*\")*)\}", expr)


def matchers(expr: str) -> list[tuple[str, str, str]]:
    return re.findall(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*\"((?:[^\"\\]|\\.)*)\"", expr)


# ------------------------------------------------------------------------------------------------
# Dashboard structure
# ------------------------------------------------------------------------------------------------

def test_expected_dashboards_exist() -> None:
    assert {p.name for p in DASHBOARDS} == {
        "mtaq-overview.json", "mtaq-providers.json", "mtaq-blocklists.json", "mtaq-agent.json"}


def test_uids_fixed_and_unique() -> None:
    uids = [load(p).get("uid") for p in DASHBOARDS]
    assert all(isinstance(u, str) and re.fullmatch(r"[a-z0-9-]{1,40}", u) for u in uids), uids
    assert len(set(uids)) == len(uids)
    titles = [load(p)["title"] for p in DASHBOARDS]
    assert len(set(titles)) == len(titles)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_model(path: Path) -> None:
    text = path.read_text()
    dashboard = json.loads(text)
    assert dashboard["schemaVersion"] == 39
    assert dashboard.get("id") is None
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    assert "${DS_" not in text and "$DS_" not in text
    assert dashboard.get("editable") is False
    assert "mtaq" in dashboard.get("tags", [])
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_template_variables(path: Path) -> None:
    variables = {v["name"]: v for v in load(path)["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["label"].lower() == "data source"
    for name in ("job", "instance"):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["multi"] is True and var["includeAll"] is True and var["allValue"] == ".+"
        assert var["label"] == name.title()
        assert var.get("refresh") in (1, 2)
    assert 'job=~"$job"' in variables["instance"]["query"]
    # MTA and MTA instance, right after instance. ".*" as "All" also matches series without the label.
    names = list(variables)
    assert names.index("instance") + 1 == names.index("mta") and names.index("mta") + 1 == names.index("mta_instance")
    for name, label in (("mta", "MTA"), ("mta_instance", "MTA instance")):
        var = variables[name]
        assert var["type"] == "query"
        assert var["datasource"] == DATASOURCE
        assert var["multi"] is True and var["includeAll"] is True and var["allValue"] == ".*"
        assert var["label"] == label
        assert var.get("refresh") in (1, 2)
        query = var["query"]
        assert query.startswith("label_values(") and query.endswith(f", {name})"), query
        assert 'job=~"$job"' in query and 'instance=~"$instance"' in query, query
        assert '__name__=~"mtaq_queue_messages|mtaq_messages_received_total|mtaq_log_lines_total"' in query, query
    assert 'mta=~"$mta"' in variables["mta_instance"]["query"]
    assert "mta=~" not in variables["mta"]["query"], "the mta variable must not filter on itself"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels(path: Path) -> None:
    for panel in all_panels(load(path)):
        title = panel.get("title", "")
        assert title, panel
        if panel["type"] == "row":
            continue
        assert panel.get("datasource") == DATASOURCE, title
        assert panel.get("description"), title
        assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"{title}: no unit"
        assert {"h", "w", "x", "y"} <= set(panel.get("gridPos", {})), title
        assert panel.get("targets"), f"{title}: no query"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, title


@pytest.mark.parametrize(("dashboard", "title", "expr"), dashboard_exprs(), ids=lambda v: str(v)[:60])
def test_target_expression(dashboard: str, title: str, expr: str) -> None:
    # Every selector carries the job and instance filters; nothing is pinned to one instance.
    found = selectors(expr)
    assert found, "no selector"
    for name, inner in found:
        assert 'job=~"$job"' in inner and 'instance=~"$instance"' in inner, f"{name}{{{inner}}}"
    # Families with mta / mta_instance labels (queue and delivery-log families; log source families
    # only mta, as one log file can hold several MTA instances) are filtered by the variables.
    for name, inner in found:
        family = FAMILY_OF_SAMPLE.get(name)
        has = set(family.labels) & {"mta", "mta_instance"} if family else set()
        labels = {label for label, _, _ in matchers(inner)}
        assert labels & {"mta", "mta_instance"} == has, f"{name}{{{inner}}}: expected filters on {has or 'nothing'}"
        for label in has:
            assert f'{label}=~"${label}"' in inner, f"{name}{{{inner}}}"
    for label, _, value in matchers(expr):
        if label in ("job", "instance", "mta", "mta_instance"):
            assert value == f"${label}", f"hard-coded {label}={value!r}"
    # Counters only through rate()/increase(); those over $__rate_interval (or $__range for totals).
    code = strip_strings(expr)
    for match in re.finditer(r"\b[a-z0-9_]+_(?:total|bucket)\s*\{[^}]*\}(\s*\[[^\]]*\])?", code):
        assert match.group(1), f"counter without a range: {match.group(0)}"
        assert re.search(r"(rate|increase)\($", code[:match.start()]), f"counter not in rate/increase: {expr}"
    for func, window in re.findall(r"\b(rate|irate|increase)\([^\[]*\[([^\]]*)\]", expr):
        allowed = {"$__rate_interval"} | ({"$__range"} if func == "increase" else set())
        assert window in allowed, f"{func}(...[{window}])"


def test_every_expression_parses(tmp_path: Path) -> None:
    """All dashboard expressions, Grafana variables replaced, through one `promtool check rules`."""
    exprs = [expr for _, _, expr in dashboard_exprs()]
    rules = []
    for i, expr in enumerate(exprs):
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:expr:{i}", "expr": expr})
    rules_file = tmp_path / "dashboard-exprs.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run([promtool(), "check", "rules", str(rules_file)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# ------------------------------------------------------------------------------------------------
# Metric contract, dashboards and rules alike
# ------------------------------------------------------------------------------------------------

def all_exprs() -> list[tuple[str, str]]:
    return [(f"{d} / {t}", e) for d, t, e in dashboard_exprs()] + rule_exprs()


def test_every_metric_name_is_in_the_contract() -> None:
    known = SPEC_METRICS | BUILTIN_METRICS | recording_rule_names()
    unknown = {(where, name) for where, expr in all_exprs() for name in metric_names(expr) if name not in known}
    assert unknown == set()


def test_label_values_are_in_the_contract() -> None:
    bad = []
    for where, expr in all_exprs():
        for label, op, value in matchers(expr):
            if label not in LABEL_VALUES or "%" in value:
                continue
            values = value.split("|") if op in ("=~", "!~") else [value]
            bad += [(where, label, v) for v in values if v not in LABEL_VALUES[label]]
    assert bad == []


def test_dashboards_cover_the_spec() -> None:
    used = set().union(*(metric_names(e) for _, _, e in dashboard_exprs()))
    # Everything an operator looks at has a panel; these are read at /metrics or in alerts only.
    without_panel = {
        "mtaq_queue_recipients", "mtaq_delivery_delay_seconds_sum", "mtaq_delivery_delay_seconds_count",
        "mtaq_queue_forced_expire_messages", "mtaq_verify_probes_total", "mtaq_dnsbl_run_duration_seconds",
        "mtaq_log_tracked_messages", "mtaq_log_evicted_messages_total",
        # read where they explain something: the landing page names the source; checkpoint failures
        # and skipped records fail the collector (MtaqCollectorFailing) or log a warning
        "mtaq_queue_source_info", "mtaq_queue_skipped_messages", "mtaq_log_checkpoint_errors_total",
        "mtaq_delivery_negative_delays_total",
        # configuration: the backlog alerts compare lanes with them, the page at / shows them per lane
        "mtaq_lane_objective_messages", "mtaq_lane_objective_seconds",
        # present only while an action is in force: `mtaq-exporter actions list` shows it
        "mtaq_action_expiry_timestamp_seconds",
    }
    assert SPEC_METRICS - used - without_panel == set()

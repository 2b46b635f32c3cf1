"""Packaging checks: the Dockerfile, .dockerignore and the Helm chart, without docker or helm.

Neither binary exists here (conventions §6.3-6.4), so these are structural checks: the Dockerfile's
instructions, the chart's metadata, values.yaml against values.schema.json, every `.Values.x.y`
a template reads, the sidecar container template, and the chart's copies of the rules and
dashboards against their sources (`python helm/sync_files.py` fixes drift).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import load_config
from exporter.http import WebSection

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "mtaq-exporter"
TEMPLATES = CHART / "templates"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    if pending:
        lines.append(pending)
    result = []
    stage = -1
    for line in lines:
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stage += 1
        result.append((stage, instruction, args.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(stage for stage, _, _ in instructions)
    return [(ins, args) for stage, ins, args in instructions if stage == last]


def default_port() -> int:
    return int(WebSection().listen_address.rpartition(":")[2])


def values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text())


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def template_text(name: str) -> str:
    return (TEMPLATES / name).read_text()


def without_comments(text: str) -> str:
    return re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", text, flags=re.S)


def define_block(name: str) -> str:
    """The body of a named template in _helpers.tpl (nesting of if/with/range/end respected)."""
    text = without_comments(template_text("_helpers.tpl"))
    start = re.search(r'\{\{-?\s*define\s+"' + re.escape(name) + r'"\s*-?\}\}', text)
    assert start, f"named template {name!r} not found in _helpers.tpl"
    depth = 1
    for action in re.finditer(r"\{\{-?\s*(if|with|range|define|end)\b", text[start.end():]):
        depth += -1 if action.group(1) == "end" else 1
        if depth == 0:
            return text[start.end():start.end() + action.start()]
    raise AssertionError(f"named template {name!r} is not closed")


def sync_module():
    spec = importlib.util.spec_from_file_location("helm_sync_files", ROOT / "helm" / "sync_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Minimal JSON Schema (draft-07 subset) validator, used when `jsonschema` is not installed.
SUPPORTED_KEYWORDS = {"$schema", "title", "description", "type", "properties", "required",
                      "additionalProperties", "items", "enum", "minimum", "maximum", "minLength",
                      "pattern"}
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _type_ok(value: object, expected: str) -> bool:
    if expected == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[expected])


def mini_validate(value: object, node: dict[str, Any], path: str = "$") -> list[str]:
    errors: list[str] = []
    expected = node.get("type")
    if expected is not None:
        types = expected if isinstance(expected, list) else [expected]
        if not any(_type_ok(value, t) for t in types):
            return [f"{path}: expected {expected}, got {type(value).__name__}"]
    if "enum" in node and value not in node["enum"]:
        errors.append(f"{path}: {value!r} not one of {node['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            errors.append(f"{path}: {value} < {node['minimum']}")
        if "maximum" in node and value > node["maximum"]:
            errors.append(f"{path}: {value} > {node['maximum']}")
    if isinstance(value, str):
        if "minLength" in node and len(value) < node["minLength"]:
            errors.append(f"{path}: shorter than {node['minLength']}")
        if "pattern" in node and not re.search(node["pattern"], value):
            errors.append(f"{path}: {value!r} does not match {node['pattern']}")
    if isinstance(value, dict):
        properties = node.get("properties", {})
        errors += [f"{path}: missing {key!r}" for key in node.get("required", []) if key not in value]
        extra = node.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += mini_validate(item, properties[key], f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                errors += mini_validate(item, extra, f"{path}.{key}")
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        for index, item in enumerate(value):
            errors += mini_validate(item, node["items"], f"{path}[{index}]")
    return errors


def schema_errors(instance: object) -> list[str]:
    try:
        import jsonschema  # optional: not a project dependency
    except ImportError:
        return mini_validate(instance, schema())
    validator = jsonschema.Draft7Validator(schema())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


def _keywords(node: object) -> set[str]:
    """Every keyword used in a schema (property names excluded)."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, item in node.items():
            found.add(key)
            if key == "properties":
                for sub in item.values():
                    found |= _keywords(sub)
            elif isinstance(item, dict | list):
                found |= _keywords(item)
    elif isinstance(node, list):
        for item in node:
            found |= _keywords(item)
    return found


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------

def test_dockerfile_is_multi_stage_on_slim_python():
    instructions = dockerfile_instructions()
    froms = [args for _, ins, args in instructions if ins == "FROM"]
    assert len(froms) >= 2, "expected a build stage and a runtime stage"
    for image in froms:
        assert re.match(r"^python:[\w.]*-?slim[\w.-]*(@sha256:[0-9a-f]{64})?(\s+AS\s+\w+)?$", image, re.I), image
    build_names = {m.group(1) for f in froms[:-1] if (m := re.search(r"\sAS\s+(\w+)", f, re.I))}
    copies_from = [args for ins, args in final_stage() if ins == "COPY" and "--from=" in args]
    assert any(re.search(r"--from=(\w+)", c).group(1) in build_names for c in copies_from), \
        "the runtime stage must copy its artefacts from a build stage"


def test_dockerfile_runs_as_numeric_non_root_user():
    users = [args for ins, args in final_stage() if ins == "USER"]
    assert users, "no USER in the runtime stage: the image would run as root"
    user = users[-1]
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER must be numeric so runAsNonRoot can verify it: {user!r}"
    assert int(user.split(":")[0]) != 0
    assert int(user.split(":")[0]) == values()["securityContext"]["runAsUser"], "chart runAsUser != image USER"


def test_dockerfile_exposes_the_default_listen_port():
    exposed = [args for ins, args in final_stage() if ins == "EXPOSE"]
    ports = {int(p.split("/")[0]) for args in exposed for p in args.split()}
    assert ports == {default_port()}, f"EXPOSE {ports} but exporter/config.py listens on {default_port()}"


def test_dockerfile_entrypoint_is_exec_form_mtaq_exporter():
    entrypoints = [args for ins, args in final_stage() if ins == "ENTRYPOINT"]
    assert entrypoints, "no ENTRYPOINT"
    command = json.loads(entrypoints[-1])  # exec form is a JSON array; shell form would not parse
    assert isinstance(command, list) and command
    assert Path(command[0]).name == "mtaq-exporter"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "mtaq-exporter" in scripts


def test_dockerfile_has_a_healthcheck_on_healthz():
    checks = [args for ins, args in final_stage() if ins == "HEALTHCHECK"]
    assert checks, "no HEALTHCHECK"
    assert checks[-1].upper() != "NONE"
    assert "/healthz" in checks[-1] and str(default_port()) in checks[-1]


def test_dockerfile_copies_every_python_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = " ".join(args for _, ins, args in dockerfile_instructions() if ins in ("COPY", "ADD"))
    for package in {p.split(".")[0] for p in packages}:
        assert re.search(rf"(^|\s){package}/?\s", copied + " "), f"package {package} is not copied into the image"


def test_dockerignore_excludes_dev_files_but_not_the_build_inputs():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for needed in (".venv", ".git", "tests", "bench", "helm", ".pytest_cache", ".ruff_cache"):
        assert needed in patterns, f".dockerignore should exclude {needed}"
    copied = []
    for _, ins, args in dockerfile_instructions():
        if ins == "COPY" and "--from=" not in args:
            copied += args.split()[:-1]
    assert copied
    for path in copied:
        for pattern in patterns:
            assert not pattern.startswith("!")
            assert not fnmatch.fnmatch(path.rstrip("/"), pattern.rstrip("/")), \
                f".dockerignore pattern {pattern!r} drops {path!r}, which the Dockerfile copies"


# --------------------------------------------------------------------------------------------
# Chart metadata and values
# --------------------------------------------------------------------------------------------

def test_chart_yaml():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "mtaq-exporter" == CHART.name
    assert chart.get("type", "application") == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[\w.]+)?", chart["version"])
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert chart["appVersion"] == version == "0.1.0"
    assert isinstance(chart["appVersion"], str), "quote appVersion"
    assert chart.get("description")


def test_values_schema_is_draft_07_and_uses_known_keywords():
    data = schema()
    assert data["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert data["type"] == "object"
    unknown = _keywords(data) - SUPPORTED_KEYWORDS
    assert not unknown, f"schema keywords the fallback validator does not know: {unknown}"


def test_values_yaml_validates_against_the_schema():
    assert schema_errors(values()) == []


@pytest.mark.parametrize("patch", [
    {"containerPort": "10154"},
    {"image": {"pullPolicy": "Sometimes"}},
    {"podMonitor": {"enabled": "yes"}},
    {"serviceMonitor": {"interval": "30 seconds"}},
    {"mta": {"queuePublicDir": "Not A Volume Name"}},
    {"mta": {"logMountPath": "var/log"}},
    {"unknownTopLevelKey": 1},
])
def test_schema_rejects_bad_values(patch):
    bad = values()
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(bad.get(key), dict):
            bad[key] = {**bad[key], **value}
        else:
            bad[key] = value
    assert schema_errors(bad), f"schema accepted {patch}"


def test_every_values_key_is_in_the_schema():
    properties = schema()["properties"]
    assert set(values()) <= set(properties)


def _has_path(tree: object, parts: list[str]) -> bool:
    for part in parts:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def test_every_values_path_used_by_templates_exists():
    tree = values()
    missing = []
    for path in sorted(TEMPLATES.iterdir()):
        for match in re.finditer(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", path.read_text()):
            parts = match.group(1).lstrip(".").split(".")
            if not _has_path(tree, parts):
                missing.append(f"{path.name}: .Values.{'.'.join(parts)}")
    assert not missing, "templates read values that values.yaml does not define:\n" + "\n".join(missing)


def test_default_config_is_a_valid_agent_config(tmp_path):
    config_file = tmp_path / "mtaq.yml"
    config_file.write_text(yaml.safe_dump(values()["config"]))
    config = load_config(str(config_file), environ={})
    assert config.postfix.instances[0].showq_path


def test_config_paths_lie_inside_the_mounted_volumes():
    v = values()
    public = v["mta"]["queuePublicMountPath"].rstrip("/") + "/"
    for instance in v["config"]["postfix"]["instances"]:
        assert instance["showq_path"].startswith(public), (instance["showq_path"], public)
    logs = v["mta"]["logMountPath"].rstrip("/") + "/"
    assert v["mta"]["logDir"], "the default should mount a log directory"
    for log_path in v["config"]["log"]["paths"]:
        assert log_path.startswith(logs), (log_path, logs)


def test_ports_agree():
    v = values()
    assert v["containerPort"] == default_port() == v["service"]["port"]


def test_security_context_is_hardened():
    sc = values()["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")


def test_optional_objects_are_disabled_by_default():
    v = values()
    for key in ("deployment", "service", "serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboards"):
        assert v[key]["enabled"] is False, key
    for key in ("serviceMonitor", "podMonitor", "prometheusRule", "grafanaDashboards"):
        assert isinstance(v[key]["labels"], dict), f"{key}.labels knob for kube-prometheus-stack selectors"
    assert v["grafanaDashboards"]["labels"].get("grafana_dashboard") == "1"


@pytest.mark.parametrize(("template", "key"), [
    ("deployment.yaml", "deployment"),
    ("service.yaml", "service"),
    ("servicemonitor.yaml", "serviceMonitor"),
    ("podmonitor.yaml", "podMonitor"),
    ("prometheusrule.yaml", "prometheusRule"),
    ("dashboards-configmap.yaml", "grafanaDashboards"),
])
def test_optional_templates_are_gated(template, key):
    first = template_text(template).lstrip().splitlines()[0]
    assert re.fullmatch(r"\{\{-?\s*if\s+\.Values\." + key + r"\.enabled\s*\}\}", first), first


def test_templates_are_balanced():
    for path in sorted(TEMPLATES.iterdir()):
        text = without_comments(path.read_text())
        assert text.count("{{") == text.count("}}"), path.name
        opened = len(re.findall(r"\{\{-?\s*(?:if|with|range|define)\b", text))
        closed = len(re.findall(r"\{\{-?\s*end\s*-?\}\}", text))
        assert opened == closed, f"{path.name}: {opened} if/with/range/define vs {closed} end"


# --------------------------------------------------------------------------------------------
# The sidecar container template
# --------------------------------------------------------------------------------------------

def test_sidecar_container_template():
    block = define_block("mtaq-exporter.sidecarContainer")
    assert re.search(r"^- name: \{\{ \.Values\.containerName \}\}$", block, re.M), "must be a list item"
    assert "include \"mtaq-exporter.image\"" in block
    assert "- --config.file=/etc/mtaq/mtaq.yml" in block
    assert re.search(r"- name: metrics\s+containerPort: \{\{ \.Values\.containerPort \}\}", block)
    assert re.search(r"livenessProbe:\s+httpGet:\s+path: /healthz\s+port: metrics", block)
    assert re.search(r"readinessProbe:\s+httpGet:\s+path: /readyz\s+port: metrics", block)
    assert ".Values.resources" in block and ".Values.securityContext" in block
    assert ".Values.deployment" not in block, "the sidecar must not depend on the demo Deployment's values"


def test_sidecar_mounts_every_volume_read_only():
    block = define_block("mtaq-exporter.sidecarContainer")
    mounts = block.split("volumeMounts:", 1)[1]
    items = re.split(r"^\s*-\s+name:", mounts, flags=re.M)[1:]
    names = re.findall(r"^\s*-\s+name:\s*(.+)$", mounts, re.M)
    assert len(items) == 3, names
    for name, item in zip(names, items, strict=True):
        assert re.search(r"^\s*readOnly: true\s*$", item, re.M), f"volume mount {name} is not readOnly"
        assert "readOnly: false" not in item
    joined = " ".join(names)
    assert ".Values.mta.queuePublicDir" in joined and ".Values.mta.logDir" in joined
    assert "mtaq-config" in joined


def test_sidecar_documents_postdrop_supplemental_groups():
    helpers = template_text("_helpers.tpl")
    assert "supplementalGroups" in helpers and "postdrop" in helpers
    assert "supplementalGroups" in (CHART / "README.md").read_text()


def test_sidecar_volumes_template_points_at_the_configmap():
    block = define_block("mtaq-exporter.sidecarVolumes")
    assert "- name: mtaq-config" in block
    assert 'name: {{ include "mtaq-exporter.fullname" . }}' in block
    configmap = template_text("configmap.yaml")
    assert 'name: {{ include "mtaq-exporter.fullname" . }}' in configmap
    assert "mtaq.yml: |" in configmap and "toYaml .Values.config" in configmap


def test_chart_readme_shows_the_sidecar_include():
    readme = (CHART / "README.md").read_text()
    assert 'include "mtaq-exporter.sidecarContainer"' in readme
    assert 'include "mtaq-exporter.sidecarVolumes"' in readme


# --------------------------------------------------------------------------------------------
# Rules and dashboards shipped in the chart
# --------------------------------------------------------------------------------------------

def test_chart_copies_of_rules_and_dashboards_match_the_sources():
    sync = sync_module()
    pairs = sync.pairs()
    assert any(source.suffix == ".json" for source, _ in pairs), "no dashboards found in dashboards/"
    problems = sync.drift()
    assert not problems, "chart copies out of date; run: python helm/sync_files.py\n" + "\n".join(problems)


def test_prometheus_rule_embeds_the_rules_file_verbatim():
    text = template_text("prometheusrule.yaml")
    assert '.Files.Get "files/mtaq.rules.yml"' in text
    assert "tpl" not in re.findall(r"\{\{[^}]*\}\}", without_comments(text)).__str__(), \
        "rendering the rules through tpl would evaluate Prometheus' {{ $labels }}"
    assert re.search(r"^spec:\n\{\{ \.Files\.Get \"files/mtaq\.rules\.yml\" \| indent 2 \}\}", text, re.M)


def test_rules_file_fits_under_prometheusrule_spec():
    documents = list(yaml.safe_load_all((CHART / "files" / "mtaq.rules.yml").read_text()))
    assert len(documents) == 1
    rules = documents[0]
    assert list(rules) == ["groups"], "the file is embedded as spec:, so groups must be its only key"
    group_keys = {"name", "interval", "rules", "limit", "query_offset", "partial_response_strategy", "labels"}
    rule_keys = {"record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
    for group in rules["groups"]:
        assert set(group) <= group_keys, group["name"]
        for rule in group["rules"]:
            assert set(rule) <= rule_keys, rule
            assert ("record" in rule) != ("alert" in rule)


def test_dashboards_configmap_globs_the_chart_files():
    text = template_text("dashboards-configmap.yaml")
    assert '(.Files.Glob "files/dashboards/*.json").AsConfig' in text
    dashboards = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert dashboards
    uids = [json.loads(p.read_text()).get("uid") for p in dashboards]
    assert all(uids) and len(set(uids)) == len(uids), uids
    assert sum(p.stat().st_size for p in dashboards) < 900_000, "a ConfigMap holds at most 1 MiB"

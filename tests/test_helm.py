"""The Helm chart through the real Helm engine (helm-python-sdk, tests/lab/helm.py).

Every documented combination of values is a ``helm/mtaq-exporter/ci/*-values.yaml`` file (the
chart-testing convention). Each must lint clean with ``--strict`` and render objects valid against
the Kubernetes schemas of the oldest and the newest supported version (``kubernetes-validate``,
offline). The Prometheus Operator's kinds are not in those schemas: they are checked against the
subset of ``monitoring.coreos.com/v1`` the chart writes (field names from the operator's API
reference), with Kubernetes' own ObjectMeta and LabelSelector, and the PrometheusRule with promtool.
The rest asserts what the rendered objects do: probes, TLS, the webhook token, the blocklist
checker, and that the sidecar is the same container everywhere.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from exporter.config import load_config
from exporter.web_config import WebConfigFile
from tests.lab.helm import CHART, RELEASE, lint, notes, render

ROOT = Path(__file__).resolve().parent.parent
CI_FILES = sorted((CHART / "ci").glob("*-values.yaml"))
CASES: dict[str, dict[str, Any]] = {"defaults": {}, **{p.name: yaml.safe_load(p.read_text()) for p in CI_FILES}}
FULLNAME = f"{RELEASE}-mtaq-exporter"


def kube_versions() -> tuple[str, str]:
    """The oldest version the chart supports (Chart.yaml kubeVersion) and the newest the schemas know."""
    minimum = yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"]
    oldest = re.fullmatch(r">=\s*(\d+\.\d+\.\d+)(-0)?", minimum)
    assert oldest, f"kubeVersion should be a lower bound like >=1.25.0-0, got {minimum!r}"
    return oldest.group(1), kubernetes_validate.utils.latest_version()


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {[o['metadata']['name'] for o in of_kind(objects, kind)]}"
    return found[0]


def containers_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def demo(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The objects of the demo Deployment (ci/demo-values.yaml) with ``values`` on top."""
    return render(_merge(CASES["demo-values.yaml"], values or {}))


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def agent_config(config_map: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    """The agent's configuration from a rendered ConfigMap, loaded the way the agent loads it."""
    data = yaml.safe_load(config_map["data"]["mtaq.yml"])
    return load_config(None, environ=environ or {}, overrides=data)


# ---------------------------------------------------------------------------------------------
# Lint and Kubernetes schemas
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("version", kube_versions())
def test_lint_strict_is_clean(case: str, version: str) -> None:
    assert lint(CASES[case], kube_version=f"v{version}") == []


# What the chart writes of monitoring.coreos.com/v1 (not in kubernetes-validate), field names as
# in the Prometheus Operator's API reference; anything else the chart renders fails the check.
_META = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
_SELECTOR = {"$ref": "https://kubernetes.io/api/_definitions.json#/$defs/"
                     "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"}
_STRINGS = {"type": "array", "items": {"type": "string"}}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                          r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
_ENDPOINT = {"type": "object", "additionalProperties": False, "required": ["port"], "properties": {
    "port": {"type": "string"}, "path": {"type": "string"}, "scheme": {"enum": ["http", "https"]},
    "interval": _DURATION, "scrapeTimeout": _DURATION, "honorLabels": {"type": "boolean"},
    "tlsConfig": {"type": "object"}, "basicAuth": {"type": "object"},
    "relabelings": {"type": "array", "items": {"type": "object"}},
    "metricRelabelings": {"type": "array", "items": {"type": "object"}}}}
_NAMESPACES = {"type": "object", "additionalProperties": False,
               "properties": {"any": {"type": "boolean"}, "matchNames": _STRINGS}}


def _monitor(endpoints: str, target_labels: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["selector", endpoints], "properties": {
        "jobLabel": {"type": "string"}, target_labels: _STRINGS, "selector": _SELECTOR,
        "namespaceSelector": _NAMESPACES, endpoints: {"type": "array", "minItems": 1, "items": _ENDPOINT}}}


MONITORING_SPECS = {
    "PodMonitor": _monitor("podMetricsEndpoints", "podTargetLabels"),
    "ServiceMonitor": _monitor("endpoints", "targetLabels"),
    "PrometheusRule": {"type": "object", "additionalProperties": False, "required": ["groups"],
                       "properties": {"groups": {"type": "array", "items": {"type": "object"}}}},
}


def monitoring_errors(obj: dict[str, Any], version: str) -> list[str]:
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    schema = {"type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
              "properties": {"apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": obj["kind"]},
                             "metadata": _META, "spec": MONITORING_SPECS[obj["kind"]]}}
    validator = Draft202012Validator(schema, registry=Resource.from_contents(definitions) @ Registry())
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("version", kube_versions())
def test_every_object_is_valid_for_the_oldest_and_newest_kubernetes(case: str, version: str) -> None:
    objects = render(CASES[case])
    assert objects
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            assert monitoring_errors(obj, version) == [], where
        else:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{where} invalid for Kubernetes {version}: {exc.message} at {list(exc.absolute_path)}")


def test_the_rendered_prometheus_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    rule = named(render(CASES["monitoring-values.yaml"]), "PrometheusRule", FULLNAME)
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rule["spec"] == yaml.safe_load((ROOT / "rules" / "mtaq.rules.yml").read_text())


def test_monitoring_subset_schema_rejects_what_the_operator_would() -> None:
    monitor = named(render(CASES["monitoring-values.yaml"]), "PodMonitor", FULLNAME)
    version = kube_versions()[1]
    assert monitoring_errors(monitor, version) == []
    bad = json.loads(json.dumps(monitor))
    bad["spec"]["podMetricsEndpoints"][0]["targetPort"] = "metrics"
    bad["metadata"]["labels"]["release"] = 7
    errors = monitoring_errors(bad, version)
    assert any("targetPort" in e for e in errors) and any("metadata.labels.release" in e for e in errors), errors


# ---------------------------------------------------------------------------------------------
# Values: every combination documented, defaults, schema
# ---------------------------------------------------------------------------------------------

def test_each_documented_combination_has_a_values_file() -> None:
    assert {p.name for p in CI_FILES} == {
        "sidecar-values.yaml", "demo-values.yaml", "monitoring-values.yaml", "tls-values.yaml",
        "webhook-values.yaml", "checker-values.yaml", "checker-only-values.yaml"}
    readme = (CHART / "README.md").read_text()
    for path in CI_FILES:
        assert f"ci/{path.name}" in readme, f"the chart README does not mention ci/{path.name}"


@pytest.mark.parametrize("case", CASES)
def test_every_agent_configuration_rendered_is_valid(case: str) -> None:
    config_maps = [o for o in of_kind(render(CASES[case]), "ConfigMap") if "mtaq.yml" in o.get("data", {})]
    assert config_maps
    environ = {"MTAQ_ACTIONS__WEBHOOK__BEARER_TOKEN": "from-the-secret"}
    for config_map in config_maps:
        agent_config(config_map, environ)
    for secret in of_kind(render(CASES[case]), "Secret"):
        WebConfigFile.model_validate(yaml.safe_load(base64.b64decode(secret["data"]["web-config.yml"])))


def test_defaults_render_only_the_agent_configuration() -> None:
    objects = render({"podSelector": {"app.kubernetes.io/name": "postfix"}})
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("ConfigMap", FULLNAME)]


@pytest.mark.parametrize(("patch", "complaint"), [
    ({"containerPort": "10154"}, "containerPort"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"podMonitor": {"enabled": "yes"}}, "podMonitor"),
    ({"serviceMonitor": {"interval": "30 seconds"}}, "interval"),
    ({"mta": {"queuePublicDir": "Not A Volume Name"}}, "queuePublicDir"),
    ({"mta": {"logMountPath": "var/log"}}, "logMountPath"),
    ({"webhookToken": {"secretName": "Bad_Name"}}, "secretName"),
    ({"checker": {"replicas": -1}}, "replicas"),
    ({"unknownTopLevelKey": 1}, "unknownTopLevelKey"),
])
def test_the_schema_refuses_bad_values_naming_the_key(patch: dict[str, Any], complaint: str) -> None:
    with helm_python.Chart.load(CHART) as chart:
        values = _merge(chart.values, patch)
        with pytest.raises(helm_python.HelmValuesError, match=complaint):
            chart.validate_schema(values)


def test_image_reference_defaults_to_the_app_version_and_takes_a_digest() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = containers_of(named(demo(), "Deployment", FULLNAME))["mtaq"]["image"]
    assert image == f"ghcr.io/example/mtaq-exporter:{chart['appVersion']}"
    digest = "sha256:" + "ab" * 32
    pinned = containers_of(named(demo({"image": {"digest": digest}}), "Deployment", FULLNAME))["mtaq"]["image"]
    assert pinned == f"ghcr.io/example/mtaq-exporter@{digest}"
    assert "`ghcr.io/example/mtaq-exporter`" in (CHART / "README.md").read_text()


# ---------------------------------------------------------------------------------------------
# The sidecar
# ---------------------------------------------------------------------------------------------

def test_the_sidecar_is_hardened_and_mounts_the_mta_volumes_read_only() -> None:
    objects = demo()
    spec = named(objects, "Deployment", FULLNAME)["spec"]["template"]["spec"]
    sidecar = containers_of(named(objects, "Deployment", FULLNAME))["mtaq"]
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == security["runAsGroup"] == 10154
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert spec["securityContext"] == {"supplementalGroups": [103]}
    assert all(m["readOnly"] is True for m in sidecar["volumeMounts"])
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["postfix-spool"] == {"name": "postfix-spool", "mountPath": "/var/spool/postfix/public",
                                       "subPath": "public", "readOnly": True}
    assert mounts["postfix-log"]["mountPath"] == "/var/log/mail"
    config = agent_config(named(objects, "ConfigMap", FULLNAME))
    assert config.postfix.instances[0].showq_path == "/var/spool/postfix/public/showq"
    assert all(path.startswith("/var/log/mail/") for path in config.log.paths)
    assert sidecar["args"] == ["--config.file=/etc/mtaq/mtaq.yml", "--web.listen-address=:10154"]
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": 10154, "protocol": "TCP"}]


def test_readiness_is_off_by_default_and_liveness_asks_healthz() -> None:
    sidecar = containers_of(named(demo(), "Deployment", FULLNAME))["mtaq"]
    assert "readinessProbe" not in sidecar
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTP"}
    ready = containers_of(named(demo({"readinessProbe": {"enabled": True}}), "Deployment", FULLNAME))["mtaq"]
    assert ready["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics", "scheme": "HTTP"}


def test_the_notes_print_the_same_sidecar_the_demo_deployment_runs() -> None:
    """What a user pastes into an MTA pod (NOTES.txt, from the named template) is the container
    the demo Deployment runs, which the container lab runs (tests/test_container_lab.py)."""
    values = {key: value for key, value in CASES["demo-values.yaml"].items() if key != "deployment"}
    printed = notes(values)
    block = printed.split("  containers:\n", 1)[1].split("  volumes:\n", 1)[0]
    volumes = printed.split("  volumes:\n", 1)[1].split("\n\n", 1)[0]
    deployment = named(demo(), "Deployment", FULLNAME)
    assert yaml.safe_load(block) == [containers_of(deployment)["mtaq"]]
    pod_volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert yaml.safe_load(volumes) == [pod_volumes["mtaq-config"]]


def test_tls_switches_probes_and_monitors_to_https_with_the_web_config_mounted() -> None:
    values = CASES["tls-values.yaml"]
    objects = demo({"web": values["web"], "readinessProbe": {"enabled": True}})
    sidecar = containers_of(named(objects, "Deployment", FULLNAME))["mtaq"]
    assert sidecar["livenessProbe"]["httpGet"]["scheme"] == sidecar["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "--web.config.file=/etc/mtaq-web/web-config.yml" in sidecar["args"]
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    assert mounts["mtaq-web"] == "/etc/mtaq-web" and mounts["mtaq-tls"] == "/etc/mtaq-tls"
    web_config = values["web"]["config"]["tls_server_config"]
    assert Path(web_config["cert_file"]).parent == Path(web_config["key_file"]).parent == Path("/etc/mtaq-tls")
    volumes = {v["name"]: v for v in named(objects, "Deployment", FULLNAME)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["mtaq-web"] == {"name": "mtaq-web", "secret": {"secretName": f"{FULLNAME}-web"}}
    assert volumes["mtaq-tls"] == {"name": "mtaq-tls", "secret": {"secretName": "mtaq-tls"}}
    secret = named(objects, "Secret", f"{FULLNAME}-web")
    assert yaml.safe_load(base64.b64decode(secret["data"]["web-config.yml"])) == values["web"]["config"]
    monitor = named(render(values), "PodMonitor", FULLNAME)["spec"]["podMetricsEndpoints"][0]
    assert monitor["scheme"] == "https"
    assert monitor["tlsConfig"] == values["podMonitor"]["tlsConfig"]
    assert monitor["basicAuth"] == values["podMonitor"]["basicAuth"]
    assert named(render(CASES["monitoring-values.yaml"]), "PodMonitor", FULLNAME)[
        "spec"]["podMetricsEndpoints"][0]["scheme"] == "http"


def test_the_webhook_token_comes_from_the_secret_and_the_agent_needs_it() -> None:
    values = CASES["webhook-values.yaml"]
    sidecar = containers_of(named(demo({"webhookToken": values["webhookToken"], "config": values["config"]}),
                                  "Deployment", FULLNAME))["mtaq"]
    assert sidecar["env"] == [{"name": "MTAQ_ACTIONS__WEBHOOK__BEARER_TOKEN",
                               "valueFrom": {"secretKeyRef": {"name": "mtaq-webhook", "key": "token"}}}]
    config_map = named(render(values), "ConfigMap", FULLNAME)
    assert agent_config(config_map, {"MTAQ_ACTIONS__WEBHOOK__BEARER_TOKEN": "s3cret"}).actions.webhook.token() \
        == "s3cret"
    with pytest.raises(Exception, match="MTAQ_ACTIONS__WEBHOOK__BEARER_TOKEN"):
        agent_config(config_map)


# ---------------------------------------------------------------------------------------------
# The blocklist checker and the monitors' selectors
# ---------------------------------------------------------------------------------------------

def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_the_checker_runs_only_the_dnsbl_collector(tmp_path: Path) -> None:
    objects = render(CASES["checker-values.yaml"])
    checker = named(objects, "Deployment", f"{FULLNAME}-checker")
    container = containers_of(checker)["mtaq"]
    assert {m["name"] for m in container["volumeMounts"]} == {"mtaq-config"}
    config_file = tmp_path / "mtaq.yml"
    config_file.write_text(named(objects, "ConfigMap", f"{FULLNAME}-checker")["data"]["mtaq.yml"])
    flags = [arg for arg in container["args"] if not arg.startswith(("--config.file", "--web.listen-address"))]
    assert flags == ["--no-collector.postfix_queue", "--no-collector.postfix_log"]
    done = subprocess.run([sys.executable, "-m", "exporter.cli", "check-config", "--config.file", str(config_file),
                           *flags], capture_output=True, text=True, cwd=ROOT, check=False, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "collectors: dnsbl\n" in done.stdout
    # The fleet's sidecars leave the lists to the checker.
    assert CASES["checker-values.yaml"]["extraArgs"] == ["--no-collector.dnsbl"]


def test_the_monitors_select_the_mta_pods_and_the_checker_apart() -> None:
    objects = render(_merge(CASES["checker-values.yaml"], {"deployment": CASES["demo-values.yaml"]["deployment"],
                                                            "podSelector": None, "service": {"enabled": True}}))
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in of_kind(objects, "Deployment")}
    monitors = {m["metadata"]["name"]: m["spec"]["selector"]["matchLabels"] for m in of_kind(objects, "PodMonitor")}
    services = {s["metadata"]["name"]: s["spec"]["selector"] for s in of_kind(objects, "Service")}
    for selectors in (monitors, services):
        assert set(selectors) == {FULLNAME, f"{FULLNAME}-checker"}
        for name, selector in selectors.items():
            assert [pod for pod, labels in pods.items() if _selects(selector, labels)] == [name]
    for deployment in of_kind(objects, "Deployment"):
        template = deployment["spec"]["template"]
        assert _selects(deployment["spec"]["selector"]["matchLabels"], template["metadata"]["labels"])


def test_a_checker_only_release_needs_no_pod_selector() -> None:
    objects = render(CASES["checker-only-values.yaml"])
    assert [s["metadata"]["name"] for s in of_kind(objects, "Service")] == [f"{FULLNAME}-checker"]
    with pytest.raises(helm_python.HelmRenderError, match="set podSelector"):
        render({"podMonitor": {"enabled": True}})

"""The image in a pod, as the Helm chart deploys it, beside a real Postfix container.

The project's image is built from the Dockerfile on a local Debian base (tests/lab/containers.py),
the chart's demo Deployment is rendered by the Helm engine with a Postfix image made from the same
base plus Debian's ``postfix``, and that pod is run with podman: Postfix writes its queue and its
``maillog_file`` into the pod's volumes, the sidecar reads ``public/`` and the log read-only, as a
non-root user with the postdrop group. Mail is injected through the Postfix container
(``sendmail``) towards the provider simulator on the host; from the host, ``/metrics`` must show
exactly what ``postqueue -j`` and the log in the Postfix container say.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.families import CATALOGUE
from scripts import series_budget
from tests.helpers import free_port, scrape, wait_until
from tests.lab import containers
from tests.lab.helm import render
from tests.lab.postfix import TRAFFIC
from tests.lab.provider_smtp import ProviderSMTP

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(bool(containers.available()), reason=containers.available() or "")]

log = logging.getLogger("mtaq.container-lab")
ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
LOG_FILE = "/var/log/mail/mail.log"
#: Postfix in the pod: relays everything to the simulator, logs to the shared volume (postlogd
#: creates the file 0644), accepts no SMTP (the pod shares the host's network; mail comes in
#: through sendmail), runs in the foreground as the container's process. public/ is given its
#: owner and mode first: the sidecar's subPath mount made it (as the kubelet does) before Postfix
#: could, owned by root, and Postfix would only warn about that and fail to start.
POSTFIX_START = """set -e
postconf -e 'maillog_file = {log}' 'myhostname = mta.lab.test' 'mydomain = lab.test' 'myorigin = lab.test' \
  'mydestination =' 'inet_interfaces = 127.0.0.1' 'inet_protocols = ipv4' 'relayhost = [127.0.0.1]:{relay}' \
  'smtp_dns_support_level = disabled' 'smtp_tls_security_level = none' 'alias_maps =' 'alias_database =' \
  'local_recipient_maps =' 'notify_classes =' 'biff = no' 'compatibility_level = 3.6' \
  'smtp_connection_cache_on_demand = no' 'queue_run_delay = 300s' 'minimal_backoff_time = 300s' \
  'maximal_backoff_time = 600s'
postconf -F '*/*/chroot = n'
postconf -M# smtp/inet
install -d -o postfix -g postdrop -m 2710 /var/spool/postfix/public
exec postfix start-fg
"""
#: Messages the traffic leaves deferred: the simulator answers 4xx for these domains.
DEFERRING = {"gmail.com", "yahoo.com", "outlook.com", "icloud.com"}


def git_revision() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT, check=False)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> containers.Podman:
    return containers.Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def images(podman: containers.Podman) -> dict[str, Any]:
    """The project's image (built now; its base once per machine) and the Postfix image."""
    base = containers.debian_image(podman, "base", containers.BASE_PACKAGES)
    postfix = containers.debian_image(podman, "postfix", (*containers.BASE_PACKAGES, "postfix"))
    build = containers.build_project_image(podman, base, "localhost/mtaq-exporter:lab", version=VERSION,
                                           revision=git_revision())
    log.warning("image %s built in %.1f s, %.1f MB", build.image, build.seconds, build.size_bytes / 1e6)
    postdrop = podman("run", "--rm", postfix, "getent", "group", "postdrop").stdout.split(":")[2]
    return {"build": build, "postfix": postfix, "groups": [int(postdrop)]}


def lab_values(images: dict[str, Any], relay_port: int, port: int) -> dict[str, Any]:
    """The chart's values for the lab: the demo Deployment with the lab's images, the pod's
    supplementary groups, a free port (the pod is on the host network) and a short scan interval;
    everything else as the chart's defaults."""
    repository, _, tag = images["build"].image.rpartition(":")
    postfix_repository, _, postfix_tag = images["postfix"].rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "containerPort": port,
        "podSecurityContext": {"supplementalGroups": images["groups"]},
        "config": {
            "postfix": {"enabled": True, "queue_scan_interval": "1s",
                        "instances": [{"name": "postfix", "showq_path": "/var/spool/postfix/public/showq"}]},
            "log": {"paths": [LOG_FILE], "from": "end"},
            "local_delivery": {"loopback": False},  # the simulator stands in for the providers
        },
        "deployment": {"enabled": True, "postfix": {
            "image": {"repository": postfix_repository, "tag": postfix_tag, "pullPolicy": "Never"},
            "command": ["/bin/sh", "-c", POSTFIX_START.format(log=LOG_FILE, relay=relay_port)],
            "ports": []}},
    }


@pytest.fixture(scope="module")
def pod(podman: containers.Podman, images: dict[str, Any],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The chart's demo Deployment running as a podman pod, with the provider simulator on the host."""
    provider = ProviderSMTP().start()
    port = free_port()
    objects = render(lab_values(images, provider.port, port))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    by_name = {o["metadata"]["name"]: o for o in objects if o["kind"] in ("ConfigMap", "Secret")}
    runner = containers.Pod(podman, f"mtaq-lab-{port}", deployment["spec"]["template"]["spec"], by_name,
                            tmp_path_factory.mktemp("pod"))
    started = time.monotonic()
    try:
        runner.start()
        wait_until(lambda: runner.exec("postfix", "test", "-S", "/var/spool/postfix/public/showq",
                                       check=False).returncode == 0,
                   timeout=60, what="Postfix in the pod to create its showq socket", interval=0.5)
        wait_until(lambda: scrape(port).get(("mtaq_up", (("mta", "postfix"), ("mta_instance", "postfix")))) == 1,
                   timeout=60, what="the sidecar to read the queue", interval=0.5)
        yield {"pod": runner, "port": port, "provider": provider, "deployment": deployment,
               "config": by_name[deployment["metadata"]["name"]]["data"]["mtaq.yml"]}
    except BaseException:
        for container in ("postfix", "mtaq"):
            print(f"--- {container}:\n{runner.logs(container)[-3000:]}")
        raise
    finally:
        runner.remove()
        provider.stop()
        log.warning("pod test took %.1f s", time.monotonic() - started)


def inject(runner: containers.Pod) -> int:
    """Submit TRAFFIC through the Postfix container's sendmail, one message per recipient."""
    script = ('while read -r sender recipient; do printf "Subject: lab\\n\\nfrom the container lab\\n" '
              '| sendmail -f "$sender" "$recipient"; done')
    lines = [f"{sender} user{i}@{domain}" for sender, domains in TRAFFIC for i, domain in enumerate(domains)]
    runner.exec("postfix", "sh", "-c", script, stdin="\n".join(lines) + "\n")
    return len(lines)


def postqueue(runner: containers.Pod) -> list[dict[str, Any]]:
    """``postqueue -j`` in the Postfix container."""
    return [json.loads(line) for line in runner.exec("postfix", "postqueue", "-j").stdout.splitlines() if line]


def family(metrics: dict, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: value for (sample, labels), value in metrics.items() if sample == name}


def by(samples: dict[tuple[tuple[str, str], ...], float], label: str) -> Counter:
    totals: Counter = Counter()
    for labels, value in samples.items():
        totals[dict(labels)[label]] += value
    return +totals


def test_sidecar_shows_the_queue_and_deliveries_of_the_postfix_container(pod: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    runner, port = pod["pod"], pod["port"]
    sent = inject(runner)
    deferring = sum(1 for _, domains in TRAFFIC for domain in domains if domain in DEFERRING)

    def settled() -> list[dict[str, Any]] | None:
        queue = postqueue(runner)
        done = [m for m in queue if m["queue_name"] == "deferred"]
        return queue if len(done) == len(queue) == deferring else None

    queue = wait_until(lambda: settled(), timeout=120, what=f"{deferring} deferred messages in the pod's queue",
                       interval=0.5)
    settled_at = time.time()
    log_lines = runner.exec("postfix", "cat", LOG_FILE).stdout.splitlines()

    def caught_up() -> dict | None:
        metrics = scrape(port)
        lines = sum(family(metrics, "mtaq_log_lines_total").values())
        scanned = metrics[("mtaq_queue_last_scan_timestamp_seconds", (("mta", "postfix"), ("mta_instance", "postfix")))]
        return metrics if lines == len(log_lines) and scanned > settled_at else None

    metrics = wait_until(caught_up, timeout=60, what=f"the sidecar to read all {len(log_lines)} log lines and rescan",
                         interval=0.5)
    # The queue: every cell against postqueue -j in the Postfix container.
    assert by(family(metrics, "mtaq_queue_messages"), "queue") == Counter(m["queue_name"] for m in queue)
    assert by(family(metrics, "mtaq_queue_recipients"), "queue") == Counter(
        {"deferred": sum(len(m["recipients"]) for m in queue)})
    assert sum(family(metrics, "mtaq_queue_size_bytes").values()) == sum(m["message_size"] for m in queue)
    # The deliveries: each status against the Postfix log; Postfix's own deferrals (a provider's
    # 421 suspends its destination for the other messages) are counted apart, never as attempts.
    statuses = Counter(m.group(1) for line in log_lines if (m := re.search(r" status=(sent|deferred|bounced) ", line)))
    attempts = by(family(metrics, "mtaq_delivery_attempts_total"), "status")
    self_deferred = sum(family(metrics, "mtaq_self_deferrals_total").values())
    assert attempts["sent"] == statuses["sent"] == len(pod["provider"].stats.delivered)
    assert attempts["bounced"] == statuses["bounced"] == 2  # comcast blocklisted, gmx user unknown
    assert attempts["deferred"] + self_deferred == statuses["deferred"] >= deferring
    assert sum(by(family(metrics, "mtaq_messages_received_total"), "lane").values()) == sent
    assert family(metrics, "mtaq_log_lines_total").get((("mta", "postfix"), ("result", "unparsed")), 0) == 0
    # The series budget: what the sidecar exports stays within the worst case its configuration
    # allows (scripts/series_budget.py, the README's figures).
    config = tmp_path / "mtaq.yml"
    config.write_text(pod["config"])
    values, exceptions, running = series_budget.label_values(str(config))
    bound = sum(series_budget.worst_case(CATALOGUE[name], values, exceptions)[0] for name in running)
    exported = sum(1 for name, _ in metrics if name.startswith("mtaq_"))
    log.warning("sidecar series: %d mtaq_* (%d in all), worst case %d", exported, len(metrics), bound)
    assert 0 < exported <= bound


def test_the_healthcheck_passes_and_the_sidecar_is_non_root_on_a_read_only_root(pod: dict[str, Any]) -> None:
    runner = pod["pod"]
    podman = runner.podman
    # The image's HEALTHCHECK (mtaq-exporter healthcheck --agent-pid 1) finds the chart's port.
    done = podman("healthcheck", "run", runner.container_name("mtaq"), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert runner.exec("mtaq", "id", "-u").stdout.strip() == "10154"
    assert runner.exec("mtaq", "id", "-g").stdout.strip() == "10154"
    write = runner.exec("mtaq", "touch", "/opt/mtaq/probe", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr
    status = runner.exec("mtaq", "cat", "/proc/1/status").stdout
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and re.search(r"^CapEff:\s+0+$", status, re.M)


def test_the_pod_runs_exactly_the_rendered_sidecar(pod: dict[str, Any]) -> None:
    runner = pod["pod"]
    spec = pod["deployment"]["spec"]["template"]["spec"]
    sidecar = next(c for c in spec["containers"] if c["name"] == "mtaq")
    inspected = runner.inspect("mtaq")
    security = sidecar["securityContext"]
    assert inspected["Config"]["User"] == f"{security['runAsUser']}:{security['runAsGroup']}"
    assert [int(g) for g in inspected["HostConfig"]["GroupAdd"]] == spec["securityContext"]["supplementalGroups"]
    assert inspected["HostConfig"]["ReadonlyRootfs"] is security["readOnlyRootFilesystem"] is True
    assert inspected["Args"] == sidecar["args"]
    volumes = {v["name"]: runner.volumes[v["name"]] for v in spec["volumes"]}
    mounts = {m["Destination"]: (m["Source"], m["RW"]) for m in inspected["Mounts"]}
    want = {m["mountPath"]: (str(volumes[m["name"]] / m.get("subPath", "")).rstrip("/"), not m.get("readOnly"))
            for m in sidecar["volumeMounts"]}
    assert mounts == want
    assert all(not rw for _, rw in mounts.values())
    processes = runner.exec("mtaq", "cat", "/proc/1/status").stdout
    groups = re.search(r"^Groups:\s*(.*)$", processes, re.M).group(1).split()
    assert {int(g) for g in groups} == {security["runAsGroup"], *spec["securityContext"]["supplementalGroups"]}


def test_stopping_postfix_turns_mtaq_up_0_without_restarting_the_sidecar(pod: dict[str, Any]) -> None:
    runner, port = pod["pod"], pod["port"]
    before = runner.inspect("mtaq")["State"]
    runner.podman("stop", "--time", "10", runner.container_name("postfix"))
    up = ("mtaq_up", (("mta", "postfix"), ("mta_instance", "postfix")))
    wait_until(lambda: scrape(port)[up] == 0, timeout=30, what="mtaq_up 0 after Postfix stopped", interval=0.5)
    after = runner.inspect("mtaq")
    assert after["State"]["Running"] is True
    assert after["State"]["StartedAt"] == before["StartedAt"] and after["RestartCount"] == 0
    assert runner.podman("healthcheck", "run", runner.container_name("mtaq"), check=False).returncode == 0

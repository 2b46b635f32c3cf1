"""The shape of the code: the collector table drives the agent, the configuration, the command
line and the README; families are declared once and checked at start-up; imports point one way."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from collectors import families as F
from collectors.base import BaseCollector
from collectors.classify import Classifier
from collectors.deadline import Deadline
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage, QueueRecipient
from collectors.settings import StrictModel
from collectors.table import COLLECTORS
from exporter.agent import Agent
from exporter.commands.run import run_agent
from exporter.config import Config, collector_enabled, load_config, set_dotted
from exporter.registry import FamilyConflictError, build_registry
from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("exporter", "collectors")


# -- imports ---------------------------------------------------------------------------------------

def import_graph() -> dict[str, set[str]]:
    """module -> product modules it imports, counting imports inside functions too."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            targets |= {n for n in names if n in files and n != module and not module.startswith(n + ".")}
        graph[module] = targets
    return graph


def test_no_import_cycle_in_the_product_code() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target):], target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_collectors_never_import_the_agent() -> None:
    graph = import_graph()
    upward = {(m, t) for m, targets in graph.items() if m.startswith("collectors") for t in targets
              if t.startswith("exporter")}
    assert upward == set()


def test_the_agent_names_no_collector() -> None:
    ids = {spec.id for spec in COLLECTORS}
    plumbing = ("agent", "http", "scheduler", "registry", "status", "config")
    for name in plumbing:
        text = (ROOT / "exporter" / f"{name}.py").read_text()
        named = {i for i in ids if re.search(rf"\b{i}\b", text)}
        assert named == set(), f"exporter/{name}.py names {named}"


# -- the collector table ---------------------------------------------------------------------------

def test_table_entries() -> None:
    ids = [spec.id for spec in COLLECTORS]
    assert len(set(ids)) == len(ids)
    for spec in COLLECTORS:
        assert (ROOT / "collectors" / f"{spec.id}.py").exists(), f"collector {spec.id} has no module of its name"
        assert issubclass(spec.model, StrictModel)
        assert Config.model_fields[spec.section].annotation is spec.model
        assert spec.id in type(Config().collectors).model_fields


def test_every_flag_sets_a_real_key() -> None:
    for spec in COLLECTORS:
        for flag in spec.flags:
            assert flag.flag.startswith(f"--{flag.key.split('.')[0]}."), flag
            value = ["x"] if flag.repeatable else (flag.choices[0] if flag.choices else "x")
            tree: dict = {}
            set_dotted(tree, flag.key, value)
            load_config(environ={}, overrides=tree)  # an unknown key would raise ConfigError


def test_collectors_switch_overrides_the_condition() -> None:
    by_id = {spec.id: spec for spec in COLLECTORS}
    config = load_config(environ={}, overrides={"log": {"paths": ["/var/log/mail.log"]}, "dnsbl": {"enabled": False}})
    assert collector_enabled(config, by_id["postfix_log"])
    assert not collector_enabled(config, by_id["dnsbl"])
    config = load_config(environ={}, overrides={"log": {"paths": ["/var/log/mail.log"]},
                                                "collectors": {"postfix_log": False, "postfix_queue": False}})
    assert not collector_enabled(config, by_id["postfix_log"])
    assert not collector_enabled(config, by_id["postfix_queue"])


def test_readme_collector_table_is_the_collector_table() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Collectors", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{spec.id}` | {spec.reads} | {spec.default} | {spec.needs} |" for spec in COLLECTORS]


# -- families --------------------------------------------------------------------------------------

class Declaring(BaseCollector):
    """A collector that declares (and emits) one family definition."""

    def __init__(self, collector_id: str, family: F.Family) -> None:
        super().__init__(collector_id)
        self.family = family

    def describe(self) -> tuple[F.Family, ...]:
        return (self.family,)

    def families(self) -> Iterator:
        yield self.family.new()


def test_two_definitions_of_one_family_are_a_startup_error(capsys: pytest.CaptureFixture[str]) -> None:
    other_help = F.Family(F.QUEUE_MESSAGES.name, "gauge", "Messages, counted another way.", F.QUEUE_MESSAGES.labels)
    collectors = [Declaring("one", F.QUEUE_MESSAGES), Declaring("two", other_help)]
    config = load_config(environ={}, overrides={"web": {"listen_address": "127.0.0.1:0"}})
    with pytest.raises(FamilyConflictError, match="collectors one and two both emit mtaq_queue_messages"):
        Agent(config, collectors)
    assert run_agent(config, collectors) == 2
    assert "cannot start: collectors one and two both emit mtaq_queue_messages, but differently" in \
        capsys.readouterr().err


def test_the_agent_families_cannot_be_redefined() -> None:
    config = load_config(environ={}, overrides={})
    with pytest.raises(FamilyConflictError, match="the agent and rogue"):
        Agent(config, [Declaring("rogue", F.Family("mtaq_build_info", "gauge", "another help", ("version",)))])


class OneMessage:
    """A queue reader with one deferred message."""

    source_info = ("test", "-")

    def __init__(self, name: str) -> None:
        self.name = name

    def source(self) -> str:
        return "a test queue"

    def read(self, _deadline: Deadline) -> Iterator[QueueMessage]:
        yield QueueMessage("deferred", "ABC123", 1.7e9, 1000, "a@example.com",
                           (QueueRecipient("b@gmail.com", "host x[1.2.3.4] said: 421 4.7.28 rate limited"),))


def test_two_mtas_share_one_family_definition() -> None:
    classifier = Classifier()
    postfix = QueueCollector("postfix_queue", "postfix", [OneMessage("postfix")], classifier, ["deferred"])
    other = QueueCollector("other_queue", "exim", [OneMessage("exim")], classifier, ["deferred", "frozen"])
    for collector in (postfix, other):
        collector.run_refresh()
    text = generate_latest(build_registry([postfix, other])).decode()
    assert text.count("# HELP mtaq_queue_messages ") == 1
    assert 'mtaq_queue_messages{lane="normal",mta="postfix",mta_instance="postfix",queue="deferred"} 1.0' in text
    assert 'mtaq_queue_messages{lane="normal",mta="exim",mta_instance="exim",queue="deferred"} 1.0' in text
    if shutil.which("promtool"):
        done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr


# -- the command line ------------------------------------------------------------------------------

def test_help_lists_the_collector_switches() -> None:
    done = subprocess.run([sys.executable, "-m", "exporter.cli", "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for spec in COLLECTORS:
        assert f"--collector.{spec.id}, --no-collector.{spec.id}" in done.stdout
        for flag in spec.flags:
            assert flag.flag in done.stdout


def test_no_collector_switch_leaves_only_the_log(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "--no-collector.postfix_queue", "--log.path",
                             str(log), "--web.listen-address", f"127.0.0.1:{port}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def metrics() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                    return response.read().decode()
            except OSError:
                assert proc.poll() is None, proc.communicate()[0]
                time.sleep(0.1)
                return None

        text = wait_until(metrics, what="the agent's metrics")
        collectors = set(re.findall(r'mtaq_collector_success\{collector="([a-z_]+)"\}', text))
        assert collectors == {"postfix_log"}
        assert "mtaq_up{" not in text
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert proc.returncode == 0
    assert f"collector postfix_log: postfix log {log}, no checkpoint" in output


def test_each_spec_names_the_routes_its_collector_adds(tmp_path: Path) -> None:
    """The table's routes are what the collectors add (so a disabled one answers for all of them)."""
    token = tmp_path / "token"
    token.write_text("t")
    log = tmp_path / "mail.log"
    log.write_text("")
    config = load_config(environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0"}, "postfix": {"enabled": True}, "log": {"paths": [str(log)]},
        "exim": {"instances": [{"spool_directory": str(tmp_path), "log_path": str(log)}]},
        "dnsbl": {"enabled": True, "targets": {"ips": ["192.0.2.1"]}},
        "actions": {"enabled": True, "agent_labels": {"instance": "x"}, "webhook": {"bearer_token_file": str(token)},
                    "rules": [{"alertname": "A", "action": "postfix_throttle",
                               "params": {"destination_rate_delay": "2s"}, "ttl": "1h"}]}})
    agent = Agent(config)
    added = {c.id: {(r.method, r.path) for r in c.routes(agent)} for c in agent.collectors}
    for spec in COLLECTORS:
        assert added.get(spec.id, set()) == set(spec.routes), spec.id
        assert bool(spec.routes) == bool(spec.disabled), spec.id
    from exporter.actions import ROUTES
    assert added["actions"] == set(ROUTES)


def test_routes_of_what_is_off_say_how_to_turn_it_on() -> None:
    agent = Agent(load_config(environ={}, overrides={"web": {"listen_address": "127.0.0.1:0"},
                                                     "collectors": {"postfix_queue": False}}))
    agent.start()
    try:
        for method, path, hint in (("GET", "/api/v1/dead-letters", "set log.paths"),
                                   ("GET", "/api/v1/blocklists", "set dnsbl.enabled: true"),
                                   ("POST", "/api/v1/alerts", "set actions.enabled: true")):
            request = urllib.request.Request(f"http://127.0.0.1:{agent.port}{path}", method=method,
                                             data=b"{}" if method == "POST" else None)
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=10)
            assert caught.value.code == 404
            assert hint in caught.value.read().decode(), path
    finally:
        agent.stop()

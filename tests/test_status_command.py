"""``mtaq-exporter status`` against the demo: the summary in the terminal (lanes, provider x reason,
dead letters), ``--json`` (every key documented), ``--watch``, colours, addresses and errors."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from exporter import __version__
from exporter.commands import status as status_command
from exporter.commands.agent_client import agent_url
from exporter.commands.demo import BANNER
from tests.helpers import AgentProcess, free_port, scrape, wait_until

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter.cli", "status", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)


@pytest.fixture(scope="module")
def demo() -> Iterator[AgentProcess]:
    with AgentProcess("demo", "--lines-per-second", "400") as agent:
        agent.wait_ready()

        def replayed() -> bool:
            done = cli("--url", agent.url(), "--json")
            return done.returncode == 0 and json.loads(done.stdout)["summary"]["dead_letters"]["total"] >= 12

        wait_until(replayed, what="the first replay of the demo log")
        yield agent


def test_terminal_summary_shows_lanes_providers_and_dead_letters(demo: AgentProcess) -> None:
    done = cli("--url", f"127.0.0.1:{demo.port}")  # host:port, as operators type it
    assert done.returncode == 0, done.stderr
    out = done.stdout
    metrics = scrape(demo.port)
    assert out.splitlines()[1].strip() == BANNER
    assert "\033[" not in out  # not a terminal: no colours
    lanes = out.split("Queue by lane")[1].split("\n\n")[0].splitlines()[2:]
    shown = set()
    for line in lanes:
        instance, lane, queued, deferred, held = line.split()[:5]
        per_queue = {dict(labels)["queue"]: value for (name, labels), value in metrics.items()
                     if name == "mtaq_queue_messages" and dict(labels)["lane"] == lane
                     and dict(labels)["mta_instance"] == instance}
        # deferred is Postfix's queue ("-" for Exim); held / frozen: Postfix's hold, or Exim's frozen.
        assert int(queued) == sum(v for q, v in per_queue.items() if q != "hold")
        assert deferred == (str(int(per_queue["deferred"])) if "deferred" in per_queue else "-")
        assert held == str(int(per_queue.get("hold", 0) + per_queue.get("frozen", 0)))
        shown.add((instance, lane))
    assert shown == {(i, lane) for i in ("postfix-lab", "exim-lab") for lane in ("high", "normal", "low")}
    waits = out.split("Why mail waits")[1].split("\n\n")[0].splitlines()[2:]
    recipients: Counter[tuple[str, str]] = Counter()  # summed over the two instances, as the summary does
    for (name, labels), value in metrics.items():
        if name == "mtaq_queue_deferred_recipients":
            recipients[(dict(labels)["provider"], dict(labels)["reason"])] += value
    assert {(line.split()[0], line.split()[1]): int(line.split()[2]) for line in waits} == \
        {k: int(v) for k, v in recipients.items() if v}
    assert re.search(r"^Dead letters: \d+ since start$", out, re.MULTILINE)
    dead = out.split("Dead letters:")[1].split("\n\n")[0].splitlines()[2:]
    assert len(dead) == 10 and all("***@" in line for line in dead)
    assert "collector dnsbl: not enabled: off (dnsbl.enabled)" in out


def test_json_is_the_status_document_and_every_key_is_documented(demo: AgentProcess) -> None:
    done = cli("--url", demo.url(), "--json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    summary = document["summary"]
    assert set(document) == {"version", "started", "collectors", "summary"}
    assert set(summary) == {"generated_at", "banner", "addresses_masked", "window_seconds", "queue", "deferred",
                            "providers", "dead_letters", "blocklists", "log_sources", "disabled_collectors"}
    assert summary["banner"] == BANNER and summary["blocklists"] is None and summary["addresses_masked"] is True
    documented = set(re.findall(r"[a-z_]+", status_command.__doc__.split("--json")[1]))

    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            return set(node) | set().union(*(keys(v) for v in node.values()))
        if isinstance(node, list):
            return set().union(*(keys(v) for v in node))
        return set()

    undocumented = keys(document) - documented - set(document["collectors"])
    assert undocumented == set()


def test_colours_on_request(demo: AgentProcess) -> None:
    done = cli("--url", demo.url(), "--color", "always")
    assert "\033[32m" in done.stdout and "\033[30;43;1m" in done.stdout  # ok lanes green, the banner


def test_watch_redraws_until_interrupted(demo: AgentProcess) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "status", "--url", demo.url(), "--watch", "1"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("mtaq-exporter ")
        if seen == 2:
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0 and seen == 2


def test_unreachable_agent_is_one_line_and_exit_2() -> None:
    done = cli("--url", f":{free_port()}")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("mtaq-exporter status: cannot reach http://127.0.0.1:") and "--url" in done.stderr


@pytest.mark.parametrize(("typed", "url"), [
    ("localhost:10154", "http://localhost:10154"), (":10154", "http://127.0.0.1:10154"),
    ("10154", "http://127.0.0.1:10154"), ("https://mta.example:10154/", "https://mta.example:10154"),
    ("[::1]:10154", "http://[::1]:10154")])
def test_agent_addresses_as_operators_type_them(typed: str, url: str) -> None:
    assert agent_url(typed) == url


def test_credentials_in_the_url_are_the_agents_basic_auth(tmp_path: Path) -> None:
    """With basic auth on the agent, ``status`` authenticates and the summary shows addresses in full."""
    web_config = tmp_path / "web-config.yml"
    web_config.write_text("basic_auth_users:\n  ops: " + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode() + "\n")
    with AgentProcess("demo", "--lines-per-second", "2000", "--web.config.file", str(web_config)) as agent:
        agent.wait_ready()
        assert cli("--url", agent.url()).stderr.endswith(": HTTP 401: unauthorized\n")
        url = f"http://ops:s3cret@127.0.0.1:{agent.port}"

        def unmasked() -> dict | None:
            done = cli("--url", url, "--json")
            assert done.returncode == 0, done.stderr
            document = json.loads(done.stdout)
            return document if document["summary"]["dead_letters"]["recent"] else None

        document = wait_until(unmasked, what="dead letters")
        shown = cli("--url", url)
    assert document["summary"]["addresses_masked"] is False
    assert all("***" not in d["sender"] for d in document["summary"]["dead_letters"]["recent"])
    assert "s3cret" not in shown.stdout and shown.stdout.startswith(
        f"mtaq-exporter {__version__} at http://127.0.0.1:{agent.port},")

"""Dead letters: the agent's API and the ``dead-letters`` command, on the bundled real Postfix log."""

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.agent import Agent
from exporter.commands.demo import DEMO_CLASSIFICATION, demo_file
from exporter.config import load_config
from tests.helpers import wait_until


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    log = tmp_path_factory.mktemp("dl") / "maillog"
    log.write_text(demo_file("demo_maillog.log"))
    agent = Agent(load_config(None, environ={}, overrides={
        **DEMO_CLASSIFICATION, "web": {"listen_address": "127.0.0.1:0"}, "postfix": {"enabled": False},
        "log": {"paths": [str(log)], "from": "start"}}))
    agent.start()
    yield agent
    agent.stop()


def expired_in_log() -> list[str]:
    """Independent reference: queue ids of qmgr expiry lines."""
    return [line.split(": ")[1] for line in demo_file("demo_maillog.log").splitlines() if "status=expired" in line]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter.cli", "dead-letters", *args], capture_output=True,
                          text=True, timeout=30, cwd=Path(__file__).parent.parent)


def test_api_lists_every_expired_message_with_context(agent: Agent) -> None:
    expected = expired_in_log()
    assert len(expected) == 12
    log = agent.collectors[0]
    wait_until(lambda: sum(len(s.dead_letter_log) for s in log.snapshots().values()) == len(expected),
               what="dead letters")
    done = cli("--url", f"http://127.0.0.1:{agent.port}", "--json")
    assert done.returncode == 0, done.stderr
    letters = json.loads(done.stdout)["dead_letters"]
    assert sorted(d["qid"] for d in letters) == sorted(expected)
    by_qid = {d["qid"]: d for d in letters}
    gmail = next(d for d in letters if d["provider"] == "google")
    assert gmail["reason"] == "rate_limited" and "4.7.28" in gmail["text"]
    assert all(d["attempts"] >= 1 and d["pending_recipients"] == 1 for d in by_qid.values())
    assert {d["lane"] for d in letters} == {"high", "normal", "low"}
    # No authentication configured: personal data stays masked, the domain (the provider) shows.
    senders = {d["sender"] for d in letters}
    assert senders <= {"o***@alerts.example.com", "b***@shop.example.com", "n***@bulk.example.com"}, senders
    assert all(r.startswith("u***@") for d in letters for r in d["recipients"])


def test_human_table(agent: Agent) -> None:
    done = cli("--url", f"http://127.0.0.1:{agent.port}", "--limit", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("expired (UTC)") and len(lines) == 5 and lines[-1].startswith("... 9 more")


def test_unreachable_agent_exits_2() -> None:
    done = cli("--url", "http://127.0.0.1:9")
    assert done.returncode == 2
    assert done.stderr == ("mtaq-exporter dead-letters: cannot reach http://127.0.0.1:9/api/v1/dead-letters: "
                           "Connection refused (is the agent running there? see --url)\n")


def test_json_honours_the_limit(agent: Agent) -> None:
    log = agent.collectors[0]
    wait_until(lambda: sum(len(s.dead_letter_log) for s in log.snapshots().values()) == 12, what="dead letters")
    done = cli("--url", f"127.0.0.1:{agent.port}", "--json", "--limit", "1")  # host:port, as typed
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert len(document["dead_letters"]) == 1 and document["omitted"] == 11
    assert document["addresses_masked"] is True


def test_table_shows_sender_and_recipient_domain(agent: Agent) -> None:
    log = agent.collectors[0]
    wait_until(lambda: sum(len(s.dead_letter_log) for s in log.snapshots().values()) == 12, what="dead letters")
    letters = json.loads(cli("--url", f"http://127.0.0.1:{agent.port}", "--json").stdout)["dead_letters"]
    lines = cli("--url", f":{agent.port}", "--limit", "12").stdout.splitlines()
    assert lines[0].split()[:7] == ["expired", "(UTC)", "queued", "qid", "sender", "to", "(domain)"]
    for line, letter in zip(lines[1:], letters, strict=True):  # newest first, as the API
        fields = line.split()
        assert fields[3:6] == [letter["qid"], letter["sender"], letter["recipients"][0].split("@")[1]]


def test_a_wrong_path_or_a_disabled_log_says_what_the_agent_answered(agent: Agent) -> None:
    done = cli("--url", f"http://127.0.0.1:{agent.port}/nothing-here")
    assert done.returncode == 2
    assert done.stderr == (f"mtaq-exporter dead-letters: http://127.0.0.1:{agent.port}/nothing-here/api/v1/dead-letters"
                           ": HTTP 404: not found\n")

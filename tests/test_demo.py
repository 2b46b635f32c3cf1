"""The demo command: real bundled Postfix data served as metrics that promtool accepts."""

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors import families as F
from exporter.commands.demo import demo_file, replayed
from tests.helpers import AgentProcess, free_port, wait_until


@pytest.fixture(scope="module")
def demo() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "demo", "--web.listen-address",
                             f"127.0.0.1:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"demo did not become ready: {proc.communicate()[0].decode()}")
        time.sleep(0.1)
    yield port
    proc.terminate()
    assert proc.wait(10) == 0


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_demo_serves_the_bundled_queue(demo: int) -> None:
    text = fetch(demo)
    messages = len(demo_file("demo_queue.jsonl").splitlines())
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("mtaq_queue_messages{"))
    assert total == messages
    assert 'mtaq_up{mta="postfix",mta_instance="postfix-lab"} 1.0' in text
    assert ('mtaq_queue_deferred_recipients{mta="postfix",mta_instance="postfix-lab",provider="google",'
            'reason="rate_limited"}') in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_demo_metrics(demo: int) -> None:
    done = subprocess.run(["promtool", "check", "metrics"], input=fetch(demo), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_demo_emits_exactly_the_catalogue_families_of_its_collectors(demo: int) -> None:
    parsed = {f.name: f for f in text_string_to_metric_families(fetch(demo))}
    expected = {f.family_name: f for f in (*F.AGENT, *F.OBJECTIVES, *F.QUEUE, *F.DELIVERY_LOG)}
    assert {name for name in parsed if not name.startswith("process_")} == set(expected)
    for name, family in parsed.items():
        if name.startswith("process_"):
            continue
        definition = expected[name]
        assert (family.type, family.documentation) == (definition.kind, definition.help), name
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            want = set(definition.labels) | ({"le"} if sample.name.endswith("_bucket") else set())
            assert set(sample.labels) == want, (sample.name, sample.labels)
            if "mta_instance" in want:
                assert (sample.labels["mta"], sample.labels["mta_instance"]) == ("postfix", "postfix-lab")


def test_demo_replays_the_bundled_log(demo: int) -> None:
    def sent() -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in fetch(demo).splitlines()
                   if line.startswith("mtaq_delivery_attempts_total{") and 'status="sent"' in line)

    first = sent()
    deadline = time.monotonic() + 30
    while sent() <= first:
        assert time.monotonic() < deadline, "the demo's delivery counters did not move"
        time.sleep(0.2)
    text = fetch(demo)
    assert 'mtaq_deferrals_total{mta="postfix",mta_instance="postfix-lab",provider="google",reason="rate_limited"}' \
        in text
    assert 'mtaq_log_lines_total{mta="postfix",result="unparsed",source=' in text


def test_replays_stamp_lines_now_and_give_messages_ids_of_their_own() -> None:
    lines = demo_file("demo_maillog.log").splitlines(keepends=True)
    now = time.mktime((2026, 12, 1, 9, 5, 7, 0, 0, -1))
    first = [replayed(line, 0, now) for line in lines]
    third = [replayed(line, 2, now) for line in lines]
    assert all(line.startswith("Dec  1 09:05:07 mta postfix-lab/") for line in first + third)
    assert [line[16:] for line in first] == [line[16:] for line in lines]  # the first replay keeps its ids
    ids = set(re.findall(r"\]: ([0-9A-F]{6,}): ", "".join(lines)))
    ids_again = set(re.findall(r"\]: ([0-9A-Z]{6,}): ", "".join(third)))
    assert ids_again == {f"{qid}Z2" for qid in ids}
    notice = next(line for line in third if "non-delivery notification:" in line)
    assert re.search(r": [0-9A-F]+Z2: sender non-delivery notification: [0-9A-F]+Z2$", notice)


def test_replayed_expiries_are_new_dead_letters_with_ids_of_their_own() -> None:
    """Issue 12: the replay loop made the same queue ids recur as new dead letters."""
    expiries = demo_file("demo_maillog.log").count("status=expired")
    with AgentProcess("demo", "--lines-per-second", "2000", "--log.level", "debug",
                      "--web.telemetry-path", "/prom") as agent:
        agent.wait_ready()

        def letters() -> list[dict] | None:
            with urllib.request.urlopen(agent.url("/api/v1/dead-letters"), timeout=10) as response:
                found = json.loads(response.read())["dead_letters"]
            return found if len(found) >= 3 * expiries else None

        found = wait_until(letters, what="three replays of the demo log")
        with urllib.request.urlopen(agent.url("/prom"), timeout=10) as response:
            assert b"mtaq_dead_letters_total" in response.read()
    qids = [d["qid"] for d in found]
    assert len(set(qids)) == len(qids)

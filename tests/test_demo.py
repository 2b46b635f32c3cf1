"""The demo command: real bundled Postfix data served as metrics that promtool accepts."""

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors import families as F
from exporter.commands.demo import demo_file
from tests.helpers import free_port


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
    expected = {f.family_name: f for f in (*F.AGENT, *F.QUEUE, *F.DELIVERY_LOG)}
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

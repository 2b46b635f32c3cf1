"""The demo command: real bundled Postfix and Exim data served as metrics that promtool accepts,
checked against independent readings of the same data (``exim -bp`` of the spool, counts of the
raw main log)."""

import calendar
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from collectors import families as F
from collectors.exim.log_parse import EximLineParser
from collectors.exim.message_id import id_time, is_message_id
from collectors.log_pipeline import Unparsed
from exporter.commands.demo import (
    EXIM_ID_STEP,
    EXIM_REPLAY,
    EXIM_SPOOL,
    POSTFIX_REPLAY,
    demo_file,
    replayed,
    shifted_spool,
)
from tests.exim_reference import listing, reference, series
from tests.helpers import AgentProcess, free_port, wait_until
from tests.test_exim_queue import spool_messages

FIXTURES = Path(__file__).parent / "fixtures"
#: ``exim -bp`` of the captured spool, which the demo bundles (a test below checks they are one).
EXIM_LISTED = listing((FIXTURES / "exim_queue" / "bp.txt").read_text())
EXIM_LINES = demo_file(EXIM_REPLAY.file).splitlines()
#: Lines per second of the module's demo: a replay of the Exim main log takes about half a second.
PACE = 500


class Demo(NamedTuple):
    port: int
    started: float


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    port = free_port()
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "demo", "--web.listen-address",
                             f"127.0.0.1:{port}", "--lines-per-second", str(PACE)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
    yield Demo(port, started)
    proc.terminate()
    assert proc.wait(10) == 0


def fetch(demo: Demo) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{demo.port}/metrics", timeout=10) as response:
        return response.read().decode()


def samples(demo: Demo) -> dict[str, list[tuple[dict[str, str], float]]]:
    """One scrape as {sample name: [(labels, value)]}, the shape ``tests.exim_reference.series`` sums."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(fetch(demo)):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def test_demo_serves_the_bundled_queue(demo: Demo) -> None:
    text = fetch(demo)
    messages = len(demo_file("demo_queue.jsonl").splitlines())
    total = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                if line.startswith("mtaq_queue_messages{") and 'mta="postfix"' in line)
    assert total == messages
    assert 'mtaq_up{mta="postfix",mta_instance="postfix-lab"} 1.0' in text
    assert ('mtaq_queue_deferred_recipients{mta="postfix",mta_instance="postfix-lab",provider="google",'
            'reason="rate_limited"}') in text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
def test_promtool_accepts_demo_metrics(demo: Demo) -> None:
    done = subprocess.run(["promtool", "check", "metrics"], input=fetch(demo), capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_demo_emits_exactly_the_catalogue_families_of_its_collectors(demo: Demo) -> None:
    parsed = {f.name: f for f in text_string_to_metric_families(fetch(demo))}
    expected = {f.family_name: f for f in (*F.AGENT, *F.OBJECTIVES, *F.QUEUE, *F.DELIVERY_LOG)}
    instances = set()
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
                instances.add((sample.labels["mta"], sample.labels["mta_instance"]))
    assert instances == {("postfix", "postfix-lab"), ("exim", "exim-lab")}


def test_demo_replays_the_bundled_log(demo: Demo) -> None:
    def sent() -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in fetch(demo).splitlines()
                   if line.startswith("mtaq_delivery_attempts_total{") and 'status="sent"' in line
                   and 'mta="postfix"' in line)

    first = sent()
    deadline = time.monotonic() + 30
    while sent() <= first:
        assert time.monotonic() < deadline, "the demo's delivery counters did not move"
        time.sleep(0.2)
    text = fetch(demo)
    assert 'mtaq_deferrals_total{mta="postfix",mta_instance="postfix-lab",provider="google",reason="rate_limited"}' \
        in text
    assert 'mtaq_log_lines_total{mta="postfix",result="unparsed",source=' in text


# -- the Exim instance ------------------------------------------------------------------------------

def test_the_shifted_spool_is_the_bundled_one_an_hour_later(tmp_path: Path) -> None:
    """Arrival times move by one whole number of seconds, the newest to a minute before now;
    everything else reads as before, and every other line of the -H files is unchanged."""
    bundled = Path(str(resources.files("collectors").joinpath(f"data/{EXIM_SPOOL}")))
    now = time.time() + 3600.25
    shifted_spool(str(tmp_path), now)
    before, after = spool_messages(bundled), spool_messages(tmp_path)
    assert set(after) == set(before) == set(EXIM_LISTED)
    shifts = {round(after[i].arrival - before[i].arrival, 6) for i in before}
    assert len(shifts) == 1 and shifts.pop().is_integer()
    assert now - 60.5 <= max(m.arrival for m in after.values()) <= now - 59.5
    for message_id, message in before.items():
        assert dataclasses.replace(after[message_id], arrival=message.arrival) == message
    moved = re.compile(rb"^(\d+ -?\d+|-frozen \d+|-received_time_complete [\d.]+)$")
    for header in bundled.glob("input/*/*-H"):
        old = header.read_bytes().split(b"\n")
        new = (tmp_path / header.relative_to(bundled)).read_bytes().split(b"\n")
        assert len(old) == len(new)
        assert all(a == b or (moved.match(a) and moved.match(b)) for a, b in zip(old, new, strict=True))
    others = [p for p in bundled.rglob("*") if p.is_file() and not p.name.endswith("-H")]
    assert len(others) == 28  # 14 -D files and 14 message logs, copied as they are
    assert all(p.read_bytes() == (tmp_path / p.relative_to(bundled)).read_bytes() for p in others)


def test_demo_serves_the_bundled_exim_spool_as_exim_lists_it(demo: Demo) -> None:
    """Totals, frozen messages and waiting recipients as ``exim -bp`` of the bundled spool lists
    them; the newest message arrived a minute before the demo started."""
    scraped = samples(demo)
    frozen = sum(1 for m in EXIM_LISTED.values() if m["frozen"])
    assert frozen == 2
    assert series(scraped, "mtaq_queue_messages", "queue", mta="exim") == {
        "queued": len(EXIM_LISTED) - frozen, "frozen": frozen}
    assert sum(series(scraped, "mtaq_queue_recipients", "mta_instance", mta="exim").values()) == sum(
        len(m["recipients"]) for m in EXIM_LISTED.values())
    assert series(scraped, "mtaq_up", "mta_instance", mta="exim") == {"exim-lab": 1}
    oldest = [v for labels, v in scraped["mtaq_queue_oldest_message_timestamp_seconds"] if labels["mta"] == "exim"]
    # The bundled arrivals span a few seconds (their ids' seconds); shifted, all lie in that span
    # before a minute before the start.
    span = max(map(id_time, EXIM_LISTED)) - min(map(id_time, EXIM_LISTED))  # type: ignore[type-var]
    assert oldest and all(demo.started - 60 - span - 2 <= v <= time.time() - 59 for v in oldest), oldest


def exim_counts(scraped: dict) -> dict[str, Counter]:
    """The demo's Exim delivery counters, keyed as ``tests.exim_reference.reference`` keys them."""
    return {
        "sent": series(scraped, "mtaq_delivery_attempts_total", "provider", status="sent", mta="exim"),
        "deferrals": series(scraped, "mtaq_deferrals_total", "provider", "reason", mta="exim"),
        "bounces": series(scraped, "mtaq_bounces_total", "provider", "type", "reason", mta="exim"),
        "dead_letters": series(scraped, "mtaq_dead_letters_total", "provider", "reason", mta="exim"),
        "self": series(scraped, "mtaq_self_deferrals_total", "mta", mta="exim"),
    }


def expected_after(lines_read: int) -> dict[str, Counter]:
    """What the raw main log says after ``lines_read`` lines of replays: every full replay counts as
    the bundled log (its ids are new), then the part of the current one read so far."""
    full, part = divmod(lines_read, len(EXIM_LINES))
    whole, partial = reference(EXIM_LINES), reference(EXIM_LINES[:part])
    out = {}
    for key in ("sent", "deferrals", "bounces", "dead_letters", "self"):
        counts = Counter({k: v * full for k, v in whole[key].items()}) + partial[key]
        out[key] = Counter({("exim" if k == () else k): v for k, v in counts.items()})
    return out


def test_demo_exim_counters_follow_the_replayed_main_log(demo: Demo) -> None:
    """After one full replay and after two, the Exim counters equal counts of the raw main log's
    ``=>``, ``==`` and ``**`` lines (the scrape is retried: the line count and the counters are
    read a moment apart while lines arrive)."""
    whole = reference(EXIM_LINES)
    assert whole["sent"] and whole["deferrals"] and whole["bounces"] and whole["dead_letters"]

    def agrees(at_least: int) -> dict[str, Counter] | None:
        scraped = samples(demo)
        read = int(sum(series(scraped, "mtaq_log_lines_total", "mta", mta="exim").values()))
        counts = exim_counts(scraped)
        return counts if read >= at_least and counts == expected_after(read) else None

    once = wait_until(lambda: agrees(len(EXIM_LINES)), 30, "one replay of the Exim main log", interval=0.05)
    twice = wait_until(lambda: agrees(2 * len(EXIM_LINES)), 30, "two replays of the Exim main log", interval=0.05)
    assert sum(twice["sent"].values()) > sum(once["sent"].values())
    assert series(samples(demo), "mtaq_log_lines_total", "result", mta="exim")["unparsed"] == 0


def test_exim_replays_stamp_lines_now_and_give_messages_new_ids_the_parser_reads() -> None:
    now = calendar.timegm((2026, 12, 4, 9, 25, 7, 0, 0, 0)) + 0.125
    lines = [line + "\n" for line in EXIM_LINES]
    first = [replayed(line, 0, now, EXIM_REPLAY) for line in lines]
    second = [replayed(line, 1, now, EXIM_REPLAY) for line in lines]
    third = [replayed(line, 2, now, EXIM_REPLAY) for line in lines]
    # The lab logged with +millisec and log_timezone +0000: now in that zone, to the millisecond.
    assert all(line.startswith("2026-12-04 09:25:07.125 +0000 [") for line in first + third)
    assert [line[23:] for line in first] == [line[23:] for line in lines]  # the first replay keeps its ids
    token = re.compile(r"\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}\b")
    # An id moves by whole steps of its arrival second and keeps the rest: the replays' ids are
    # new, apart from each other, and the same id throughout a replay (bounces' R= included).
    ids = set(token.findall("".join(lines)))
    assert max(map(id_time, ids)) - min(map(id_time, ids)) < EXIM_ID_STEP  # type: ignore[type-var]
    renamed: dict[str, str] = {}
    for old, new in zip(lines, third, strict=True):
        pairs = list(zip(token.findall(old), token.findall(new), strict=True))
        for a, b in pairs:
            assert renamed.setdefault(a, b) == b
            assert is_message_id(b) and b[6:] == a[6:] and id_time(b) == id_time(a) + 2 * EXIM_ID_STEP
    assert set(renamed) == ids and len(set(renamed.values())) == len(ids)
    assert not ids & set(renamed.values())
    assert not set(token.findall("".join(second))) & (ids | set(renamed.values()))
    # The parser reads every replayed line as it reads the bundled one, but for the ids and the time.
    back = {b: a for a, b in renamed.items()}
    parser = EximLineParser(instance="exim-lab")
    for old, new in zip(lines, third, strict=True):
        before, after = parser.parse(old.rstrip("\n")), parser.parse(new.rstrip("\n"))
        if isinstance(before, Unparsed) or not dataclasses.is_dataclass(before):
            assert after == before
            continue
        fields = dataclasses.asdict(after)
        for key in ("qid", "reference"):
            if fields.get(key) in back:
                fields[key] = back[fields[key]]
        if fields.get("timestamp") is not None:
            assert fields["timestamp"] == pytest.approx(now)
            fields["timestamp"] = dataclasses.asdict(before)["timestamp"]
        assert type(after) is type(before) and fields == dataclasses.asdict(before), new


def test_replays_stamp_lines_now_and_give_messages_ids_of_their_own() -> None:
    lines = demo_file("demo_maillog.log").splitlines(keepends=True)
    now = time.mktime((2026, 12, 1, 9, 5, 7, 0, 0, -1))
    first = [replayed(line, 0, now, POSTFIX_REPLAY) for line in lines]
    third = [replayed(line, 2, now, POSTFIX_REPLAY) for line in lines]
    assert all(line.startswith("Dec  1 09:05:07 mta postfix-lab/") for line in first + third)
    assert [line[16:] for line in first] == [line[16:] for line in lines]  # the first replay keeps its ids
    ids = set(re.findall(r"\]: ([0-9A-F]{6,}): ", "".join(lines)))
    ids_again = set(re.findall(r"\]: ([0-9A-Z]{6,}): ", "".join(third)))
    assert ids_again == {f"{qid}Z2" for qid in ids}
    notice = next(line for line in third if "non-delivery notification:" in line)
    assert re.search(r": [0-9A-F]+Z2: sender non-delivery notification: [0-9A-F]+Z2$", notice)


def test_replayed_expiries_are_new_dead_letters_with_ids_of_their_own() -> None:
    """Issue 12: the replay loop made the same queue ids recur as new dead letters. Both logs: the
    Postfix log's expiries and the Exim main log's retry timeouts."""
    expiries = {"postfix-lab": demo_file("demo_maillog.log").count("status=expired"),
                "exim-lab": sum(reference(EXIM_LINES)["dead_letters"].values())}
    assert all(expiries.values())
    with AgentProcess("demo", "--lines-per-second", "2000", "--log.level", "debug",
                      "--web.telemetry-path", "/prom") as agent:
        agent.wait_ready()

        def letters() -> list[dict] | None:
            with urllib.request.urlopen(agent.url("/api/v1/dead-letters"), timeout=10) as response:
                found = json.loads(response.read())["dead_letters"]
            by_instance = Counter(d["instance"] for d in found)
            return found if all(by_instance[i] >= 3 * n for i, n in expiries.items()) else None

        found = wait_until(letters, what="three replays of each demo log")
        with urllib.request.urlopen(agent.url("/prom"), timeout=10) as response:
            assert b"mtaq_dead_letters_total" in response.read()
    qids = [d["qid"] for d in found]
    assert len(set(qids)) == len(qids)

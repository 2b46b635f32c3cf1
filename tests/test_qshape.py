"""qshape command on the captured real queue listing, and on the demo's queues."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from collectors.classify import Classifier
from collectors.postfix.showq import decode_postqueue_json
from exporter.commands.demo import DEMO_CLASSIFICATION
from exporter.commands.qshape import BUCKETS, _bucket, render, shape
from exporter.config import load_config
from tests.helpers import AgentProcess, scrape

LISTING = Path(__file__).parent / "fixtures" / "postfix_queue" / "postqueue.jsonl"
MESSAGES = list(decode_postqueue_json(LISTING.read_text().splitlines()))
NEWEST = max(m.arrival for m in MESSAGES)


def test_buckets_by_age() -> None:
    rows = shape(MESSAGES, Classifier(), "provider", NEWEST + 7 * 60, {"deferred", "hold"})
    # every message arrived within a second: all recipients sit in the 5-10 minute bucket
    assert {k: v[BUCKETS.index("10m")] for k, v in rows.items()} == {
        "google": 4, "yahoo": 3, "microsoft": 3, "apple": 2}
    assert sum(map(sum, rows.values())) == sum(len(m.recipients) for m in MESSAGES)


def test_hold_excluded_by_default_queue_set() -> None:
    rows = shape(MESSAGES, Classifier(), "domain", NEWEST, {"deferred"})
    assert sum(map(sum, rows.values())) == len(MESSAGES) - 1
    assert set(rows) == {"gmail.com", "yahoo.com", "outlook.com", "icloud.com"}


def test_by_reason_and_old_bucket() -> None:
    rows = shape(MESSAGES, Classifier(), "reason", NEWEST + 2 * 86400, {"deferred", "hold"})
    assert {k: v[-1] for k, v in rows.items()} == {"rate_limited": 10, "mailbox_full": 2}


def test_render_table() -> None:
    rows = shape(MESSAGES, Classifier(), "provider", NEWEST, {"deferred", "hold"})
    lines = render(rows, "provider", 2).splitlines()
    assert lines[0].split()[:3] == ["provider", "total", "5m"]
    assert lines[1].split()[:3] == ["TOTAL", "12", "12"]
    assert [line.split()[0] for line in lines[2:4]] == ["google", "microsoft"]  # largest first, ties by name
    # google 4 + microsoft 3 shown; yahoo 3 and apple 2 left out, and the table says so.
    assert lines[4:] == ["... 2 more rows with 5 recipients (--limit 2)"]
    assert "more rows" not in render(rows, "provider", 4)


LISTING_RECORDS = [json.loads(line) for line in LISTING.read_text().splitlines()]


def test_by_lane_applies_the_lane_rules() -> None:
    lanes = {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}},
                       {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]}
    rows = shape(MESSAGES, Classifier(load_config(None, environ={}, overrides={"lanes": lanes})), "lane", NEWEST,
                 {"deferred", "hold"})
    by_sender = Counter(r["sender"].split("@")[1] for r in LISTING_RECORDS for _ in r["recipients"])
    assert {k: sum(v) for k, v in rows.items()} == {
        "high": by_sender["alerts.example.com"], "low": by_sender["bulk.example.com"],
        "normal": by_sender["shop.example.com"]}


def test_by_sender_is_qshape_s() -> None:
    rows = shape(MESSAGES, Classifier(), "sender", NEWEST, {"deferred"})
    expected = Counter(r["sender"].split("@")[1] for r in LISTING_RECORDS if r["queue_name"] == "deferred"
                       for _ in r["recipients"])
    assert {k: sum(v) for k, v in rows.items()} == dict(expected)
    bounce = decode_postqueue_json([json.dumps({**LISTING_RECORDS[0], "sender": ""})])
    assert set(shape(bounce, Classifier(), "sender", NEWEST, {"deferred"})) == {"MAILER-DAEMON"}


def qshape(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter.cli", "qshape", *args], capture_output=True, text=True,
                          timeout=60, input=stdin)


def test_cli_json_from_saved_listing() -> None:
    done = qshape("--json", "--by", "provider", "--queue", "deferred", "--queue", "hold", "--from-json", str(LISTING),
                  "--limit", "3")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total"]["total"] == 12 and report["buckets"] == list(BUCKETS)
    assert [row["key"] for row in report["rows"]] == ["google", "microsoft", "yahoo"]
    assert report["rows_omitted"] == 1 and report["source"] == [f"listing {LISTING}"]


def test_cli_reads_the_listing_from_standard_input_and_names_its_source() -> None:
    done = qshape("--from-json", "-", "--by", "domain", stdin=LISTING.read_text())
    assert done.returncode == 0, done.stderr
    first, header, total, *_ = done.stdout.splitlines()
    assert first.startswith("queue: listing standard input; queues maildrop, incoming, active, deferred; ages as of ")
    assert header.split()[:2] == ["domain", "total"] and total.split()[:2] == ["TOTAL", "11"]


def test_cli_a_file_that_is_not_a_listing_is_named_and_exits_2(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    done = qshape("--from-json", str(notes))
    assert done.returncode == 2
    assert done.stderr == (f"mtaq-exporter qshape: cannot read the queue: {notes} is not a postqueue -j listing "
                           "(one JSON object per message): line 1: 'hello'\n")
    bad_record = tmp_path / "array.jsonl"
    bad_record.write_text(LISTING.read_text().splitlines()[0] + "\n[1, 2]\n")
    assert "line 2: '[1, 2]'" in qshape("--from-json", str(bad_record)).stderr


@pytest.mark.parametrize(("mta", "logged", "option", "parked"), [
    ("postfix", r"demo Postfix queue listing: (\S+) ", "--from-json", "hold"),
    ("exim", r"demo Exim spool: (\S+) ", "--exim.spool-dir", "frozen"),
])
def test_the_demo_queue_and_qshape_on_its_listing_agree(tmp_path: Path, mta: str, logged: str, option: str,
                                                         parked: str) -> None:
    """Issue 12: the demo exported ages of its shifted queue while qshape --from-json on the bundled
    listing saw its capture time. The demo writes the listing (and the Exim spool) it serves; qshape
    on it agrees with /metrics: recipients per lane, and the bucket of each lane's oldest message
    (qshape leaves out hold and frozen by default, so they are left out here too)."""
    with AgentProcess("demo") as demo:
        listing = demo.wait_for_line(logged).group(1)
        demo.wait_ready()
        metrics = scrape(demo.port)
        lanes = tmp_path / "demo-lanes.yml"  # the demo's lane rules, for qshape to classify as the demo does
        lanes.write_text(json.dumps(DEMO_CLASSIFICATION))
        done = qshape("--json", "--by", "lane", option, listing, "--config.file", str(lanes))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    recipients: Counter[str] = Counter()
    oldest: dict[str, float] = {}
    for (name, labels), value in metrics.items():
        labels_map = dict(labels)
        if labels_map.get("queue") in (None, parked) or labels_map["mta"] != mta:
            continue
        if name == "mtaq_queue_recipients":
            recipients[labels_map["lane"]] += int(value)
        if name == "mtaq_queue_oldest_message_timestamp_seconds" and value:
            oldest[labels_map["lane"]] = min(value, oldest.get(labels_map["lane"], value))
    assert recipients
    assert {row["key"]: row["total"] for row in report["rows"]} == {k: v for k, v in recipients.items() if v}
    for row in report["rows"]:
        first_bucket = max(i for i, n in enumerate(row["counts"]) if n)
        assert first_bucket == _bucket(report["read_at"] - oldest[row["key"]]) == 0  # a minute old, not days


def test_cli_unreadable_queue_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "exporter.cli", "qshape", "--postfix.showq-path",
                           str(tmp_path / "none"), "--postfix.config-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot read the queue" in done.stderr

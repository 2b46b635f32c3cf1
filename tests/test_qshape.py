"""qshape command on the captured real queue listing."""

import json
import subprocess
import sys
from pathlib import Path

from collectors.classify import Classifier
from collectors.postfix.showq import decode_postqueue_json
from exporter.commands.qshape import BUCKETS, render, shape

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
    assert [line.split()[0] for line in lines[2:]] == ["google", "microsoft"]  # largest first, ties by name


def test_cli_json_from_saved_listing() -> None:
    done = subprocess.run([sys.executable, "-m", "exporter.cli", "qshape", "--json", "--by", "provider",
                           "--queue", "deferred", "--queue", "hold", "--from-json", str(LISTING)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["total"]["total"] == 12 and report["buckets"] == list(BUCKETS)
    assert [row["key"] for row in report["rows"]] == ["google", "microsoft", "yahoo", "apple"]


def test_cli_unreadable_queue_exits_2(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "exporter.cli", "qshape", "--postfix.showq-path",
                           str(tmp_path / "none"), "--postfix.config-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot read the queue" in done.stderr

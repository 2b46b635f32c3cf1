"""``mtaq-exporter analyze``: the human report and ``--json`` on the sample log, gzip input, errors."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from collectors.classify import Classifier
from exporter.commands import analyze

SAMPLES = Path(__file__).parent / "fixtures" / "postfix_log" / "samples.log"
DEMO_LOG = Path(__file__).parent.parent / "collectors" / "data" / "demo_maillog.log"
NOW = time.mktime((2026, 11, 27, 12, 0, 0, 0, 0, -1))


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "mail.log"
    shutil.copy(SAMPLES, path)
    os.utime(path, (NOW, NOW))  # the reference that gives BSD timestamps their year
    return path


def run_json(capsys: pytest.CaptureFixture[str], *paths: Path) -> dict:
    assert analyze.main(["--json", *map(str, paths)]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no progress output when stderr is not a terminal
    return json.loads(out)


def test_json_report_on_the_samples(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = run_json(capsys, log)
    comments = sum(1 for line in SAMPLES.read_text().splitlines() if not line or line.startswith("#"))
    assert doc["lines"] == {"total": 60 + comments, "parsed": 34, "ignored": 26, "unparsed": comments}
    assert doc["files"] == [{"path": str(log), "lines": 60 + comments,
                             "first_timestamp": time.mktime((2026, 2, 24, 16, 18, 40, 0, 0, -1)),
                             "last_timestamp": 1756215033.208404}]
    assert doc["received"] == {"normal": 2}
    assert doc["notifications"] == {"non_delivery": 2, "delay": 1}
    assert doc["soft_bounce_deferrals"] == {}
    assert doc["by_lane"] == {"normal": {"sent": 11, "deferred": 3, "bounced": 4, "deferred_messages": 3}}
    assert doc["by_provider"] == {  # hops on the host (virtual, dovecot, local, loopback filters) are "local"
        "other": {"sent": 5, "deferred": 3, "bounced": 1, "deferred_messages": 3, "retry_rate": 0.3333},
        "local": {"sent": 5, "deferred": 0, "bounced": 1, "deferred_messages": 0, "retry_rate": 0.0},
        "google": {"sent": 1, "deferred": 0, "bounced": 2, "deferred_messages": 0, "retry_rate": 0.0},
    }
    assert doc["deferral_reasons"] == [
        {"provider": "other", "reason": "connection", "count": 2,
         "sample": "connect to mx.somedomain.tld[XX.XX.XX.XX]:25: Connection timed out"},
        {"provider": "other", "reason": "content", "count": 1,
         "sample": "host mail.domain.com[1.1.1.1] said: 451 DT:SPM 163 mx40,WsCowAAnEhlCoEVa5GjcAA--.20089S3 "
                   "1514512452, please try again 15min later (in reply to end of DATA command)"},
    ]
    bounces = doc["bounces"]
    assert (bounces["hard"], bounces["soft"], bounces["hard_ratio"]) == (4, 1, 0.8)
    assert [(b["type"], b["provider"], b["reason"], b["count"]) for b in bounces["by_reason"]] == [
        ("hard", "google", "reputation", 2), ("hard", "local", "user_unknown", 1), ("hard", "other", "content", 1),
        ("soft", "other", "connection", 1)]
    dead = doc["dead_letters"]
    assert dead["total"] == 4
    assert dead["by_reason"] == [{"lane": "normal", "provider": "other", "reason": "other", "count": 3},
                                 {"lane": "normal", "provider": "other", "reason": "connection", "count": 1}]
    # newest expiry first (the bare line has no timestamp: it is dated by the file, the latest)
    assert [d["qid"] for d in dead["recent"]] == ["585BC3F", "BACE842E73", "BACE842E72", "C93CEB08A046"]
    c93 = dead["recent"][3]
    assert (c93["sender"], c93["reason"], c93["attempts"], c93["pending_recipients"], c93["forced"]) == (
        "ina@somedomain.com", "connection", 1, 1, False)
    assert doc["self_deferrals"] == {"connection": 1}
    assert doc["verify_probes"] == {"undeliverable-but-not-cached": 1}
    assert {(d["lane"], d["status"]): d["count"] for d in doc["delivery_delay"]} == {
        ("normal", "sent"): 6, ("normal", "bounced"): 4, ("normal", "expired"): 1}


def test_gzip_input_gives_the_same_report(log: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    packed = tmp_path / "mail.log.1.gz"  # recognised by content, not by name
    packed.write_bytes(gzip.compress(log.read_bytes()))
    os.utime(packed, (NOW, NOW))
    plain, compressed = run_json(capsys, log), run_json(capsys, packed)
    for doc in (plain, compressed):
        for entry in doc["files"]:
            entry.pop("path")
    assert compressed == plain


def test_state_carries_across_rotated_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    older, newer = tmp_path / "mail.log.1", tmp_path / "mail.log"
    older.write_text(
        "Nov 20 10:00:00 mx postfix/qmgr[1]: AB12CD34EF: from=<news@app.example>, size=10, nrcpt=1 (queue active)\n"
        "Nov 20 10:00:01 mx postfix/smtp[2]: AB12CD34EF: to=<a@gmail.com>, relay=gmail-smtp-in.l.google.com"
        "[1.2.3.4]:25, delay=1, delays=0/0/0/1, dsn=4.7.28, status=deferred (host gmail-smtp-in.l.google.com"
        "[1.2.3.4] said: 421-4.7.28 unusual rate of unsolicited mail (in reply to RCPT TO command))\n")
    newer.write_text(
        "Nov 25 10:00:00 mx postfix/qmgr[1]: AB12CD34EF: from=<news@app.example>, status=expired, returned to sender\n"
        "Nov 25 10:00:00 mx postfix/qmgr[1]: AB12CD34EF: removed\n")
    for path in (older, newer):
        os.utime(path, (NOW, NOW))
    doc = run_json(capsys, older, newer)
    assert doc["dead_letters"]["by_reason"] == [
        {"lane": "normal", "provider": "google", "reason": "rate_limited", "count": 1}]
    assert doc["bounces"]["soft"] == 1
    assert doc["delivery_delay"] == [{"lane": "normal", "status": "expired", "count": 1, "mean_seconds": 432000.0}]
    assert doc["tracked_at_end"] == 0


def test_human_report(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze.main([str(log)]) == 0
    out = capsys.readouterr().out
    assert "Lines: 99 (34 parsed, 26 ignored, 39 unparsed)" in out
    assert "Messages received by lane: normal 2" in out
    assert "  normal    11         3        4              3" in out
    assert "  other        5         3        1              3       33.3%" in out
    assert "  local        5         0        1              0        0.0%" in out
    assert "Notifications the MTA made itself (not received mail): non_delivery 2, delay 1" in out
    assert "         2  other/connection: connect to mx.somedomain.tld[XX.XX.XX.XX]:25: Connection timed out" in out
    assert "Bounces: 4 hard, 1 soft (80.0% hard)" in out
    assert "Dead letters (expired, returned to sender): 4" in out
    assert "C93CEB08A046 from <ina@somedomain.com> expired 2025-12-28 13:39:28 after 1 attempts" in out
    assert "BACE842E73 (forced)" in out
    assert "Self-inflicted deferrals (not counted as provider retries): connection 1" in out
    assert "Address-verification probes (not deliveries): undeliverable-but-not-cached 1" in out


def test_unreadable_file_is_reported_and_the_rest_analyzed(log: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze.main(["--json", str(tmp_path / "missing.log"), str(log)]) == 1
    out, err = capsys.readouterr()
    assert "cannot read" in err and "missing.log" in err
    assert json.loads(out)["lines"]["parsed"] == 34


def test_corrupt_gzip_keeps_what_was_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    packed = tmp_path / "cut.gz"
    packed.write_bytes(gzip.compress(SAMPLES.read_bytes())[:-30])
    assert analyze.main(["--json", str(packed)]) == 1
    out, err = capsys.readouterr()
    assert "cut.gz" in err
    assert json.loads(out)["files"][0]["path"] == str(packed)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(analyze, "_PROGRESS_EVERY", 0.0)
    terminal = _Terminal()
    _, files, errors = analyze.read_logs([str(log)], Classifier(), progress_to=terminal)
    assert errors == [] and files[0]["lines"] == 99
    assert "\ranalyze: mail.log 100.0% of 0.0 MB" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\033[K")


def test_received_equals_pflogsumm_on_the_demo_log(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 10: pflogsumm (an independent reference) counts mail received through smtpd and pickup;
    Postfix's own non-delivery notifications are not received mail."""
    pflogsumm = shutil.which("pflogsumm")
    if pflogsumm is None:
        pytest.skip("pflogsumm is not installed (Debian package pflogsumm)")
    done = subprocess.run([pflogsumm, "--syslog-name=postfix-lab", str(DEMO_LOG)], capture_output=True, text=True,
                          timeout=60, check=True)
    found = re.search(r"^\s*(\d+)\s+received$", done.stdout, re.MULTILINE)
    assert found, done.stdout[:500]
    doc = run_json(capsys, DEMO_LOG)
    assert sum(doc["received"].values()) == int(found.group(1)) == 36
    notices = DEMO_LOG.read_text().count(" sender non-delivery notification: ")
    assert doc["notifications"] == {"non_delivery": notices} and notices == 16

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
    assert doc["files"] == [{"path": str(log), "lines": 60 + comments, "parsed": 34,
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
    # Final outcomes to providers (local hops left out, as in the rules): sent other 5 + google 1, hard
    # bounces google 2 + other 1, soft other 1. The hard share is of all bounces, local ones too.
    assert (bounces["hard"], bounces["soft"], bounces["final_outcomes"]) == (4, 1, 10)
    assert (bounces["hard_ratio"], bounces["soft_ratio"], bounces["hard_share"]) == (0.3, 0.1, 0.8)
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
    assert ("Bounces: 4 hard, 1 soft (80.0% of bounces are hard); bounce ratio 30.0% hard, 10.0% soft of 10 final "
            "outcomes to providers") in out
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


def test_standard_input_gives_the_same_counts(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """``analyze -`` reads standard input, plain or gzip (BSD timestamps placed by now, not a file's mtime)."""
    from_file = run_json(capsys, DEMO_LOG)
    for data in (DEMO_LOG.read_bytes(), gzip.compress(DEMO_LOG.read_bytes())):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BufferedReader(io.BytesIO(data))))
        assert analyze.main(["--json", "-"]) == 0
        from_stdin = json.loads(capsys.readouterr().out)
        assert from_stdin["files"][0]["path"] == "-"
        assert from_stdin["files"][0]["lines"] == from_file["files"][0]["lines"]
        for key in ("lines", "received", "by_lane", "by_provider", "deferral_reasons", "recipient_domains", "senders"):
            assert from_stdin[key] == from_file[key], key


def test_a_file_that_is_no_mail_log_gets_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "access.log"
    notes.write_text("".join(f'192.0.2.{i} - - [01/Dec/2026:10:00:00 +0000] "GET / HTTP/1.1" 200 512\n'
                             for i in range(273)))
    assert analyze.main([str(notes), str(SAMPLES)]) == 0
    err = capsys.readouterr().err
    assert err == (f"mtaq-exporter analyze: warning: {notes}: this does not look like a Postfix mail log: none of "
                   "its 273 lines is a Postfix log line (expected syslog or journal lines of postfix/smtp, "
                   "postfix/qmgr, ...)\n")  # the real log next to it gets none


def _pflogsumm_section(text: str, title: str) -> list[list[str]]:
    """The data rows of a pflogsumm section (after its dashed underline and column rule)."""
    body = text.split(title, 1)[1].split("\n\n", 1)[0].splitlines()
    return [line.split() for line in body if line.strip() and not set(line.strip()) <= {"-", " "}
            and not line.lstrip().startswith(("time", "sent cnt", "msg cnt"))]


def test_traffic_tables_equal_pflogsumm_on_the_demo_log(capsys: pytest.CaptureFixture[str]) -> None:
    """Per hour, per recipient domain and per sender, as pflogsumm (an independent reference) counts."""
    pflogsumm = shutil.which("pflogsumm")
    if pflogsumm is None:
        pytest.skip("pflogsumm is not installed (Debian package pflogsumm)")
    text = subprocess.run([pflogsumm, "--syslog-name=postfix-lab", str(DEMO_LOG)], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    doc = run_json(capsys, DEMO_LOG)
    hours = {row[0][:2]: [int(n) for n in row[1:5]] for row in _pflogsumm_section(text, "Per-Hour Traffic Summary")
             if any(n != "0" for n in row[1:])}
    assert {h["hour"][11:13]: [h["received"], h["sent"], h["deferred"], h["bounced"]] for h in doc["per_hour"]} == hours
    domains = {row[-1]: (int(row[0]), int(row[2]), float(row[5])) for row in
               _pflogsumm_section(text, "Host/Domain Summary: Message Delivery")}
    ours = {d["domain"]: (d["sent"], d["deferred"], round(d["max_delay_seconds"], 1)) for d in doc["recipient_domains"]
            if d["sent"] or d["deferred"]}  # pflogsumm's table lists domains with deliveries or deferrals
    assert ours == domains
    senders = {row[1]: int(row[0]) for row in _pflogsumm_section(text, "Senders by message count")}
    assert {s["sender"]: s["messages"] for s in doc["senders"]} == senders
    sizes = {row[1]: int(row[0]) for row in _pflogsumm_section(text, "Senders by message size")}
    assert {s["sender"]: s["bytes"] for s in doc["senders"]} == sizes


def test_human_report_has_the_traffic_tables(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert analyze.main(["--top", "2", str(DEMO_LOG)]) == 0
    out = capsys.readouterr().out
    per_hour = out.split("Per-hour traffic")[1].split("\n\n")[0].splitlines()
    assert per_hour[1].split() == ["hour", "received", "delivered", "deferred", "bounced", "expired"]
    assert per_hour[-1].split() == ["TOTAL", "36", "24", "132", "4", "12"]
    domains = out.split("Recipient domains (top 2")[1].split("\n\n")[0].splitlines()[2:]
    assert [line.split()[0] for line in domains] == ["gmail.com", "outlook.com"]
    senders = out.split("Senders by message count (top 2)")[1].splitlines()[2:]
    assert [line.split() for line in senders] == [["news@bulk.example.com", "20", "9564"],
                                                   ["billing@shop.example.com", "10", "4820"]]

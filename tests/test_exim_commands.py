"""The operator commands on Exim data: ``analyze`` on a real Exim main log (told, or detecting it),
``qshape`` on a real Exim spool, and ``actions setup-exim``."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

from collectors.classify import Classifier
from exporter.commands import analyze
from tests.exim_reference import PROVIDERS, listing, reference

FIXTURES = Path(__file__).parent / "fixtures"
LAB_LOG = Path(__file__).parent.parent / "collectors" / "data" / "demo_exim_mainlog.log"
SPOOL = Path(__file__).parent.parent / "collectors" / "data" / "demo_exim_spool"
POSTFIX_LOG = FIXTURES / "postfix_log" / "samples.log"


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True, timeout=120,
                          input=stdin)
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(), done.stderr.decode())


def test_analyze_detects_an_exim_log_and_counts_it_as_the_reference_does(tmp_path: Path) -> None:
    config = tmp_path / "lab.yml"
    config.write_text("local_delivery: {loopback: false}\n")
    done = cli("analyze", "--json", "--config.file", str(config), str(LAB_LOG))
    assert done.returncode == 0 and done.stderr == ""
    doc = json.loads(done.stdout)
    expected = reference(LAB_LOG.read_text().splitlines())
    assert doc["format"] == "exim"
    assert sum(doc["received"].values()) == expected["received"][()]
    assert {(r["provider"], r["reason"]): r["count"] for r in doc["deferral_reasons"]} == expected["deferrals"]
    assert doc["dead_letters"]["total"] == sum(expected["dead_letters"].values())
    assert doc["bounces"]["hard"] + doc["bounces"]["soft"] == sum(expected["bounces"].values())
    assert doc["self_deferrals"] == {"self": expected["self"][()]}
    assert sum(h["expired"] for h in doc["per_hour"]) == doc["dead_letters"]["total"]
    assert doc["senders"][0]["sender"] == "news@bulk.example.com"


def test_analyze_reads_a_compressed_exim_log_from_standard_input_when_told(tmp_path: Path) -> None:
    done = cli("analyze", "--json", "--format", "exim", "-", stdin=gzip.compress(LAB_LOG.read_bytes()))
    from_file = json.loads(cli("analyze", "--json", str(LAB_LOG)).stdout)
    assert done.returncode == 0
    assert json.loads(done.stdout)["lines"] == from_file["lines"]
    detected = cli("analyze", "--json", "-", stdin=gzip.compress(LAB_LOG.read_bytes()))
    assert json.loads(detected.stdout)["format"] == "exim"


def test_a_postfix_log_told_to_be_exim_gets_the_exim_warning() -> None:
    done = cli("analyze", "--format", "exim", str(POSTFIX_LOG))
    lines = len(POSTFIX_LOG.read_text().splitlines())
    assert done.returncode == 0
    assert done.stderr.startswith(f"mtaq-exporter analyze: warning: {POSTFIX_LOG}: this does not look like an "
                                  f"Exim main log: none of its {lines} lines is an Exim log line")


def test_detection_keeps_postfix_for_postfix_logs() -> None:
    assert analyze.detect_format([str(POSTFIX_LOG)]) == "postfix"
    assert analyze.detect_format([str(LAB_LOG)]) == "exim"
    _, files, errors = analyze.read_logs([str(LAB_LOG)], Classifier(), log_format=analyze.FORMATS["exim"])
    assert not errors and files[0]["parsed"] > 0


def test_qshape_on_an_exim_spool() -> None:
    done = cli("qshape", "--json", "--exim.spool-dir", str(SPOOL))
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    listed = listing((FIXTURES / "exim_queue" / "bp.txt").read_text())
    waiting = [a for b in listed.values() if not b["frozen"] for a in b["recipients"]]
    assert doc["total"]["total"] == len(waiting)  # frozen left out by default, as Postfix's hold
    assert {r["key"]: r["total"] for r in doc["rows"]} == {
        p: sum(1 for a in waiting if PROVIDERS[a.rpartition("@")[2]] == p) for p in {PROVIDERS[a.rpartition("@")[2]]
                                                                                   for a in waiting}}
    assert doc["source"] == [f"instance exim: spool {SPOOL}"]
    frozen = json.loads(cli("qshape", "--json", "--exim.spool-dir", str(SPOOL),
                            "--queue", "frozen", "--by", "sender").stdout)
    assert frozen["total"]["total"] == sum(len(b["recipients"]) for b in listed.values() if b["frozen"])


def test_setup_exim_prints_a_transport_per_provider(tmp_path: Path) -> None:
    config = tmp_path / "c.yml"
    config.write_text("providers:\n  acme: {domains: [acme.example]}\n")
    done = cli("actions", "setup-exim", "--config.file", str(config), "--throttle-dir", "/srv/mtaq")
    assert done.returncode == 0
    assert "MTAQ_DIR = /srv/mtaq" in done.stdout
    for provider in ("google", "microsoft", "yahoo", "acme"):
        assert f"mtaq_{provider}:\n  driver = smtp\n  max_parallel = ${{extract{{max_parallel}}" in done.stdout
        assert f"${{lookup{{{provider}}}lsearch{{MTAQ_DIR/throttle}}}}" in done.stdout
    assert "mtaq_other:" not in done.stdout and "mtaq_local:" not in done.stdout

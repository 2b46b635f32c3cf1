"""A log split by queue id between several processes gives exactly the report of one (``analyze --jobs``).

``PostfixLineParser.route`` must send every line that changes a message's accounting to the part
that owns that message, ``LogSplit`` must hand each part its lines and their places in the log, and
``merge_parts`` must put the parts' snapshots back together, order-dependent fields included (the
latest reply per reason, the dead-letter log).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from collectors.classify import ClassificationConfig, Classifier
from collectors.delivery_accounting import merge_parts
from collectors.log_pipeline import LogPart, LogProcessor, LogSplit
from collectors.postfix.log_events import POSTFIX_LOG
from collectors.postfix.log_parse import BounceNotice, PostfixLineParser
from exporter.commands import analyze
from exporter.traffic import Traffic

FIXTURES = Path(__file__).parent / "fixtures" / "postfix_log"
DEMO_LOG = Path(__file__).parent.parent / "collectors" / "data" / "demo_maillog.log"
NOW = time.mktime((2026, 11, 27, 12, 0, 0, 0, 0, -1))


def fixture_lines() -> list[str]:
    """Every real line the fixtures hold: sample logs, the lab's logs and the real-world corpus."""
    lines = [line for path in (*sorted(FIXTURES.glob("*.log")), DEMO_LOG)
             for line in path.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")]
    corpus = yaml.safe_load((FIXTURES / "real_world.yaml").read_text(encoding="utf-8"))
    return lines + [entry["line"] for entry in corpus]


def big_log(tmp_path: Path, copies: int = 12) -> Path:
    """The lab's log (expiries, bounces, notifications, deferrals), each copy with its own queue ids
    and a few unparsable and foreign lines between, so that every part gets some of everything."""
    text = DEMO_LOG.read_text(encoding="utf-8")
    qids = sorted({line.split(": ")[1] for line in text.splitlines() if line.count(": ") >= 2
                   and PostfixLineParser().route(line) == line.split(": ")[1]}, key=len, reverse=True)
    out = []
    for copy in range(copies):
        chunk = text
        for n, qid in enumerate(qids):
            chunk = chunk.replace(qid, f"Q{copy:03d}X{n:05d}")
        out.append(chunk)
        out.append("garbage without envelope\nNov 27 18:00:00 mta kernel: [1.0] eth0 up\n")
    path = tmp_path / "mail.log"
    path.write_text("".join(out), encoding="utf-8")
    os.utime(path, (NOW, NOW))
    return path


@pytest.mark.parametrize("line", fixture_lines())
def test_route_names_the_queue_id_the_accounting_uses(line: str) -> None:
    parser = PostfixLineParser(clock=lambda: NOW)
    record = parser.parse(line)
    key = record.new_qid if type(record) is BounceNotice else getattr(record, "qid", None)
    if key is not None:
        assert parser.route(line) == key
        assert parser.route(line + "\n") == key


@pytest.mark.parametrize("line", ["", "no colon at all", ": ", "x: y: z", "a" * 20000 + ": b"])
def test_route_takes_any_line(line: str) -> None:
    assert isinstance(PostfixLineParser().route(line), str)


@pytest.mark.parametrize("parts", [2, 3])
def test_parts_account_exactly_what_one_processor_does(tmp_path: Path, parts: int) -> None:
    lines = big_log(tmp_path).read_text(encoding="utf-8").splitlines()
    classifier = Classifier(ClassificationConfig.model_validate({"local_delivery": {"loopback": False}}))
    whole = LogProcessor(POSTFIX_LOG, classifier, clock=lambda: NOW)
    whole.process_lines("log", lines)
    splitter = LogSplit(PostfixLineParser(clock=lambda: NOW), [2, *[3] * (parts - 1)])  # as analyze weighs them
    part_of = [LogPart() for _ in range(parts)]
    split = [LogProcessor(part.format(POSTFIX_LOG), classifier, clock=lambda: NOW, serial=part.serial)
             for part in part_of]
    for start in range(0, len(lines), 500):  # batches, as files are read
        for part, processor, share in zip(part_of, split, splitter.split(lines[start:start + 500]), strict=True):
            processor.process_lines("log", part.feed(*share))
    assert all(p.line_counts()["log"]["parsed"] for p in split)  # every part had work
    assert {result: sum(p.line_counts()["log"][result] for p in split)
            for result in ("parsed", "ignored", "unparsed")} == whole.line_counts()["log"]
    expected = whole.snapshots()["postfix-lab"]
    merged = merge_parts(p.snapshots()["postfix-lab"] for p in split)
    assert expected.dead_letter_log and expected.reason_samples
    for name in ("messages_received", "delivery_attempts", "messages_deferred", "deferrals", "bounces",
                 "dead_letters", "self_deferrals", "probes", "soft_bounces", "notifications", "tracked_messages",
                 "evicted_messages", "negative_delays", "dead_letter_log", "reason_samples"):
        assert getattr(merged, name) == getattr(expected, name), name
    assert merged.delivery_delay.keys() == expected.delivery_delay.keys()
    for key, histogram in expected.delivery_delay.items():
        assert merged.delivery_delay[key].counts == histogram.counts
        assert merged.delivery_delay[key].total == pytest.approx(histogram.total)  # float sums: order of addition


def test_the_dead_letter_log_keeps_the_latest_across_parts(tmp_path: Path) -> None:
    lines = big_log(tmp_path).read_text(encoding="utf-8").splitlines()
    whole = LogProcessor(POSTFIX_LOG, Classifier(), clock=lambda: NOW)
    whole.process_lines("log", lines)
    parts = [LogPart() for _ in range(2)]
    processors = [LogProcessor(part.format(POSTFIX_LOG), Classifier(), clock=lambda: NOW, serial=part.serial)
                  for part in parts]
    for part, processor, share in zip(parts, processors, LogSplit(PostfixLineParser(), [1, 1]).split(lines),
                                      strict=True):
        processor.process_lines("log", part.feed(*share))
    letters = whole.snapshots()["postfix-lab"].dead_letter_log
    assert len(letters) > 5
    merged = merge_parts((p.snapshots()["postfix-lab"] for p in processors), dead_letter_limit=5)
    assert merged.dead_letter_log == letters[-5:]


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    assert analyze.main(["--json", *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_analyze_on_several_processes_prints_the_same_report(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                               jobs: str) -> None:
    log = big_log(tmp_path)
    later = tmp_path / "mail.log.next"  # four days on: logs in time order, as rotation leaves them
    shutil.copy(FIXTURES / "softbounce_lab.log", later)
    os.utime(later, (NOW + 5 * 86400, NOW + 5 * 86400))
    one = run_json(capsys, "--jobs", "1", str(log), str(later))
    several = run_json(capsys, "--jobs", jobs, str(log), str(later))
    assert one["dead_letters"]["total"] and one["deferral_reasons"] and one["senders"]
    assert several == one


def test_analyze_splits_standard_input_only_when_asked(tmp_path: Path) -> None:
    """Its size is unknown: one process unless --jobs says otherwise; then the report is the same."""
    assert analyze.jobs_for(["-"], POSTFIX_LOG) == 1
    assert analyze.jobs_for(["-"], POSTFIX_LOG, 2) == 2
    log = big_log(tmp_path).read_bytes()
    one, two = (subprocess.run([sys.executable, "-m", "exporter.cli", "analyze", "--json", "--jobs", jobs, "-"],
                               input=log, capture_output=True, check=True, timeout=120).stdout for jobs in "12")
    assert json.loads(one)["dead_letters"]["total"] and one == two
    assert analyze.jobs_for([str(big_log(tmp_path))], POSTFIX_LOG, 4) == 4
    assert analyze.jobs_for([str(DEMO_LOG)], POSTFIX_LOG) == 1  # small files: not worth a second process


def test_automatic_jobs_are_the_idle_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts cost more CPU in all: on cores that other work keeps busy, one process is quicker."""
    log = str(big_log(tmp_path))
    monkeypatch.setattr(analyze, "_SPLIT_BYTES", 1)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))
    for load, jobs in ((0.2, 4), (3.4, 3), (5.8, 1), (12.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert analyze.jobs_for([log], POSTFIX_LOG) == jobs


def test_traffic_tables_add_up() -> None:
    lines = DEMO_LOG.read_text(encoding="utf-8").splitlines()
    whole, halves = Traffic(), [Traffic(), Traffic()]
    LogProcessor(whole.observing(POSTFIX_LOG), Classifier(), clock=lambda: NOW).process_lines("log", lines)
    parser = PostfixLineParser()
    for index, traffic in enumerate(halves):
        LogProcessor(traffic.observing(POSTFIX_LOG), Classifier(), clock=lambda: NOW).process_lines(
            "log", [line for line in lines if hash(parser.route(line)) % 2 == index])
    halves[0].add(halves[1].tables())
    assert halves[0].report(50) == whole.report(50)


def _dies(*_args: object) -> None:
    os._exit(3)


def _fails(*_args: object) -> None:
    raise ValueError("bad part")


@pytest.mark.parametrize(("target", "why"), [(_dies, "exited with status 3"), (_fails, "ValueError('bad part')")])
def test_a_part_that_dies_or_fails_is_an_error_never_a_short_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     target: Any, why: str) -> None:
    """The forked part stands in for one killed or out of memory: the reader must say so, not hang
    and not print a report that lacks that part's messages."""
    def account(connection: Any, *args: Any) -> None:
        try:
            target()
        except BaseException as exc:
            connection.send(exc)

    monkeypatch.setattr(analyze, "_account_part", account)
    with pytest.raises(RuntimeError, match=re.escape(why)):
        analyze.read_logs([str(big_log(tmp_path))], Classifier(), io.StringIO(), jobs=2)


@pytest.mark.parametrize("data", [b"", b"a\nbb\n", b"a\nbb", b"x" * 30 + b"\ny\n", b"\n\n", "\u00e9\n\u00fc".encode(),
                                  b"abc\xff\n", b"z" * 50])
def test_blocks_are_cut_into_lines_at_newlines_only(monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    monkeypatch.setattr(analyze, "_CHUNK_BYTES", 7)  # lines longer than a block, characters across blocks
    expected = data.decode("utf-8", "replace").split("\n")
    if data.endswith(b"\n") or not data:
        expected.pop()
    assert [line for lines in analyze._chunks(io.BytesIO(data)) for line in lines] == expected

"""Rotation while the agent is down, every way logrotate does it, and a checkpoint that cannot be
written or read: nothing lost, nothing counted twice, failures visible."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from collectors.tailer import Tailer
from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import Recorder, append, scrape, wait_until

LINES_BEFORE = [f"before {i}".encode() for i in range(50)]
LINES_WHILE_DOWN = [f"while down {i}".encode() for i in range(50)]
LINES_AFTER = [f"after {i}".encode() for i in range(50)]


def tailer(log: Path, cp: Path, sink: Recorder) -> Tailer:
    return Tailer([str(log)], sink, checkpoint_path=str(cp), use_inotify=False, start_at="start")


def rename(log: Path) -> None:
    os.rename(log, log.with_name(log.name + ".1"))


def rename_and_compress(log: Path) -> None:
    rotated = log.with_name(log.name + ".1")
    os.rename(log, rotated)
    with open(rotated, "rb") as plain, gzip.open(str(rotated) + ".gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    rotated.unlink()


def copytruncate(log: Path) -> None:
    shutil.copyfile(log, log.with_name(log.name + ".1"))
    with open(log, "r+b") as f:
        f.truncate(0)


def copytruncate_and_compress(log: Path) -> None:
    with open(log, "rb") as plain, gzip.open(str(log) + ".1.gz", "wb") as packed:
        shutil.copyfileobj(plain, packed)
    with open(log, "r+b") as f:
        f.truncate(0)


@pytest.mark.parametrize("rotate", [rename, rename_and_compress, copytruncate, copytruncate_and_compress])
@pytest.mark.parametrize("regrow", [False, True], ids=["new file short", "new file longer than the offset"])
def test_rotation_while_down_loses_nothing_and_repeats_nothing(
        tmp_path: Path, rotate: Callable[[Path], None], regrow: bool) -> None:
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"".join(line + b"\n" for line in LINES_BEFORE))
    first = Recorder()
    t1 = tailer(log, cp, first)
    t1.poll_once()
    t1.stop()
    # Down: more lines, the rotation, then lines in the new file (more than before, when regrow).
    append(log, b"".join(line + b"\n" for line in LINES_WHILE_DOWN))
    rotate(log)
    after = LINES_AFTER * (3 if regrow else 1)
    append(log, b"".join(line + b"\n" for line in after))
    second = Recorder()
    t2 = tailer(log, cp, second)
    t2.poll_once()
    t2.stop()
    assert first.lines() == LINES_BEFORE
    assert second.lines() == LINES_WHILE_DOWN + after


def test_without_a_rotated_copy_the_loss_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"1\n2\n")
    t1 = tailer(log, cp, Recorder())
    t1.poll_once()
    t1.stop()
    log.unlink()
    log.write_bytes(b"3\n")
    sink = Recorder()
    t2 = tailer(log, cp, sink)
    t2.poll_once()
    t2.stop()
    assert sink.lines() == [b"3"]
    assert "no rotated copy has its first bytes" in caplog.text


@pytest.mark.parametrize("content", [
    "[" * 200_000 + "]" * 200_000,  # deep nesting: json would recurse until it fails
    json.dumps({"x": "y" * (2 << 20)}),  # larger than any checkpoint of ours
])
def test_hostile_checkpoint_files_are_ignored(tmp_path: Path, content: str) -> None:
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"1\n")
    cp.write_text(content)
    sink = Recorder()
    t = tailer(log, cp, sink)
    assert t.checkpoint_error is not None and t.checkpoint_error.startswith(f"unusable checkpoint {cp}")
    t.poll_once()
    t.stop()
    assert sink.lines() == [b"1"]


def test_checkpoint_write_failures_show_in_metrics_and_on_the_landing_page(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    checkpoint = tmp_path / "no-such-directory" / "checkpoint.json"  # as a read-only filesystem would
    agent = Agent(load_config(environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0"}, "collectors": {"postfix_queue": False},
        "log": {"paths": [str(log)], "checkpoint_file": str(checkpoint), "from": "start"}}))
    agent.start()
    try:
        append(log, b"Nov 27 10:00:01 mx postfix/qmgr[1]: ABCDEF1234: removed\n")
        errors = ("mtaq_log_checkpoint_errors_total", (("mta", "postfix"),))
        wait_until(lambda: scrape(agent.port).get(errors, 0) > 0, what="a failed checkpoint write")
        success = ("mtaq_collector_success", (("collector", "postfix_log"),))
        wait_until(lambda: scrape(agent.port)[success] == 0, what="the collector failing")
        with urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/", timeout=10) as response:
            assert f"cannot write checkpoint {checkpoint}" in response.read().decode()
    finally:
        agent.stop()

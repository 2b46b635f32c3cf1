"""Checkpoint and restart: resume exactly after a clean stop, at least once after a crash."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from collectors.tailer import Tailer
from tests.helpers import FakeClock, Recorder, append


def tailer(log: Path, cp: Path, sink: Callable[[str, list[bytes]], None], **kw: object) -> Tailer:
    kw.setdefault("use_inotify", False)
    return Tailer([str(log)], sink, checkpoint_path=str(cp), **kw)  # type: ignore[arg-type]


def test_clean_stop_and_restart_neither_skips_nor_repeats(tmp_path: Path) -> None:
    """The restart resumes at the checkpoint (not at the end), and the held partial line is
    re-read whole rather than delivered in two pieces."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"1\n2\n3\nhal")
    first = Recorder()
    t1 = tailer(log, cp, first, start_at="start")
    t1.poll_once()
    t1.stop()
    entry = json.loads(cp.read_text())[str(log)]
    st = os.stat(log)
    assert (entry["inode"], entry["dev"], entry["offset"]) == (st.st_ino, st.st_dev, len(b"1\n2\n3\n"))
    append(log, b"f\n4\n")
    second = Recorder()
    t2 = tailer(log, cp, second, start_at="end")
    t2.poll_once()
    t2.stop()
    assert first.lines() == [b"1", b"2", b"3"]
    assert second.lines() == [b"half", b"4"]


@pytest.mark.parametrize("rotated_name", ["mail.log.1", "mail.log-20240112", "mail.log.20240112-101500"])
def test_restart_after_rotation_while_down_drains_the_rotated_sibling(tmp_path: Path, rotated_name: str) -> None:
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"1\n2\n")
    t1 = tailer(log, cp, Recorder(), start_at="start")
    t1.poll_once()
    t1.stop()
    # While we are down: more lines, then logrotate renames the file and creates a new one.
    append(log, b"3\n4\n")
    os.rename(log, tmp_path / rotated_name)
    (tmp_path / "unrelated.log").write_bytes(b"not ours\n")
    log.write_bytes(b"5\n")
    sink = Recorder()
    t2 = tailer(log, cp, sink)
    t2.poll_once()
    append(tmp_path / rotated_name, b"6\n")  # a writer that had not reopened yet
    append(log, b"7\n")
    t2.poll_once()
    t2.stop()
    assert sink.lines() == [b"3", b"4", b"5", b"6", b"7"]


def test_rotated_file_gone_while_down_means_new_file_from_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Compressed (or deleted) while we were down: its unread tail is lost, and we say so."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"1\n")
    t1 = tailer(log, cp, Recorder(), start_at="start")
    t1.poll_once()
    t1.stop()
    append(log, b"2\n")
    os.rename(log, tmp_path / "mail.log.1")
    (tmp_path / "mail.log.1.gz").write_bytes(b"\x1f\x8b pretend")
    os.unlink(tmp_path / "mail.log.1")
    log.write_bytes(b"3\n")
    sink = Recorder()
    with caplog.at_level(logging.WARNING, logger="mtaq.tailer"):
        t2 = tailer(log, cp, sink)
        t2.poll_once()
    t2.stop()
    assert sink.lines() == [b"3"]
    assert "is gone" in caplog.text


def test_truncated_while_down_restarts_from_zero(tmp_path: Path) -> None:
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"a fairly long line one\na fairly long line two\n")
    t1 = tailer(log, cp, Recorder(), start_at="start")
    t1.poll_once()
    t1.stop()
    os.truncate(log, 0)
    append(log, b"new\n")
    sink = Recorder()
    t2 = tailer(log, cp, sink)
    t2.poll_once()
    t2.stop()
    assert sink.lines() == [b"new"]


def test_truncated_and_regrown_past_offset_while_down_is_caught_by_the_fingerprint(tmp_path: Path) -> None:
    """Same inode, bigger than the offset, different content: not the file we checkpointed."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"first generation\n")
    t1 = tailer(log, cp, Recorder(), start_at="start")
    t1.poll_once()
    t1.stop()
    os.truncate(log, 0)
    append(log, b"second generation, line one\nline two\n")
    sink = Recorder()
    t2 = tailer(log, cp, sink)
    t2.poll_once()
    t2.stop()
    assert sink.lines() == [b"second generation, line one", b"line two"]


def test_path_missing_at_stop_is_read_from_zero_when_it_appears(tmp_path: Path) -> None:
    """The checkpoint remembers "nothing was open", so a file created while we were down is new."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    t1 = tailer(log, cp, Recorder())
    t1.poll_once()
    t1.stop()
    assert json.loads(cp.read_text()) == {str(log): {}}
    log.write_bytes(b"written while we were down\n")
    sink = Recorder()
    t2 = tailer(log, cp, sink, start_at="end")
    t2.poll_once()
    t2.stop()
    assert sink.lines() == [b"written while we were down"]


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'{"%(log)s": {"inode": "12", "dev": 1, "offset": 0}}',
        b'{"%(log)s": {"inode": 12, "dev": 1}}',
        b'{"%(log)s": {"inode": 12, "dev": 1, "offset": -5}}',
        b'{"%(log)s": ["inode", 12]}',
    ],
    ids=["truncated-json", "binary", "not-an-object", "string-inode", "no-offset", "negative", "list-entry"],
)
def test_corrupt_checkpoint_is_logged_and_treated_as_absent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"old\n")
    cp.write_bytes(content.replace(b"%(log)s", str(log).encode()))
    sink = Recorder()
    with caplog.at_level(logging.WARNING, logger="mtaq.tailer"):
        t = tailer(log, cp, sink)
    assert "checkpoint" in caplog.text
    assert t.checkpoint_error is not None
    t.poll_once()  # start_at="end" applies, as if there were no checkpoint
    append(log, b"new\n")
    t.poll_once()
    t.stop()
    assert sink.lines() == [b"new"]
    assert json.loads(cp.read_text())[str(log)]["offset"] == len(b"old\nnew\n")
    assert t.checkpoint_error is None


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Atomic write: temp file + fsync + rename. If the rename fails, the old checkpoint is intact
    and no temp file is left behind; the tailer keeps going and the next write succeeds."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"")
    sink = Recorder()
    t = tailer(log, cp, sink, checkpoint_interval=0.0)
    t.poll_once()
    append(log, b"1\n")
    t.poll_once()
    before = cp.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    append(log, b"2\n")
    t.poll_once()
    assert cp.read_bytes() == before
    assert "No space left" in (t.checkpoint_error or "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "mail.log"]
    monkeypatch.undo()
    append(log, b"3\n")
    t.poll_once()
    assert json.loads(cp.read_text())[str(log)]["offset"] == len(b"1\n2\n3\n")
    assert t.checkpoint_error is None
    t.stop()
    assert sink.lines() == [b"1", b"2", b"3"]


def test_checkpoint_never_runs_ahead_of_the_sink(tmp_path: Path) -> None:
    """Inside every sink() call, the checkpoint on disk covers at most the lines delivered before
    this batch: a crash at any moment can only repeat lines, never skip them."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"")
    delivered = [0]  # bytes of lines (with newline) whose sink() call has returned
    checked = [0]

    def sink(source: str, lines: list[bytes]) -> None:
        if cp.exists():
            entry = json.loads(cp.read_text())[str(log)]
            assert entry.get("offset", 0) <= delivered[0]
            checked[0] += 1
        delivered[0] += sum(len(line) + 1 for line in lines)

    t = tailer(log, cp, sink, checkpoint_interval=0.0, read_size=5)
    t.poll_once()
    append(log, b"".join(b"line %d\n" % n for n in range(40)))
    t.poll_once()
    t.stop()
    assert checked[0] > 30
    assert json.loads(cp.read_text())[str(log)]["offset"] == delivered[0] == log.stat().st_size


def test_crash_redelivers_only_the_uncheckpointed_lines(tmp_path: Path) -> None:
    """At-least-once: after a crash (no stop()), lines since the last checkpoint come again."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"")
    clock = FakeClock()
    before_crash = Recorder()
    t1 = tailer(log, cp, before_crash, clock=clock, checkpoint_interval=10.0)
    t1.poll_once()
    append(log, b"1\n2\n")
    clock.now += 10.0
    t1.poll_once()  # checkpoint written after lines 1-2
    append(log, b"3\n4\n")
    t1.poll_once()  # delivered, but the interval has not passed: not checkpointed
    # t1 "crashes" here: no stop(), no final checkpoint.
    after_restart = Recorder()
    t2 = tailer(log, cp, after_restart, clock=clock)
    t2.poll_once()
    t2.stop()
    assert before_crash.lines() == [b"1", b"2", b"3", b"4"]
    assert after_restart.lines() == [b"3", b"4"]
    both = Counter(before_crash.lines() + after_restart.lines())
    assert {line for line, n in both.items() if n > 1} == {b"3", b"4"}


def test_checkpoint_is_rewritten_only_when_due_and_changed(tmp_path: Path) -> None:
    """Every write is a new file renamed into place, so its inode tells writes apart."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"")
    clock = FakeClock()
    t = tailer(log, cp, Recorder(), clock=clock, checkpoint_interval=1.0)
    clock.now += 1.0
    t.poll_once()
    written = cp.stat().st_ino
    append(log, b"1\n")
    t.poll_once()
    assert cp.stat().st_ino == written  # not due yet
    clock.now += 1.0
    t.poll_once()
    assert cp.stat().st_ino != written
    written = cp.stat().st_ino
    clock.now += 5.0
    t.poll_once()
    assert cp.stat().st_ino == written  # due, but nothing changed
    t.stop()


def test_stop_before_the_first_pass_keeps_the_checkpoint(tmp_path: Path) -> None:
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"1\n2\n")
    t1 = tailer(log, cp, Recorder(), start_at="start")
    t1.poll_once()
    t1.stop()
    saved = json.loads(cp.read_text())
    tailer(log, cp, Recorder()).stop()
    assert json.loads(cp.read_text()) == saved


def test_rotated_file_still_draining_at_stop_is_resumed(tmp_path: Path) -> None:
    """A stop inside the rotation grace period checkpoints the old file too."""
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    old = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    t1 = tailer(log, cp, Recorder())
    t1.poll_once()
    os.rename(log, tmp_path / "mail.log.1")
    log.write_bytes(b"new 1\n")
    t1.poll_once()
    t1.stop()
    os.write(old, b"late\n")  # the daemon had not reopened yet
    os.close(old)
    sink = Recorder()
    t2 = tailer(log, cp, sink)
    t2.poll_once()
    t2.stop()
    assert sink.lines() == [b"late"]

"""Tailer basics: where reading starts, several files, partial lines, over-long and binary lines.

Driven with ``poll_once()`` unless a test is about the background thread; those wait on the
tailer's own counters with a deadline, never on a fixed sleep.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collectors.tailer import Tailer
from tests.helpers import Recorder, append, wait_until


def test_start_at_end_skips_existing_lines(tmp_path: Path) -> None:
    """The default start skips what the file held before the tailer started."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"old 1\nold 2\n")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    assert t.poll_once() == 0
    append(log, b"new 1\n")
    t.poll_once()
    assert sink.lines() == [b"new 1"]
    t.stop()


def test_start_at_start_reads_everything(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"old 1\nold 2\n")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, start_at="start", use_inotify=False)
    t.poll_once()
    append(log, b"new 1\n")
    t.poll_once()
    assert sink.lines() == [b"old 1", b"old 2", b"new 1"]
    assert t.stats[str(log)].lines == 3
    assert t.stats[str(log)].bytes == len(b"old 1\nold 2\nnew 1\n")
    t.stop()


def test_start_at_end_mid_line_skips_the_fragment(tmp_path: Path) -> None:
    """Starting at the end of a file whose last line is unfinished must not deliver its tail."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"old\nhalf a li")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    append(log, b"ne\nnext\n")
    t.poll_once()
    assert sink.lines() == [b"next"]
    t.stop()


def test_several_files_keep_their_source_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Multi-instance hosts: each batch names the path string exactly as configured."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    first, second = Path("a/mail.log"), tmp_path / "b" / "mail.log"
    first.write_bytes(b"")
    second.write_bytes(b"")
    sink = Recorder()
    t = Tailer(["a/mail.log", str(second)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    append(first, b"a1\na2\n")
    append(second, b"b1\n")
    t.poll_once()
    assert sink.lines("a/mail.log") == [b"a1", b"a2"]
    assert sink.lines(str(second)) == [b"b1"]
    assert set(t.stats) == {"a/mail.log", str(second)}
    t.stop()


def test_partial_line_is_held_until_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    append(log, b"Jan 12 10:00:00 mx postfix/smtp[1]: AB")
    t.poll_once()
    assert sink.lines() == []
    assert t.stats[str(log)].lines == 0
    append(log, b"C: status=sent\nsecond li")
    t.poll_once()
    assert sink.lines() == [b"Jan 12 10:00:00 mx postfix/smtp[1]: ABC: status=sent"]
    append(log, b"ne\n")
    t.poll_once()
    assert sink.lines()[1:] == [b"second line"]
    t.stop()


@pytest.mark.parametrize("read_size", [3, 1 << 20])
def test_long_line_is_truncated_and_its_rest_dropped(tmp_path: Path, read_size: int) -> None:
    """An over-long line arrives cut to max_line_bytes; the rest of it never becomes a line."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False, max_line_bytes=10, read_size=read_size)
    t.poll_once()
    append(log, b"short\n" + b"x" * 35 + b"\n" + b"exactly10!\n" + b"y" * 11 + b"\nafter\n")
    t.poll_once()
    assert sink.lines() == [b"short", b"x" * 10, b"exactly10!", b"y" * 10, b"after"]
    assert t.stats[str(log)].truncated_lines == 2
    t.stop()


def test_long_line_growing_across_passes_is_never_buffered_whole(tmp_path: Path) -> None:
    """The head is delivered as soon as the limit is passed; later pieces of that line are dropped."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False, max_line_bytes=8)
    t.poll_once()
    append(log, b"0123456789")
    t.poll_once()
    assert sink.lines() == [b"01234567"]
    assert t.stats[str(log)].truncated_lines == 1
    append(log, b"more of the same line")
    t.poll_once()
    append(log, b" and its end\nnext\n")
    t.poll_once()
    assert sink.lines() == [b"01234567", b"next"]
    t.stop()


def test_binary_and_invalid_utf8_are_delivered_raw(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    junk = bytes(b for b in range(256) if b != 0x0A)
    append(log, junk + b"\n\xff\xfe caf\xe9 \xc3\x28\r\n\n\x00\n")
    t.poll_once()
    assert sink.lines() == [junk, b"\xff\xfe caf\xe9 \xc3\x28\r", b"", b"\x00"]
    t.stop()


def test_stats_use_the_injected_clock(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    now = [1000.0]
    t = Tailer([str(log)], Recorder(), checkpoint_path=None, use_inotify=False, clock=lambda: now[0])
    t.poll_once()
    assert t.stats[str(log)].last_line_time is None
    now[0] = 1234.5
    append(log, b"line\n")
    t.poll_once()
    stats = t.stats[str(log)]
    assert stats.last_line_time == 1234.5
    assert stats.lines == 1
    assert stats.last_error is None
    t.stop()


def test_fifo_is_read_as_a_stream(tmp_path: Path) -> None:
    """A named pipe (some syslog setups) is read without blocking and without rotation checks."""
    fifo = tmp_path / "mail.fifo"
    os.mkfifo(fifo)
    sink = Recorder()
    t = Tailer([str(fifo)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()  # opens the read end without waiting for a writer
    fd = os.open(fifo, os.O_WRONLY)
    try:
        os.write(fd, b"one\ntw")
        t.poll_once()
        os.write(fd, b"o\n")
        t.poll_once()
    finally:
        os.close(fd)
    assert sink.lines() == [b"one", b"two"]
    assert t.stats[str(fifo)].reopens == 0
    t.stop()


def test_background_thread_is_woken_by_inotify(tmp_path: Path) -> None:
    """With a one-minute poll interval, only the inotify wake-up can deliver within the deadline."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, poll_interval=60.0)
    t.start()
    try:
        assert t.wait_idle(5.0)  # first pass done: the file is open, at its end
        append(log, b"hello\n")
        wait_until(lambda: t.stats[str(log)].lines == 1)
        assert sink.lines() == [b"hello"]
    finally:
        t.stop()


def test_background_thread_polls_without_inotify(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, poll_interval=0.01, use_inotify=False)
    t.start()
    try:
        assert t.wait_idle(5.0)
        append(log, b"a\nb\n")
        wait_until(lambda: t.stats[str(log)].lines == 2)
        append(log, b"c\n")
        assert t.wait_idle(5.0)
        assert sink.lines() == [b"a", b"b", b"c"]
    finally:
        t.stop()


def test_stop_without_checkpoint_flushes_the_held_partial_line(tmp_path: Path) -> None:
    """Nothing would resume it, so the last unterminated line is delivered at stop()."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    append(log, b"done\nunterminated")
    t.stop()
    assert sink.lines() == [b"done", b"unterminated"]
    t.stop()  # idempotent


def test_bad_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="start_at"):
        Tailer([str(tmp_path / "x")], Recorder(), checkpoint_path=None, start_at="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="duplicate"):
        Tailer(["a", "a"], Recorder(), checkpoint_path=None)

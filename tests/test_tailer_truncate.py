"""Rotation by copytruncate: the same inode shrinks below our offset, so read it again from 0.

The precise expectation (also the model in ``test_tailer_property.py``): everything the file
held at some pass is delivered once; bytes appended after our last pass and before the truncate
exist only in logrotate's copy, which we do not read, so copytruncate itself loses them, and
nothing is ever delivered twice.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from collectors.tailer import Tailer
from tests.helpers import Recorder, wait_until


def copytruncate(log: Path) -> None:
    """What logrotate's copytruncate does: copy, then truncate the original in place."""
    shutil.copyfile(log, log.with_name(log.name + ".1"))
    os.truncate(log, 0)


def test_copytruncate_rereads_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    writer = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # O_APPEND: writes land at the new end
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    os.write(writer, b"1\n2\n3\n")
    t.poll_once()
    copytruncate(log)
    os.write(writer, b"4\n")
    t.poll_once()
    assert sink.lines() == [b"1", b"2", b"3", b"4"]
    assert t.stats[str(log)].reopens == 1
    os.write(writer, b"5\n")
    t.poll_once()
    assert sink.lines()[-1:] == [b"5"]
    os.close(writer)
    t.stop()


def test_lines_between_last_pass_and_truncate_are_lost_never_doubled(tmp_path: Path) -> None:
    """Lines 4 and 5 reach the file after our pass and go only into the copy (copytruncate's race)."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    with open(log, "ab") as f:
        f.write(b"1\n2\n3\n")
    t.poll_once()
    with open(log, "ab") as f:
        f.write(b"4\n5\n")
    copytruncate(log)
    with open(log, "ab") as f:
        f.write(b"6\n")
    t.poll_once()
    assert sink.lines() == [b"1", b"2", b"3", b"6"]
    assert (tmp_path / "mail.log.1").read_bytes() == b"1\n2\n3\n4\n5\n"
    t.stop()


def test_partial_line_held_at_truncation_is_flushed(tmp_path: Path) -> None:
    """The rest of that line can never arrive (the file was emptied), so deliver what we have."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    with open(log, "ab") as f:
        f.write(b"whole\nhalf")
    t.poll_once()
    copytruncate(log)
    with open(log, "ab") as f:
        f.write(b"next\n")
    t.poll_once()
    assert sink.lines() == [b"whole", b"half", b"next"]
    t.stop()


def test_truncate_to_empty_then_grow_within_old_size(tmp_path: Path) -> None:
    """Detection only needs the size to be below our offset at the pass, not zero."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    with open(log, "ab") as f:
        f.write(b"a long first generation line\n")
    t.poll_once()
    copytruncate(log)
    with open(log, "ab") as f:
        f.write(b"short\n")
    t.poll_once()
    assert sink.lines() == [b"a long first generation line", b"short"]
    t.stop()


def test_background_thread_follows_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, poll_interval=0.01)
    t.start()
    try:
        assert t.wait_idle(5.0)
        with open(log, "ab") as f:
            f.write(b"first generation 1\nfirst generation 2\n")
        wait_until(lambda: t.stats[str(log)].lines == 2)
        copytruncate(log)
        wait_until(lambda: t.stats[str(log)].reopens == 1)
        with open(log, "ab") as f:
            f.write(b"second\n")
        wait_until(lambda: t.stats[str(log)].lines == 3)
        assert sink.lines() == [b"first generation 1", b"first generation 2", b"second"]
    finally:
        t.stop()

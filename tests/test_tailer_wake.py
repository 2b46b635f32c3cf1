"""The tailer's inotify wake-ups (``collectors/tailer/wake.py``) against the real kernel: which
events wake the loop, how a burst of writes becomes one wake-up, a watched directory that goes
away and comes back, and the fallback to polling when inotify is unavailable."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.tailer import Tailer, wake
from collectors.tailer.wake import COALESCE_SECONDS, Waker
from tests.helpers import wait_until


class Wakes:
    """Counts the wake-ups a ``Waker`` gives."""

    def __init__(self) -> None:
        self.count = 0
        self._event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    def wait(self, timeout: float = 5.0) -> bool:
        """Whether a wake-up came within ``timeout`` (and forget it)."""
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken


@contextlib.contextmanager
def watching(log: Path, poll_interval: float = 60) -> Iterator[tuple[Waker, Wakes]]:
    """A started ``Waker`` on ``log`` and its wake-up counter; stopped at the end."""
    wakes = Wakes()
    waker = Waker({str(log)}, wakes, poll_interval)
    waker.start()
    try:
        yield waker, wakes
    finally:
        waker.stop(5)


def quiet(wakes: Wakes) -> None:
    """Let pending wake-ups through, then forget them."""
    time.sleep(5 * COALESCE_SECONDS)
    wakes.wait(0)
    wakes.count = 0


def test_writes_to_a_tailed_file_wake_and_a_burst_wakes_once_per_window(tmp_path: Path) -> None:
    """syslog writes each line on its own: 500 writes must not make 500 passes."""
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    with watching(log) as (_, wakes), open(log, "ab", buffering=0) as out:
        quiet(wakes)
        out.write(b"one line\n")
        assert wakes.wait()
        quiet(wakes)
        began = time.monotonic()
        for n in range(500):
            out.write(b"line %d\n" % n)
        took = time.monotonic() - began
        assert wakes.wait()
        time.sleep(5 * COALESCE_SECONDS)
        # At most one wake-up per coalescing window while writing, and one after.
        assert 1 <= wakes.count <= took / COALESCE_SECONDS + 2, (wakes.count, took)


def test_other_files_in_the_directory_do_not_wake(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    with watching(log) as (_, wakes):
        quiet(wakes)
        (tmp_path / "other.log").write_bytes(b"not ours\n")
        (tmp_path / "other.log").read_bytes()  # opening and reading: never a wake-up
        log.read_bytes()
        assert not wakes.wait(0.3)
        os.rename(tmp_path / "other.log", log)  # something else renamed onto the tailed name
        assert wakes.wait()


def test_rotation_and_deletion_wake(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"a\n")
    with watching(log) as (_, wakes):
        quiet(wakes)
        os.rename(log, tmp_path / "mail.log.1")
        assert wakes.wait()
        quiet(wakes)
        log.write_bytes(b"")  # the new file
        assert wakes.wait()
        quiet(wakes)
        log.unlink()
        assert wakes.wait()


def test_a_directory_that_goes_away_is_watched_again_when_it_is_back(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wake, "RETRY_SECONDS", 0.0)
    directory = tmp_path / "postfix"
    directory.mkdir()
    log = directory / "mail.log"
    log.write_bytes(b"")
    with watching(log) as (waker, wakes):
        assert not waker.incomplete
        log.unlink()
        directory.rmdir()
        assert wakes.wait()
        wait_until(lambda: waker.incomplete)
        directory.mkdir()
        waker.retry()  # what the tailer's loop does while a directory is unwatched
        assert not waker.incomplete
        quiet(wakes)
        log.write_bytes(b"back\n")
        assert wakes.wait()


def test_a_missing_directory_is_polled_until_it_can_be_watched(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(wake, "RETRY_SECONDS", 0.0)
    log = tmp_path / "later" / "mail.log"
    with caplog.at_level(logging.INFO, "mtaq.tailer"), watching(log, poll_interval=0.5) as (waker, wakes):
        assert waker.incomplete
        assert f"cannot watch {log.parent} ([Errno 2] inotify_add_watch {log.parent}: No such file or directory); " \
               "polling it every 0.50s" in caplog.text
        log.parent.mkdir()
        waker.retry()
        assert not waker.incomplete
        log.write_bytes(b"x\n")
        assert wakes.wait()


def test_without_inotify_the_tailer_polls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """``fs.inotify.max_user_instances`` reached: one warning, and the poll pass reads on."""
    def unavailable() -> None:
        raise OSError(24, "inotify_init1: Too many open files")

    monkeypatch.setattr(wake.I, "Inotify", unavailable)
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    lines: list[bytes] = []
    tailer = Tailer([str(log)], lambda _source, batch: lines.extend(batch), checkpoint_path=None,
                    poll_interval=0.02)
    with caplog.at_level(logging.WARNING, "mtaq.tailer"):
        tailer.start()
    try:
        assert "inotify unavailable ([Errno 24] inotify_init1: Too many open files); polling every 0.02s" \
               in caplog.text
        assert tailer.wait_idle(5.0)  # the first pass has opened the file, at its end
        with open(log, "ab") as out:
            out.write(b"polled\n")
        wait_until(lambda: lines == [b"polled"])
    finally:
        tailer.stop()

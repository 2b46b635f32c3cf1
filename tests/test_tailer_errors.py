"""Missing, unreadable and deleted files: keep running, say why, recover without help.

Unreadable files: the suite runs as root, and root's CAP_DAC_OVERRIDE ignores mode 000. Rather
than fake the error, the reads run with an unprivileged *effective* uid (``seteuid(nobody)``), so
the kernel itself refuses ``open()`` with EACCES; the saved uid stays root, so the test switches
back afterwards. The tailer is driven with ``poll_once()`` inside that window only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.tailer import Tailer
from tests.helpers import FakeClock, Recorder, append, wait_until

NOBODY = 65534


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Make file permission bits apply to this process for the duration of the block."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(NOBODY)
    os.seteuid(NOBODY)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory nobody can traverse (pytest's tmp_path sits under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="mtaq-tailer-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_missing_at_start_then_created(tmp_path: Path) -> None:
    """The MTA is not installed yet: the tailer waits, then reads the new file from its start."""
    log = tmp_path / "mail.log"
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    t.poll_once()
    st = t.stats[str(log)]
    assert st.last_error is not None and "FileNotFoundError" in st.last_error
    assert st.errors == 1  # one episode, not one per pass
    log.write_bytes(b"first\nsecond\n")
    t.poll_once()
    assert sink.lines() == [b"first", b"second"]
    assert st.last_error is None
    assert st.reopens == 1
    t.stop()


def test_missing_directory_falls_back_to_polling(tmp_path: Path) -> None:
    """inotify cannot watch a directory that does not exist; the poll pass still finds the file."""
    log = tmp_path / "postfix" / "mail.log"
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, poll_interval=0.01)
    t.start()
    try:
        assert t.wait_idle(5.0)
        log.parent.mkdir()
        log.write_bytes(b"hello\n")
        wait_until(lambda: t.stats[str(log)].lines == 1)
        assert t.stats[str(log)].last_error is None
    finally:
        t.stop()
    assert sink.lines() == [b"hello"]


def test_permission_denied_then_fixed(shared_dir: Path) -> None:
    """EACCES from the kernel (see the module docstring). Once readable, reading starts where the
    file ended when the tailer started (start_at="end"), so lines written meanwhile are kept."""
    log = shared_dir / "mail.log"
    log.write_bytes(b"before start\n")
    log.chmod(0o000)
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    with unprivileged():
        t.poll_once()
    append(log, b"written while unreadable\n")
    with unprivileged():
        t.poll_once()
        t.poll_once()
    st = t.stats[str(log)]
    assert st.last_error is not None and "Permission denied" in st.last_error
    assert st.errors == 1
    assert sink.lines() == []
    log.chmod(0o644)  # the operator adds the exporter to the adm group, say
    append(log, b"after the fix\n")
    with unprivileged():
        t.poll_once()
    assert sink.lines() == [b"written while unreadable", b"after the fix"]
    assert st.last_error is None
    assert st.reopens == 1
    t.stop()


def test_path_is_a_directory_until_replaced(tmp_path: Path) -> None:
    """Another way a path cannot be read (a packaging mistake): EISDIR, then recovery."""
    log = tmp_path / "mail.log"
    log.mkdir()
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    assert "IsADirectoryError" in (t.stats[str(log)].last_error or "")
    log.rmdir()
    log.write_bytes(b"now a file\n")
    t.poll_once()
    assert sink.lines() == [b"now a file"]
    assert t.stats[str(log)].last_error is None
    t.stop()


def written_log(tmp_path: Path) -> tuple[Path, int, FakeClock, Recorder, Tailer]:
    """A log, its writer's fd, and a tailer (grace period 5 s on a fake clock) that has opened it."""
    log = tmp_path / "mail.log"
    writer = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    clock = FakeClock()
    sink = Recorder()
    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False, clock=clock, rotate_grace=5.0)
    t.poll_once()
    return log, writer, clock, sink, t


def test_deleted_file_is_drained_then_the_new_one_read(tmp_path: Path) -> None:
    """The writer keeps its fd after the unlink (kumina/postfix_exporter#78): keep reading it;
    when the path comes back, read the new file from 0. A deleted file that stays idle for the
    grace period is closed, so its space can be freed."""
    log, writer, clock, sink, t = written_log(tmp_path)
    os.write(writer, b"1\n")
    os.unlink(log)
    os.write(writer, b"2\nunfinished")
    t.poll_once()
    assert sink.lines() == [b"1", b"2"]
    assert t.stats[str(log)].last_error is None  # still reading: not an error yet
    clock.now += 5.0
    t.poll_once()  # idle deleted file: closed, its last partial line flushed
    assert sink.lines()[-1] == b"unfinished"
    t.poll_once()
    assert "FileNotFoundError" in (t.stats[str(log)].last_error or "")
    os.close(writer)
    log.write_bytes(b"3\n")
    t.poll_once()
    assert sink.lines() == [b"1", b"2", b"unfinished", b"3"]
    assert t.stats[str(log)].last_error is None
    t.stop()


def test_a_quiet_file_deleted_gets_its_grace_period_from_the_deletion(tmp_path: Path) -> None:
    """Quiet for longer than the grace period, then deleted: the writer may still append until it
    reopens the path, as after a rename (found by the rotation property test)."""
    log, writer, clock, sink, t = written_log(tmp_path)
    clock.now += 5.0
    os.unlink(log)
    t.poll_once()  # deletion seen: the grace period starts now
    os.write(writer, b"late\n")
    clock.now += 4.0
    t.poll_once()
    assert sink.lines() == [b"late"]
    clock.now += 5.0
    t.poll_once()  # idle since: closed
    os.close(writer)
    log.write_bytes(b"next\n")
    t.poll_once()
    assert sink.lines() == [b"late", b"next"]
    t.stop()


def test_a_failing_sink_does_not_stop_the_source(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"")
    seen: list[bytes] = []

    def sink(source: str, lines: list[bytes]) -> None:
        if b"boom" in lines:
            raise RuntimeError("consumer bug")
        seen.extend(lines)

    t = Tailer([str(log)], sink, checkpoint_path=None, use_inotify=False)
    t.poll_once()
    append(log, b"boom\n")
    t.poll_once()
    append(log, b"fine\n")
    t.poll_once()
    t.stop()
    assert seen == [b"fine"]
    assert t.stats[str(log)].sink_errors == 1
    assert "consumer bug" in caplog.text

"""stdin as a source (``-``): containers that pipe the MTA's log into the exporter."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from collectors.tailer import STDIN, Tailer
from tests.helpers import Recorder, wait_until


def test_pipe_lines_partial_lines_and_eof() -> None:
    read_fd, write_fd = os.pipe()
    sink = Recorder()
    with os.fdopen(read_fd, "rb") as stdin:
        t = Tailer([STDIN], sink, checkpoint_path=None, stdin=stdin, poll_interval=0.01)
        t.start()
        try:
            os.write(write_fd, b"one\ntw")
            wait_until(lambda: t.stats[STDIN].lines == 1)
            os.write(write_fd, b"o\nthree, unterminated")
            wait_until(lambda: t.stats[STDIN].lines == 2)
            os.close(write_fd)  # EOF: the unterminated last line is delivered
            wait_until(lambda: t.stats[STDIN].eof)
        finally:
            t.stop()
    assert sink.lines() == [b"one", b"two", b"three, unterminated"]
    assert {source for source, _ in sink.batches} == {"-"}
    assert t.stats[STDIN].lines == 3


def test_text_stdin_is_read_as_bytes_with_poll_once() -> None:
    """A text wrapper (like ``sys.stdin``) is read through its ``.buffer``, raw."""
    stdin = io.TextIOWrapper(io.BytesIO(b"caf\xe9\n\xff binary\nlast"), encoding="utf-8")
    sink = Recorder()
    t = Tailer([STDIN], sink, checkpoint_path=None, stdin=stdin, use_inotify=False)
    wait_until(lambda: (t.poll_once(), t.stats[STDIN].eof)[1])
    t.stop()
    assert sink.lines() == [b"caf\xe9", b"\xff binary", b"last"]


def test_stdin_and_files_together_without_checkpointing_stdin(tmp_path: Path) -> None:
    log, cp = tmp_path / "mail.log", tmp_path / "checkpoint.json"
    log.write_bytes(b"")
    stdin = io.BytesIO(b"from stdin\n")
    sink = Recorder()
    t = Tailer([STDIN, str(log)], sink, checkpoint_path=str(cp), stdin=stdin, use_inotify=False)
    t.poll_once()
    log.write_bytes(b"from file\n")
    wait_until(lambda: (t.poll_once(), t.stats[STDIN].eof and t.stats[str(log)].lines == 1)[1])
    t.stop()
    assert sorted(sink.batches) == [("-", [b"from stdin"]), (str(log), [b"from file"])]
    assert list(json.loads(cp.read_text())) == [str(log)]


def test_long_stdin_line_is_truncated() -> None:
    stdin = io.BytesIO(b"x" * 100 + b"\nok\n")
    sink = Recorder()
    t = Tailer([STDIN], sink, checkpoint_path=None, stdin=stdin, use_inotify=False, max_line_bytes=16)
    wait_until(lambda: (t.poll_once(), t.stats[STDIN].eof)[1])
    t.stop()
    assert sink.lines() == [b"x" * 16, b"ok"]
    assert t.stats[STDIN].truncated_lines == 1

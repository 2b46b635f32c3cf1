"""Property tests: random appends (cut anywhere, mid-line included), passes, rotations, truncations.

Rename/delete rotation: the multiset of delivered lines equals the lines of every file ever
written (each file's unterminated last line counts as a line; lines cut to max_line_bytes). The
only pacing rule is the tailer's documented limit: a file must have been seen by one pass before
it is renamed or deleted, and the clock only moves (expiring the rotation grace period) while the
writer writes to the file at the path.

Copytruncate: delivery must match a byte-level model of the documented semantics. At each pass
the tailer reads whatever the file holds beyond its offset; if the file is shorter than that
offset it was truncated, so the held partial line is delivered and reading restarts at 0. Bytes
appended after the last pass and before the truncation exist only in logrotate's copy and are
lost (copytruncate's own race); nothing is delivered twice. The one constraint: the file must not
regrow past the old offset before the pass that sees the truncation (that case is
indistinguishable from growth, see the tailer's docstring), so the harness passes first.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.tailer import Tailer
from tests.helpers import FakeClock

GRACE = 5.0

chunks = st.lists(
    st.sampled_from([b"a", b"\xff", b"\n", b"xyz", b"\x00", b"\r", b"\n\n", b"0123456789"]), max_size=25
).map(b"".join)
max_line = st.integers(min_value=4, max_value=40)
read_size = st.sampled_from([1, 2, 3, 7, 64, 1 << 20])


class Recorder:
    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def __call__(self, source: str, lines: list[bytes]) -> None:
        self.lines.extend(lines)


def file_lines(content: bytes, limit: int) -> list[bytes]:
    lines = content.split(b"\n")
    if not lines[-1]:
        lines.pop()
    return [line[:limit] for line in lines]


rotation_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), chunks),
        st.tuples(st.sampled_from(["poll", "rename", "create", "switch", "delete", "tick"]), st.just(b"")),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=rotation_ops, limit=max_line, size=read_size)
def test_rename_and_delete_rotations_lose_and_repeat_nothing(
    ops: list[tuple[str, bytes]], limit: int, size: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mail.log"
        contents: list[bytearray] = [bytearray()]  # every file ever created, by creation order
        seen = [False]  # opened by the tailer at least once
        fds = [os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)]
        at_path: int | None = 0  # which file the path names now
        writer = 0  # which file the writer appends to
        rotated = 0
        clock = FakeClock()
        sink = Recorder()
        t = Tailer(
            [str(path)],
            sink,
            checkpoint_path=None,
            start_at="start",
            use_inotify=False,
            max_line_bytes=limit,
            read_size=size,
            clock=clock,
            rotate_grace=GRACE,
        )
        try:
            for op, data in ops:
                if op == "append":
                    os.write(fds[writer], data)
                    contents[writer] += data
                elif op == "poll":
                    t.poll_once()
                    if at_path is not None:
                        seen[at_path] = True
                elif op == "rename" and at_path is not None and seen[at_path]:
                    rotated += 1
                    os.rename(path, f"{path}.{rotated}")
                    at_path = None
                elif op == "delete" and at_path is not None and seen[at_path]:
                    os.unlink(path)
                    at_path = None
                elif op == "create" and at_path is None:
                    fds.append(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL))
                    contents.append(bytearray())
                    seen.append(False)
                    at_path = len(contents) - 1
                elif op == "switch" and at_path is not None:
                    writer = at_path  # the daemon got its HUP and reopened the path
                elif op == "tick" and writer == at_path:
                    clock.now += GRACE
            clock.now += 2 * GRACE
            t.poll_once()
            t.flush()
        finally:
            t.stop()
            for fd in fds:
                os.close(fd)
        expected = [line for content in contents for line in file_lines(bytes(content), limit)]
        assert Counter(sink.lines) == Counter(expected)


class TailerModel:
    """The copytruncate expectation, one byte at a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.offset = 0
        self.partial = b""
        self.discarding = False
        self.delivered: list[bytes] = []

    def poll(self, content: bytes) -> None:
        if len(content) < self.offset:  # truncated: flush the held line, start again at 0
            if self.partial:
                self.delivered.append(self.partial)
            self.partial, self.discarding, self.offset = b"", False, 0
        for byte in content[self.offset :]:
            if byte == 0x0A:
                if not self.discarding:
                    self.delivered.append(self.partial)
                self.partial, self.discarding = b"", False
            elif not self.discarding:
                self.partial += bytes([byte])
                if len(self.partial) > self.limit:
                    self.delivered.append(self.partial[: self.limit])
                    self.partial, self.discarding = b"", True
        self.offset = len(content)

    def flush(self) -> None:
        if self.partial:
            self.delivered.append(self.partial)
        self.partial = b""


truncate_ops = st.lists(
    st.one_of(st.tuples(st.just("append"), chunks), st.tuples(st.sampled_from(["poll", "truncate"]), st.just(b""))),
    max_size=60,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=truncate_ops, limit=max_line, size=read_size)
def test_copytruncate_matches_the_model(ops: list[tuple[str, bytes]], limit: int, size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mail.log"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        content = bytearray()
        model = TailerModel(limit)
        sink = Recorder()
        t = Tailer(
            [str(path)],
            sink,
            checkpoint_path=None,
            start_at="start",
            use_inotify=False,
            max_line_bytes=limit,
            read_size=size,
        )
        truncated_since_poll = False

        def poll() -> None:
            nonlocal truncated_since_poll
            t.poll_once()
            model.poll(bytes(content))
            truncated_since_poll = False

        try:
            for op, data in ops:
                if op == "append":
                    if truncated_since_poll and len(content) + len(data) >= model.offset:
                        poll()  # see the truncation before the file regrows past the old offset
                    os.write(fd, data)
                    content += data
                elif op == "poll":
                    poll()
                elif op == "truncate":
                    os.truncate(path, 0)
                    content.clear()
                    truncated_since_poll = True
            poll()
            t.flush()
            model.flush()
        finally:
            t.stop()
            os.close(fd)
        assert sink.lines == model.delivered

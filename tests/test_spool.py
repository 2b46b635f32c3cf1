"""The Postfix spool reader on queue files written here record by record: decoding checked against
Postfix's own ``postcat``, defer logs, address quoting, the incremental scan (only new and changed
files read, moves without a read, interrupted scans that the next one completes), the updates that
inotify drives (hundreds of Postfix-like changes, each scan equal to a fresh full read; the walks
asked for when inotify may have missed something; the fallback when inotify is unavailable), the
first walk in worker processes, and undecodable files counted apart. The real-queue equality with
showq and ``postqueue -j`` is ``tests/test_spool_lab.py``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.classify import Classifier
from collectors.deadline import Deadline, ReadTimeout
from collectors.postfix.queue_file import Envelope, hash_path, parse_defer_log, quoted_address, read_envelope
from collectors.postfix.showq import POSTFIX_QUEUES
from collectors.postfix.spool import SpoolQueueReader
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueLedger, QueueTally
from exporter.registry import build_registry

MTA = {"mta": "postfix", "mta_instance": "postfix"}


def record(kind: bytes, data: bytes) -> bytes:
    """One queue-file record (rec_put): type, length in 7-bit groups low first, data."""
    length, out = len(data), bytearray(kind)
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + data


CONTENT = record(b"N", b"Subject: S looks like a sender") + record(b"N", b"") + record(b"N", b"R not a recipient")


def queue_file(sender: bytes, recipients: list[bytes], *, arrival: int = 1_700_000_000, done: tuple[bytes, ...] = (),
               appended: tuple[bytes, ...] = (), extracted: tuple[bytes, ...] = (), size_record: bool = True) -> bytes:
    """A queue file laid out as cleanup writes one: size, time, attributes, sender, recipients (done
    ones as ``D``), a pointer to recipients appended at the end (and back), the content, the
    extracted segment."""
    content = CONTENT
    head = b"".join([
        record(b"T", b"%d 123456" % arrival), record(b"A", b"create_time=%d" % arrival),
        record(b"A", b"log_message_origin=" + b"x" * 300),  # a length of two bytes
        record(b"S", sender), *(record(b"R", r) for r in recipients), *(record(b"D", d) for d in done)])
    size = record(b"C", b"%15d %15d %15d %15d %15d %15d" % (len(content), 0, len(recipients), 0, len(content), 0))
    if not size_record:
        size = b""
    pointer_width = len(record(b"p", b"%15d" % 0))
    after_pointer = len(size) + len(head) + pointer_width
    body = record(b"M", b"") + content + record(b"X", b"") + b"".join(record(b"R", r) for r in extracted) \
        + record(b"E", b"")
    tail_at = after_pointer + len(body) if appended else 0
    tail = b"".join(record(b"R", r) for r in appended) + record(b"w", b"padding") \
        + record(b"p", b"%15d" % after_pointer)
    return size + head + record(b"p", b"%15d" % tail_at) + body + (tail if appended else b"")


def write_queue_file(root: Path, queue: str, queue_id: str, data: bytes, *, hashed: bool = True,
                     mode: int = 0o700) -> Path:
    directory = root / queue / (queue_id[0] if hashed else "")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / queue_id
    path.write_bytes(data)
    path.chmod(mode)
    return path


def write_defer_log(root: Path, queue_id: str, entries: list[tuple[str, str]]) -> None:
    directory = root / "defer" / queue_id[0]
    directory.mkdir(parents=True, exist_ok=True)
    text = "".join(f"recipient={r}\noffset=1\nstatus=4.7.28\naction=delayed\nreason={why}\n\n" for r, why in entries)
    (directory / queue_id).write_text(text)


def postcat(path: Path) -> tuple[str, list[str]]:
    """(sender, recipients to do) of a queue file according to Postfix's postcat."""
    out = subprocess.run(["postcat", str(path)], capture_output=True, text=True, check=True).stdout
    sender = next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("sender: "))
    return sender, [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("recipient: ")]


def envelope_of(path: Path) -> Envelope:
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_envelope(fd, path.stat().st_size)
    finally:
        os.close(fd)


needs_postcat = pytest.mark.skipif(shutil.which("postcat") is None, reason="Debian package postfix is not installed")


@needs_postcat
@pytest.mark.parametrize("layout", ["plain", "appended", "extracted", "done", "no size record"])
def test_the_envelope_is_what_postcat_reads(tmp_path: Path, layout: str) -> None:
    data = queue_file(b"news@bulk.example.com", [b"a@gmail.com", b"b@yahoo.com"],
                      done=(b"c@outlook.com",) if layout == "done" else (),
                      appended=(b"late@icloud.com",) if layout == "appended" else (),
                      extracted=(b"x@gmx.de",) if layout == "extracted" else (),
                      size_record=layout != "no size record")
    path = write_queue_file(tmp_path, "deferred", "4A1B2C3D4E", data)
    envelope = envelope_of(path)
    sender, recipients = postcat(path)
    assert envelope.sender is not None
    assert (envelope.sender.decode(), [r.decode() for r in envelope.recipients]) == (sender, recipients)
    assert envelope.arrival == 1_700_000_000
    assert envelope.size == (len(data) if layout == "no size record" else len(CONTENT))


def test_a_large_queue_file_is_read_past_its_first_chunk(tmp_path: Path) -> None:
    many = [f"user{i}@example.com".encode() for i in range(3000)]  # ~60 kB of envelope
    data = queue_file(b"bulk@example.com", many, appended=(b"last@example.org",))
    envelope = envelope_of(write_queue_file(tmp_path, "deferred", "5A1B2C3D4E", data))
    assert envelope.recipients == [*many, b"last@example.org"]


def test_defer_logs_old_new_and_mixed_entries() -> None:
    log = (b"<a@gmail.com>: host x said: 421 4.7.28 slow down\n"
           b"recipient=a@gmail.com\nstatus=4.7.28\nreason=host x said: 421 4.7.28 slow down (in reply to RCPT TO)\n\n"
           b"recipient = b@yahoo.com \nreason= 421 [TSS04] \n\n"
           b"<c@outlook.com>: 451 4.7.650 rate limited\n\n"
           b"recipient=\n\n"
           b"recipient=d@icloud.com\nreason=not finished\n")  # no closing blank line: not an entry
    assert parse_defer_log(log) == [
        ("a@gmail.com", "host x said: 421 4.7.28 slow down (in reply to RCPT TO)"),
        ("b@yahoo.com", "421 [TSS04]"),
        ("c@outlook.com", "451 4.7.650 rate limited"),
        ("(MAILER-DAEMON)", "(description unavailable)"),
    ]


@pytest.mark.parametrize(("raw", "shown"), [
    (b"user@example.com", "user@example.com"),
    (b"first.last+tag@example.com", "first.last+tag@example.com"),
    (b"two words@example.com", '"two words"@example.com'),
    (b'quo"te@example.com', '"quo\\"te"@example.com'),
    (b".dot@example.com", '".dot"@example.com'),
    (b"@relay.example:user@example.com", "@relay.example:user@example.com"),
    ("j\u00f6rg@example.de".encode(), "j\u00f6rg@example.de"),
    (b"bad\xff@example.com", "bad?@example.com"),
    (b"tab\there@example.com", '"tab?here"@example.com'),
])
def test_addresses_are_quoted_and_printable_as_showq_lists_them(raw: bytes, shown: str) -> None:
    assert quoted_address(raw) == shown


def test_queue_ids_hash_as_postfix_hashes_them() -> None:
    assert hash_path("4A1B2C3D4E", 1) == "4/"
    assert hash_path("4A1B2C3D4E", 2) == "4/A/"
    assert hash_path("AB", 3) == "A/B/_/"
    # Long queue ids (enable_long_queue_ids) hash on the hex of their microseconds: where the lab's
    # Postfix 3.7 put these (deferred/D/…, defer/D/…).
    for queue_id in ("4jf4mW68K6zsMwS", "4jf4mW65PNzsMwL", "4jf4mW639bzsMwJ"):
        assert hash_path(queue_id, 1) == "D/"


READERS: list[SpoolQueueReader] = []


@pytest.fixture(autouse=True)
def _close_readers() -> Iterator[None]:
    """Readers watch their queue with a thread of their own: each test ends them."""
    yield
    while READERS:
        READERS.pop().close()


def make_reader(root: Path, **kwargs: Any) -> SpoolQueueReader:
    """A spool reader of ``root``, closed when the test ends."""
    reader = SpoolQueueReader("postfix", str(root), **kwargs)
    READERS.append(reader)
    return reader


def spool(tmp_path: Path) -> Path:
    root = tmp_path / "queue"
    for queue in (*POSTFIX_QUEUES, "defer"):
        (root / queue).mkdir(parents=True)
    return root


def collector(reader: SpoolQueueReader, **kwargs: float) -> QueueCollector:
    return QueueCollector("postfix_queue", "postfix", [reader], Classifier(), POSTFIX_QUEUES, **kwargs)


def sample(c: QueueCollector, name: str, **labels: str) -> float | None:
    return build_registry([c]).get_sample_value(name, {**MTA, **labels})


def test_undecodable_queue_files_are_counted_and_skipped(tmp_path: Path) -> None:
    root = spool(tmp_path)
    write_queue_file(root, "deferred", "4A1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com"]))
    write_queue_file(root, "deferred", "4B1B2C3D4E", b"\x00garbage that is no queue file")
    write_queue_file(root, "deferred", "4C1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com"])[:20])
    write_queue_file(root, "incoming", "4D1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com"]),
                     hashed=False, mode=0o600)  # cleanup still writing it: not a queue entry yet
    c = collector(make_reader(root))
    assert c.run_refresh(), c.health.view().last_error
    assert sample(c, "mtaq_queue_messages", queue="deferred", lane="normal") == 1
    assert sample(c, "mtaq_queue_messages", queue="incoming", lane="normal") == 0
    assert sample(c, "mtaq_queue_skipped_messages", reason="malformed") == 2
    assert sample(c, "mtaq_up") == 1
    assert [m.queue_id for m in make_reader(root).read(Deadline(10))] == ["4A1B2C3D4E"]


@pytest.mark.parametrize("inotify", [True, False])
def test_a_rescan_reads_only_what_changed_and_moves_without_reading(tmp_path: Path, inotify: bool) -> None:
    root = spool(tmp_path)
    for i in range(20):
        queue_id = f"{i % 16:X}{i:04X}ABCDE"
        write_queue_file(root, "deferred", queue_id, queue_file(b"a@example.com", [f"u{i}@gmail.com".encode()]))
        write_defer_log(root, queue_id, [(f"u{i}@gmail.com", "host x said: 421 4.7.28 rate limited")])
    reader = make_reader(root, inotify=inotify)
    c = collector(reader)
    assert c.run_refresh()
    assert (reader.stats.read, sample(c, "mtaq_queue_deferred_recipients", provider="google",
                                      reason="rate_limited")) == (20, 20)
    assert c.run_refresh()
    # with inotify, an unchanged queue costs nothing; without, one stat per file
    assert (reader.stats.walk, reader.stats.files, reader.stats.read, reader.stats.moved) == (
        (None, 0, 0, 0) if inotify else ("no inotify", 20, 0, 0))
    # postsuper -h: renamed into hold, unchanged: counted there without a read
    os.rename(root / "deferred" / "1" / "10001ABCDE", root / "hold" / "10001ABCDE")
    # a new message, a changed one, a delivered one
    write_queue_file(root, "deferred", "F0099ABCDE", queue_file(b"a@example.com", [b"n@yahoo.com"]))
    write_queue_file(root, "deferred", "20002ABCDE", queue_file(b"a@example.com", [b"u2@gmail.com", b"v@gmx.de"]))
    (root / "deferred" / "3" / "30003ABCDE").unlink()
    assert c.run_refresh()
    assert (reader.stats.read, reader.stats.moved, reader.stats.removed) == (2, 1, 1)
    assert reader.stats.files == (5 if inotify else 20)  # with inotify: the five files named
    assert sample(c, "mtaq_queue_messages", queue="deferred", lane="normal") == 19
    assert sample(c, "mtaq_queue_messages", queue="hold", lane="normal") == 1
    assert sample(c, "mtaq_queue_recipients", queue="deferred", lane="normal") == 20
    # the held message keeps its reason but only the deferred queue counts in the deferred gauge
    assert sample(c, "mtaq_queue_deferred_recipients", provider="google", reason="rate_limited") == 18
    assert_ledger_equals_a_full_read(reader, c)


def assert_ledger_equals_a_full_read(reader: SpoolQueueReader, c: QueueCollector) -> None:
    """The incrementally kept totals equal a tally of a fresh full read of the same files."""
    tally = QueueTally(Classifier(), POSTFIX_QUEUES)
    full = tally.new_snapshot()
    for message in SpoolQueueReader(reader.name, reader.root).read(Deadline(30)):
        tally.add(full, message, reader.name)
    kept = c.snapshot(reader.name)
    assert kept is not None
    assert ({k: v for k, v in kept.cells.items()}, kept.deferred, kept.forced_expire) == (
        full.cells, full.deferred, full.forced_expire)


def test_an_interrupted_scan_is_down_and_the_next_one_completes_it(tmp_path: Path) -> None:
    root = spool(tmp_path)
    for i in range(60):
        write_queue_file(root, "deferred", f"{i % 16:X}{i:04X}ABCDE",
                         queue_file(b"a@example.com", [f"u{i}@gmail.com".encode()]))
    reader = make_reader(root, files_per_second=50)  # ~1.2 s for 60 files
    c = collector(reader, read_timeout=0.3, interval=1.0)
    assert not c.run_refresh()
    assert "timed out" in (c.health.view().last_error or "")
    assert sample(c, "mtaq_up") == 0
    assert c.snapshot("postfix") is None  # never partial totals
    for _ in range(10):
        if c.run_refresh():
            break
    assert sample(c, "mtaq_up") == 1
    assert sample(c, "mtaq_queue_messages", queue="deferred", lane="normal") == 60
    assert_ledger_equals_a_full_read(reader, c)


def test_forced_expire_and_a_vanished_queue_directory(tmp_path: Path) -> None:
    root = spool(tmp_path)
    path = write_queue_file(root, "deferred", "4A1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com"]))
    reader = make_reader(root)
    c = collector(reader)
    assert c.run_refresh()
    assert sample(c, "mtaq_queue_forced_expire_messages") == 0
    path.chmod(0o710)  # postsuper -e
    assert c.run_refresh()
    assert sample(c, "mtaq_queue_forced_expire_messages") == 1
    shutil.rmtree(root)
    assert not c.run_refresh()
    assert "does not exist" in (c.health.view().last_error or "")
    assert sample(c, "mtaq_up") == 0


def test_ledger_removes_what_it_added() -> None:
    """Adding and removing the same contributions leaves empty totals, the oldest recomputed."""
    from collectors.queue_model import QueueMessage, QueueRecipient

    tally = QueueTally(Classifier(), POSTFIX_QUEUES)
    ledger = QueueLedger(tally, "postfix")
    messages = [QueueMessage("deferred", f"Q{i}", 1000.0 + i, 100, "a@example.com",
                             (QueueRecipient("x@gmail.com", "421 4.7.28 rate limited"),)) for i in range(3)]
    blobs = [ledger.encode(m) for m in messages]
    for blob in blobs:
        ledger.add(blob, "deferred", False)
    ledger.remove(blobs[0], "deferred", False)
    snapshot = ledger.snapshot()
    cell = snapshot.cells[("deferred", "normal")]
    assert (cell.messages, cell.oldest, snapshot.deferred) == (2, 1001.0, {("google", "rate_limited"): 2})
    for blob in blobs[1:]:
        ledger.remove(blob, "deferred", False)
    assert ledger.snapshot().cells == tally.new_snapshot().cells
    assert ledger.snapshot().deferred == {}


def test_the_read_budget_paces_file_opens(tmp_path: Path) -> None:
    """``spool_files_per_second`` spaces the reads out: 30 messages (60 files with their defer
    logs) at 10 files/s cannot be read within half a second; without a budget they can."""
    root = spool(tmp_path)
    for i in range(30):
        write_queue_file(root, "deferred", f"{i % 16:X}{i:04X}ABCDE", queue_file(b"a@example.com", [b"b@gmail.com"]))
    with pytest.raises(ReadTimeout):
        list(make_reader(root, files_per_second=10).read(Deadline(0.5)))
    assert len(list(make_reader(root, files_per_second=0).read(Deadline(30)))) == 30


class FakePostfix:
    """Changes a spool the ways Postfix does (see ``collectors/spool_watch.py``), chosen at
    random: cleanup writes a file and makes it complete, qmgr moves it to active, delivers
    recipients in place, defers (defer log appended, moved to deferred, next retry time set) or
    removes it; postsuper holds, releases, marks to expire and deletes."""

    def __init__(self, root: Path, seed: int) -> None:
        import random

        self.root = root
        self.random = random.Random(seed)
        self.where: dict[str, Path] = {}  # queue id -> its queue file
        self.serial = 0
        self.actions: set[str] = set()  # the kinds of change made

    def _move(self, queue_id: str, queue: str) -> Path:
        target = self.root / queue / (queue_id[0] if queue in ("deferred", "hold") else "") / queue_id
        target.parent.mkdir(exist_ok=True)
        os.rename(self.where[queue_id], target)
        self.where[queue_id] = target
        return target

    def _in(self, *queues: str) -> list[str]:
        return sorted(q for q, path in self.where.items() if path.relative_to(self.root).parts[0] in queues)

    def step(self) -> None:
        """One change."""
        r = self.random
        action = r.choice(["cleanup", "cleanup", "activate", "deliver", "defer", "defer", "done", "hold", "release",
                           "expire", "delete"])
        if action == "cleanup":
            self.serial += 1
            queue_id = f"{r.choice('0123456789ABCDEF')}{self.serial:05X}QRST"
            path = self.root / "incoming" / queue_id
            path.write_bytes(queue_file(r.choice([b"ops@alerts.example.com", b"news@bulk.example.com", b""]),
                                        [f"u{n}@{r.choice(['gmail.com', 'yahoo.com', 'gmx.de'])}".encode()
                                         for n in range(r.randint(1, 3))], arrival=1_700_000_000 + self.serial))
            path.chmod(0o600)  # being written
            path.chmod(0o700)  # complete
            self.where[queue_id] = path
            self.actions.add(action)
            return
        choices = {"activate": ("incoming", "deferred"), "deliver": ("active",), "defer": ("active",),
                   "done": ("active",), "hold": ("deferred", "active", "incoming"), "release": ("hold",),
                   "expire": ("deferred", "hold"), "delete": ("deferred", "hold", "incoming", "active")}[action]
        candidates = self._in(*choices)
        if not candidates:
            return
        self.actions.add(action)
        queue_id = r.choice(candidates)
        defer_log = self.root / "defer" / queue_id[0] / queue_id
        if action == "activate":  # qmgr: the defer log goes when the message is taken in
            defer_log.unlink(missing_ok=True)
            self._move(queue_id, "active")
        elif action == "deliver":  # a recipient marked done in place
            path = self.where[queue_id]
            data = path.read_bytes()
            at = data.find(b"R", data.find(b"S"))
            if at > 0 and data[at + 2:at + 3] == b"u":
                with open(path, "r+b") as f:
                    f.seek(at)
                    f.write(b"D")
        elif action == "defer":
            write_defer_log(self.root, queue_id, [("u0@gmail.com", r.choice(
                ["host x said: 421 4.7.28 rate limited", "450 4.2.1 mailbox busy", "connection timed out"]))])
            path = self._move(queue_id, "deferred")
            os.utime(path, (time.time(), time.time() + r.randint(60, 4000)))
        elif action == "done":
            self.where.pop(queue_id).unlink()
            defer_log.unlink(missing_ok=True)
        elif action == "hold":
            self._move(queue_id, "hold")
        elif action == "release":
            self._move(queue_id, "deferred")
        elif action == "expire":
            self.where[queue_id].chmod(0o710)
        elif action == "delete":
            self.where.pop(queue_id).unlink()
            defer_log.unlink(missing_ok=True)


@pytest.mark.parametrize("seed", range(3))
def test_updates_from_inotify_equal_a_full_read_after_every_kind_of_change(tmp_path: Path, seed: int) -> None:
    """Hundreds of Postfix-like changes, a scan after every few: each scan equals a fresh full read,
    and apart from the walks that new hashed subdirectories ask for, every scan looks only at the
    files that changed."""
    root = spool(tmp_path)
    postfix = FakePostfix(root, seed)
    reader = make_reader(root)
    c = collector(reader)
    walks = []
    for _ in range(120):
        for _ in range(postfix.random.randint(0, 6)):
            postfix.step()
        assert c.run_refresh(), c.health.view().last_error
        assert_ledger_equals_a_full_read(reader, c)
        if reader.stats.walk:
            walks.append(reader.stats.walk)
        else:
            assert reader.stats.files <= 12  # the files named, at most two events' worth per change
    assert walks[0] == "nothing cached yet"
    assert all(why.startswith("new directory") for why in walks[1:]), walks
    assert len(walks) <= 1 + 2 * 16  # at most one per hashed subdirectory of deferred/, hold/ and defer/
    assert postfix.actions == {"cleanup", "activate", "deliver", "defer", "done", "hold", "release", "expire",
                               "delete"}


def test_a_defer_log_that_changes_alone_is_read_again(tmp_path: Path) -> None:
    root = spool(tmp_path)
    write_queue_file(root, "deferred", "4A1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com", b"c@gmx.de"]))
    (root / "defer" / "4").mkdir()
    reader = make_reader(root)
    c = collector(reader)
    assert c.run_refresh()
    write_defer_log(root, "4A1B2C3D4E", [("b@gmail.com", "host x said: 421 4.7.28 rate limited")])
    assert c.run_refresh()
    assert (reader.stats.walk, reader.stats.read) == (None, 1)
    assert sample(c, "mtaq_queue_deferred_recipients", provider="google", reason="rate_limited") == 1
    assert_ledger_equals_a_full_read(reader, c)


def _scan(c: QueueCollector, reader: SpoolQueueReader) -> str | None:
    assert c.run_refresh(), c.health.view().last_error
    assert_ledger_equals_a_full_read(reader, c)
    return reader.stats.walk


def test_a_walk_whenever_inotify_may_have_missed_something(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors import inotify

    root = spool(tmp_path)
    write_queue_file(root, "deferred", "4A1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com"]))
    reader = make_reader(root, full_scan_interval=0)
    c = collector(reader)
    assert _scan(c, reader) == "nothing cached yet"
    assert _scan(c, reader) is None
    # a hashed subdirectory that appears is not watched yet: its files are found by a walk
    write_queue_file(root, "deferred", "5A1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com"]))
    assert _scan(c, reader) == f"new directory {root}/deferred/5"
    assert _scan(c, reader) is None
    # a watched directory that goes away
    (root / "deferred" / "5" / "5A1B2C3D4E").unlink()
    (root / "deferred" / "5").rmdir()
    assert _scan(c, reader) == "a watched directory went away"
    # the kernel dropped events
    watch = reader.tracker.watcher
    assert watch is not None
    real = watch._inotify.read
    monkeypatch.setattr(watch._inotify, "read", lambda: iter([inotify.Event(-1, inotify.IN_Q_OVERFLOW, ""),
                                                               *real()]))
    assert _scan(c, reader) == "inotify queue overflow"
    monkeypatch.setattr(watch._inotify, "read", real)
    # more changes than are worth tracking
    watch.max_changes = 3
    for i in range(5):
        write_queue_file(root, "deferred", f"4{i}1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com"]))
    assert _scan(c, reader) == "more than 3 changes"
    # the safety net
    reader.tracker.full_scan_interval = 1e-6
    assert _scan(c, reader) == "periodic"
    assert "inotify, full walk every 1e-06 s" in reader.source()


def test_without_inotify_every_scan_walks_and_says_why_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    import errno

    from collectors.spool_watch import SpoolWatch

    def refuse(self: SpoolWatch, path: str, kind: str) -> None:
        raise OSError(errno.ENOSPC, "inotify_add_watch: No space left on device")

    root = spool(tmp_path)
    write_queue_file(root, "deferred", "4A1B2C3D4E", queue_file(b"a@example.com", [b"b@gmail.com"]))
    monkeypatch.setattr(SpoolWatch, "watch", refuse)
    reader = make_reader(root)
    c = collector(reader)
    for _ in range(3):
        _scan(c, reader)
        write_queue_file(root, "deferred", f"4{_}1B2C3D4F", queue_file(b"a@example.com", [b"b@gmail.com"]))
    assert reader.stats.walk == "no inotify"
    assert [r.getMessage() for r in caplog.records if "inotify unavailable" in r.getMessage()] == [
        "postfix instance postfix: inotify unavailable ([Errno 28] inotify_add_watch: No space left on device): "
        "every queue scan stats every file (raise fs.inotify.max_user_watches or set spool_inotify: false)"]
    assert "inotify unavailable" in reader.source()


def test_the_first_walk_in_worker_processes_counts_what_one_process_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.postfix import spool as spool_module

    root = spool(tmp_path)
    postfix = FakePostfix(root, 7)
    for _ in range(600):
        postfix.step()
    monkeypatch.setattr(spool_module, "POOL_MIN_FILES", 5)
    monkeypatch.setattr(spool_module, "_BATCH", 7)
    by_workers, alone = make_reader(root, processes=2), make_reader(root, processes=1)
    c_workers, c_alone = collector(by_workers), collector(alone)
    assert _scan(c_workers, by_workers) == _scan(c_alone, alone) == "nothing cached yet"
    assert by_workers.stats.workers == 2 and alone.stats.workers == 0
    assert (c_workers.snapshot("postfix").cells, c_workers.snapshot("postfix").deferred) == (  # type: ignore[union-attr]
        c_alone.snapshot("postfix").cells, c_alone.snapshot("postfix").deferred)  # type: ignore[union-attr]
    for _ in range(50):
        postfix.step()
    assert (_scan(c_workers, by_workers) or "new directory").startswith("new directory")  # then updates


def test_a_first_walk_in_worker_processes_that_runs_out_of_time_is_completed_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.postfix import spool as spool_module

    root = spool(tmp_path)
    for i in range(80):
        write_queue_file(root, "deferred", f"{i % 16:X}{i:04X}ABCDE",
                         queue_file(b"a@example.com", [f"u{i}@gmail.com".encode()]))
    monkeypatch.setattr(spool_module, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(spool_module, "_BATCH", 2)
    reader = make_reader(root, processes=2, files_per_second=60)  # ~2.7 s for 80 files and their defer logs
    c = collector(reader, read_timeout=0.8, interval=1.0)
    assert not c.run_refresh()
    assert "timed out" in (c.health.view().last_error or "")
    assert c.snapshot("postfix") is None
    for _ in range(10):
        if c.run_refresh():
            break
    assert sample(c, "mtaq_queue_messages", queue="deferred", lane="normal") == 80
    assert_ledger_equals_a_full_read(reader, c)


def test_when_worker_processes_cannot_start_the_queue_is_read_in_the_agents_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from collectors.postfix import spool as spool_module
    from collectors.postfix import spool_workers

    root = spool(tmp_path)
    for i in range(20):
        write_queue_file(root, "deferred", f"{i % 16:X}{i:04X}ABCDE", queue_file(b"a@example.com", [b"b@gmail.com"]))
    monkeypatch.setattr(spool_module, "POOL_MIN_FILES", 1)
    monkeypatch.setattr(spool_workers.sys, "executable", str(tmp_path / "no-python"))
    reader = make_reader(root, processes=2)
    c = collector(reader)
    assert not c.run_refresh()
    assert "cannot start a queue reader worker" in (c.health.view().last_error or "")
    assert _scan(c, reader) == "nothing cached yet" and reader.stats.workers == 0
    assert sample(c, "mtaq_queue_messages", queue="deferred", lane="normal") == 20

"""The Exim queue reader on a real spool captured from the lab (``collectors/data/demo_exim_spool``), its
``exim -bp`` listing as the independent reference; hostile -H files, both id formats, the time
budget and the fallback listing."""

from __future__ import annotations

import math
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import ClassificationConfig, Classifier
from collectors.deadline import Deadline, ReadTimeout
from collectors.exim.instance import EximInstance, EximQueueReader, EximSection
from collectors.exim.message_id import id_time, is_message_id, shift_arrival, subdirectory
from collectors.exim.queue_listing import decode_bp
from collectors.exim.spool import EXIM_QUEUES, QUEUED, SpoolFormatError, parse_header
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage
from exporter.summary import collect_samples
from tests.exim_reference import PROVIDERS, format_size, listing, series

FIXTURES = Path(__file__).parent / "fixtures" / "exim_queue"
SPOOL = Path(__file__).parent.parent / "collectors" / "data" / "demo_exim_spool"  # bundled for the demo too
BP = (FIXTURES / "bp.txt").read_text()
LISTED = listing(BP)
LAB = ClassificationConfig.model_validate({"local_delivery": {"loopback": False}})


def spool_messages(spool: Path = SPOOL, deadline: float = 30) -> dict[str, QueueMessage]:
    """Every message of ``spool`` as the queue reader reads it afresh."""
    reader = EximQueueReader(EximInstance(name="exim-lab", spool_directory=str(spool)))
    return {m.queue_id: m for m in reader.read(Deadline(deadline))}


def headers() -> Iterator[Path]:
    return SPOOL.glob("input/*/*-H")


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    """A writable copy of the captured spool."""
    copy = tmp_path / "spool"
    shutil.copytree(SPOOL, copy)
    return copy


def collector(spool: Path, inotify: bool = True, **options: object) -> QueueCollector:
    reader = EximQueueReader(EximInstance(name="exim-lab", spool_directory=str(spool), spool_inotify=inotify))
    return QueueCollector("exim_queue", "exim", [reader], Classifier(LAB), EXIM_QUEUES, deferred_queue=QUEUED,
                          **options)  # type: ignore[arg-type]


# -- message ids ---------------------------------------------------------------------------

@pytest.mark.parametrize(("token", "valid"), [
    ("1xYPwB-0006EL-0J", True), ("1wN9t2-00000002BQv-3hr9", True), ("10HmaX-000000005vi-0000", True),
    ("1xYPwB-0006EL-0", False), ("1xYPwB_0006EL-0J", False), ("1xYPwB-0006EL-0J-H", False),
    ("1wN9t2-00000002BQv-3hr", False), ("1xYPw!-0006EL-0J", False), ("", False), ("é" * 16, False)])
def test_both_message_id_formats(token: str, valid: bool) -> None:
    assert is_message_id(token) is valid


def test_a_message_id_carries_its_arrival_second() -> None:
    header = parse_header((SPOOL / "input" / "B" / "1xYPwB-0006EL-0J-H").read_bytes(), "1xYPwB-0006EL-0J")
    assert id_time("1xYPwB-0006EL-0J") == int(header.arrival)
    assert subdirectory("1xYPwB-0006EL-0J") == "B"
    assert id_time("not-an-id") is None


def test_an_id_moved_in_time_keeps_its_format_and_the_rest() -> None:
    """What the demo gives replayed messages: the same id an hour (or any time) later."""
    for message_id in ("1xYPwB-0006EL-0J", "1wN9t2-00000002BQv-3hr9"):
        moved = shift_arrival(message_id, 3600)
        assert is_message_id(moved) and moved[6:] == message_id[6:]
        assert id_time(moved) == id_time(message_id) + 3600  # type: ignore[operator]
        assert shift_arrival(moved, -3600) == message_id
    assert shift_arrival("zzzzzz-0006EL-0J", 1) == "000000-0006EL-0J"  # around the six digits' range
    with pytest.raises(ValueError, match="not an Exim message id"):
        shift_arrival("1xYPwB-0006EL-0", 1)


# -- the spool against exim -bp ---------------------------------------------------------------

def test_the_spool_reads_as_exim_lists_it() -> None:
    """Same ids, frozen flags, senders, sizes (as -bp rounds them), undelivered recipients in order."""
    ours = spool_messages()
    assert set(ours) == set(LISTED) and len(ours) == 14
    for message_id, listed in LISTED.items():
        message = ours[message_id]
        assert message.queue == ("frozen" if listed["frozen"] else "queued")
        assert message.sender == listed["sender"]
        assert format_size(message.size) == listed["size"]
        assert [r.address for r in message.recipients] == listed["recipients"]
        assert int(message.arrival) == id_time(message_id)
    assert sum(m.queue == "frozen" for m in ours.values()) == 2  # Exim's frozen bounce, exim -Mf


def test_each_waiting_recipient_has_its_last_defer_reason_from_the_message_log() -> None:
    ours = spool_messages()
    for message in ours.values():
        for recipient in message.recipients:
            if message.queue == "frozen":
                assert recipient.reason == ""  # frozen: waits for an operator, not for a retry
            else:
                text = (SPOOL / "msglog" / message.queue_id[5] / message.queue_id).read_text()
                last = [line for line in text.splitlines() if f" {recipient.address} R=" in line and "defer (" in line]
                assert last, recipient
                assert recipient.reason.startswith("SMTP error from remote mail server after RCPT TO:")
                assert recipient.reason.replace(" ", "") == last[-1].partition(": ")[2].replace("\\n", "").replace(
                    " ", "")


def test_the_collector_totals(spool: Path) -> None:
    """Queue gauges per lane and queue, and qshape's view of the waiting recipients."""
    queue = collector(spool)
    assert queue.run_refresh()
    samples = collect_samples([queue])
    assert series(samples, "mtaq_up", "mta") == {"exim": 1}
    assert series(samples, "mtaq_queue_messages", "queue") == {"queued": 12, "frozen": 2}
    assert series(samples, "mtaq_queue_recipients", "queue") == {"queued": 12, "frozen": 2}
    assert sum(series(samples, "mtaq_queue_size_bytes", "queue").values()) == sum(
        m.size for m in spool_messages().values())
    oldest = {labels["queue"]: value for labels, value in samples["mtaq_queue_oldest_message_timestamp_seconds"]}
    assert math.floor(oldest["queued"]) == min(id_time(i) for i, b in LISTED.items() if not b["frozen"])
    expected = Counter(PROVIDERS[address.rpartition("@")[2]]
                       for listed in LISTED.values() if not listed["frozen"] for address in listed["recipients"])
    deferred = series(samples, "mtaq_queue_deferred_recipients", "provider", "reason")
    assert Counter({provider: n for (provider, _), n in deferred.items()}) == expected
    assert {reason for (_, reason) in deferred} == {"rate_limited", "mailbox_full"}
    assert deferred[("apple", "mailbox_full")] == expected["apple"]
    assert series(samples, "mtaq_queue_source_info", "source", "path") == {("spool", str(spool)): 1}


def test_a_non_split_spool_reads_the_same(spool: Path) -> None:
    for sub in ("input", "msglog"):
        for path in list((spool / sub).glob("*/*")):
            path.rename(spool / sub / path.name)
    assert {i: (m.queue, m.recipients, m.size) for i, m in spool_messages(spool).items()} == {
        i: (m.queue, m.recipients, m.size) for i, m in spool_messages().items()}


def test_an_attempt_in_progress_counts_its_journal_as_delivered(spool: Path) -> None:
    message_id = next(i for i, b in LISTED.items() if b["recipients"] == ["late@gmail.com"])
    (spool / "input" / message_id[5] / f"{message_id}-J").write_text("late@gmail.com\n")
    assert spool_messages(spool)[message_id].recipients == ()


# -- incremental scans: unchanged messages are not read again ----------------------------------

TOTALS = ("mtaq_queue_messages", "mtaq_queue_recipients", "mtaq_queue_size_bytes",
          "mtaq_queue_oldest_message_timestamp_seconds", "mtaq_queue_deferred_recipients",
          "mtaq_queue_skipped_messages")


def totals(queue: QueueCollector) -> dict[str, list]:
    """The queue totals of ``queue``'s last scan, in a comparable order."""
    samples = collect_samples([queue])
    return {name: sorted(samples.get(name, []), key=repr) for name in TOTALS}


INOTIFY = pytest.mark.parametrize("inotify", [True, False], ids=["inotify", "walks"])


def reader_of(queue: QueueCollector) -> EximQueueReader:
    reader = queue.readers[0]
    assert isinstance(reader, EximQueueReader)
    return reader


def rescan(queue: QueueCollector) -> int:
    """Scan again; how many messages that scan read. With inotify, every scan after the first is
    an update; without, a walk."""
    assert queue.run_refresh()
    reader = reader_of(queue)
    first = reader.walk == "nothing cached yet"
    assert first or reader.walk == (None if reader.tracker.inotify else "no inotify"), reader.walk
    return reader.last_read


def as_read_afresh(spool: Path) -> dict[str, list]:
    """The reference: a new collector's first scan, every message read."""
    queue = collector(spool, inotify=False)
    assert queue.run_refresh()
    return totals(queue)


def _rewrite(path: Path, old: bytes, new: bytes) -> None:
    """As Exim rewrites a -H file: a new file renamed over the old one (a new inode)."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(path.read_bytes().replace(old, new, 1))
    temporary.rename(path)


@INOTIFY
def test_a_rescan_of_an_unchanged_spool_reads_nothing(spool: Path, inotify: bool) -> None:
    queue = collector(spool, inotify)
    assert rescan(queue) == len(LISTED)
    first = totals(queue)
    assert rescan(queue) == 0 and totals(queue) == first


@INOTIFY
def test_a_rewritten_header_file_is_read_again(spool: Path, inotify: bool) -> None:
    """Frozen by an operator (exim -Mf): Exim writes the -H file anew with a -frozen line."""
    queue = collector(spool, inotify)
    rescan(queue)
    _rewrite(spool / "input" / "E" / f"{VALID_ID}-H", b"\n-host_address", b"\n-frozen 1796139600\n-host_address")
    assert rescan(queue) == 1
    assert series(collect_samples([queue]), "mtaq_queue_messages", "queue") == {"queued": 11, "frozen": 3}
    assert totals(queue) == as_read_afresh(spool)


@INOTIFY
def test_a_defer_appended_to_the_message_log_changes_the_reason(spool: Path, inotify: bool) -> None:
    queue = collector(spool, inotify)
    rescan(queue)
    deferred = series(collect_samples([queue]), "mtaq_queue_deferred_recipients", "provider", "reason")
    assert deferred[("google", "rate_limited")] == 4 and ("google", "self") not in deferred
    with (spool / "msglog" / "E" / VALID_ID).open("a") as msglog:
        msglog.write("2026-12-01 16:00:00.000 +0000 late@gmail.com R=to_provider T=remote_smtp defer (-53): "
                     "retry time not reached for any host for 'gmail.com'\n")
    assert rescan(queue) == 1
    deferred = series(collect_samples([queue]), "mtaq_queue_deferred_recipients", "provider", "reason")
    assert deferred[("google", "rate_limited")] == 3 and deferred[("google", "self")] == 1  # Exim's own retry wait
    assert totals(queue) == as_read_afresh(spool)


@INOTIFY
def test_a_message_that_left_the_queue_leaves_the_totals(spool: Path, inotify: bool) -> None:
    queue = collector(spool, inotify)
    rescan(queue)
    for suffix in ("-H", "-D"):
        (spool / "input" / "E" / f"{VALID_ID}{suffix}").unlink()
    assert rescan(queue) == 0
    assert sum(series(collect_samples([queue]), "mtaq_queue_messages", "queue").values()) == len(LISTED) - 1
    assert totals(queue) == as_read_afresh(spool)


@INOTIFY
def test_a_message_with_a_journal_is_read_until_the_attempt_ends(spool: Path, inotify: bool) -> None:
    """A -J journal (an attempt in progress) grows without touching the -H file."""
    queue = collector(spool, inotify)
    rescan(queue)
    journal = spool / "input" / "E" / f"{VALID_ID}-J"
    journal.write_text("late@gmail.com\n")
    assert rescan(queue) == 1 and rescan(queue) == 1
    assert totals(queue) == as_read_afresh(spool)
    journal.unlink()  # the attempt failed (Exim would rewrite the -H file; here it stays as it was)
    assert rescan(queue) == 1 and rescan(queue) == 0
    assert totals(queue) == as_read_afresh(spool)


@INOTIFY
def test_a_scan_cut_short_keeps_consistent_totals_and_the_next_completes(spool: Path, inotify: bool) -> None:
    queue = collector(spool, inotify)
    rescan(queue)
    before = totals(queue)
    for message_id in sorted(LISTED)[:4]:
        for path in (spool / "input" / message_id[5]).glob(f"{message_id}-*"):
            path.unlink()
    queue.read_timeout = 1e-9
    assert not queue.run_refresh()
    assert totals(queue) == before  # the last complete scan's totals stand while down
    queue.read_timeout = 30
    assert rescan(queue) == 0
    assert totals(queue) == as_read_afresh(spool)
    assert sum(series(collect_samples([queue]), "mtaq_queue_messages", "queue").values()) == len(LISTED) - 4


def test_a_message_arriving_between_walks_is_read_by_an_update(spool: Path) -> None:
    queue = collector(spool)
    rescan(queue)
    new_id = "1xYPwE-0006Zz-2c"
    directory = spool / "input" / "E"
    (directory / f"{new_id}-D").write_bytes((directory / f"{VALID_ID}-D").read_bytes().replace(
        VALID_ID.encode(), new_id.encode(), 1))
    (directory / f"{new_id}-H.tmp").write_bytes(VALID.replace(VALID_ID.encode(), new_id.encode(), 1))
    (directory / f"{new_id}-H.tmp").rename(directory / f"{new_id}-H")  # as Exim does: written, then renamed
    assert rescan(queue) == 1
    assert sum(series(collect_samples([queue]), "mtaq_queue_messages", "queue").values()) == len(LISTED) + 1
    assert totals(queue) == as_read_afresh(spool)


def test_a_new_split_directory_makes_the_next_scan_walk(spool: Path) -> None:
    """A subdirectory that appears is not watched yet: its messages are found by a walk."""
    queue = collector(spool)
    rescan(queue)
    new_id = "1xYPwZ-0006Zz-2c"
    (spool / "input" / "Z").mkdir()
    (spool / "input" / "Z" / f"{new_id}-H").write_bytes(VALID.replace(VALID_ID.encode(), new_id.encode(), 1))
    assert queue.run_refresh()
    assert reader_of(queue).walk == f"new directory {spool}/input/Z"
    assert totals(queue) == as_read_afresh(spool)
    assert rescan(queue) == 0


def test_a_flat_spool_is_followed_too(spool: Path) -> None:
    for sub in ("input", "msglog"):
        for path in list((spool / sub).glob("*/*")):
            path.rename(spool / sub / path.name)
        for directory in (spool / sub).glob("?"):
            directory.rmdir()
    queue = collector(spool)
    assert rescan(queue) == len(LISTED)
    _rewrite(spool / "input" / f"{VALID_ID}-H", b"\n-host_address", b"\n-frozen 1796139600\n-host_address")
    waiting = next(i for i in sorted(LISTED) if not LISTED[i]["frozen"] and i != VALID_ID)
    with (spool / "msglog" / waiting).open("a") as msglog:
        msglog.write("2026-12-01 16:00:00.000 +0000 x@gmail.com R=to_provider T=remote_smtp defer (-53): "
                     "retry time not reached for any host for 'gmail.com'\n")
    assert rescan(queue) == 2
    assert totals(queue) == as_read_afresh(spool)


def test_the_periodic_walk_and_the_source_line(spool: Path) -> None:
    queue = collector(spool)
    rescan(queue)
    reader = reader_of(queue)
    assert "incremental: inotify, full walk every 3600 s" in reader.source()
    reader.tracker.full_scan_interval = 1e-6
    assert queue.run_refresh() and reader.walk == "periodic" and reader.last_read == 0
    assert "every scan stats every file (inotify off)" in reader_of(collector(spool, inotify=False)).source()


# -- hostile spool files ----------------------------------------------------------------------

VALID = (SPOOL / "input" / "E" / "1xYPwE-0006Mc-2c-H").read_bytes()
VALID_ID = "1xYPwE-0006Mc-2c"


@pytest.mark.parametrize(("data", "why"), [
    (b"", "unexpected end"),
    (VALID[:40], "unexpected end"),
    (VALID.replace(b"1xYPwE-0006Mc-2c-H", b"1xYPwE-0006Mc-2X-H", 1), "not the file's own name"),
    (VALID.replace(b"<billing@shop.example.com>", b"billing@shop.example.com", 1), "sender"),
    (VALID.replace(b"1796139518 0", b"yesterday 0", 1), "time line"),
    (VALID.replace(b"NN paid@example.com", b"QQ paid@example.com", 1), "non-recipients"),
    (VALID.replace(b"NN paid@example.com", b"YN paid@example.com", 1), "non-recipients"),
    (VALID.replace(b"\n2\npaid", b"\n99999\npaid", 1), "recipient count"),
    (VALID.replace(b"\n2\npaid", b"\ntwo\npaid", 1), "recipient count"),
    (VALID.replace(b"late@gmail.com\n\n", b"late@gmail.com\nX\n", 1), "blank line"),
    (VALID[:VALID.index(b"166P") + 40], "past the end"),
    (VALID.replace(b"166P", b"16xP", 1), "header length"),
    (b"\x00" * 300 + b"\n", "not the file's own name"),
], ids=["empty", "truncated", "other-name", "sender", "time", "tree-letters", "tree-truncated", "count",
        "count-text", "no-blank", "header-truncated", "header-length", "nul-bytes"])
def test_malformed_header_files_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(SpoolFormatError, match=why):
        parse_header(data, VALID_ID)


def test_a_malformed_header_file_is_counted_and_left_out(spool: Path) -> None:
    """One broken -H file: left out of every total, counted as skipped; the other messages stand."""
    (spool / "input" / "E" / f"{VALID_ID}-H").write_bytes(VALID[:120])
    (spool / "input" / "E" / "hdr.12345").write_text("a temporary file of a message being received")
    (spool / "input" / "E" / "not-a-message-H").write_text("ignored: not an id")
    queue = collector(spool)
    assert queue.run_refresh()
    samples = collect_samples([queue])
    assert sum(series(samples, "mtaq_queue_messages", "queue").values()) == len(LISTED) - 1
    assert series(samples, "mtaq_queue_skipped_messages", "reason") == {"malformed": 1}


def test_recipient_line_formats_of_every_exim_generation() -> None:
    """Data after the address, read from the end as spool_in.c does (DSN orcpt, errors_to, parent)."""
    base = VALID.split(b"\n2\npaid@example.com\nlate@gmail.com\n", 1)
    lines = [b"plain@example.com", b"exim3@example.com 0,1,0", b"early@example.com 3",
             b"one@example.com errors@example.com 18,-1#1",
             b"dsn@example.com rfc822;dsn@example.com 22,6 errors@x.example 16,-1#3",
             b"dsn2@example.com  0,0  0,-1#3", b"with space@example.com"]
    data = base[0] + b"\n%d\n" % len(lines) + b"\n".join(lines) + b"\n" + base[1]
    header = parse_header(data.replace(b"NN paid@example.com", b"XX"), VALID_ID)
    assert header.recipients == ("plain@example.com", "exim3@example.com", "early@example.com", "one@example.com",
                                 "dsn@example.com", "dsn2@example.com", "with space@example.com")


def test_acl_variables_with_newlines_do_not_derail_the_parse() -> None:
    value = b"line one\nline two\n-frozen 0\nXX"
    data = VALID.replace(b"-tls_resumption A\n", b"-aclm greeting %d\n%s\n-tls_resumption A\n" % (len(value), value))
    header = parse_header(data, VALID_ID)
    assert not header.frozen and header.recipients == ("paid@example.com", "late@gmail.com")


def test_a_four_ninety_seven_message_id() -> None:
    """Exim 4.97's 23-character ids in file names and contents (exim_exporter#59: silently zero)."""
    long_id = "1xYPwE-00000006Mc0-2c0a"
    data = VALID.replace(VALID_ID.encode(), long_id.encode(), 1)  # its first line: its own name
    header = parse_header(data, long_id)
    assert header.message_id == long_id and header.delivered == frozenset({"paid@example.com"})


def test_a_long_id_spool_is_read(spool: Path) -> None:
    long_id = "1xYPwE-00000006Mc0-2c0a"
    directory = spool / "input" / "E"
    (directory / f"{long_id}-H").write_bytes(VALID.replace(VALID_ID.encode(), long_id.encode(), 1))
    (directory / f"{long_id}-D").write_bytes((directory / f"{VALID_ID}-D").read_bytes().replace(
        VALID_ID.encode(), long_id.encode(), 1))
    found = spool_messages(spool)
    assert found[long_id].size == found[VALID_ID].size  # -bp's size leaves out the data file's first line
    assert [r.address for r in found[long_id].recipients] == ["late@gmail.com"]


# -- time budget, errors, fallback listing ------------------------------------------------------

def test_a_read_past_its_deadline_reports_down_and_keeps_the_last_complete_scan(spool: Path) -> None:
    queue = collector(spool)
    assert queue.run_refresh()
    before = collect_samples([queue])["mtaq_queue_messages"]
    queue.read_timeout = 1e-9  # the next read cannot finish in time
    assert not queue.run_refresh()
    assert "timed out" in (queue.health.view().last_error or "")
    samples = collect_samples([queue])
    assert series(samples, "mtaq_up", "mta") == {}  # 0: never partial totals
    assert samples["mtaq_queue_messages"] == before
    with pytest.raises(ReadTimeout):
        spool_messages(spool, deadline=1e-9)


def test_a_missing_spool_is_an_error_without_fallback(tmp_path: Path) -> None:
    reader = EximQueueReader(EximInstance(spool_directory=str(tmp_path / "nowhere"), binary="/bin/false"))
    assert reader.preflight() == [f"exim instance exim: spool directory {tmp_path / 'nowhere'} does not exist"]
    with pytest.raises(FileNotFoundError):
        list(reader.read(Deadline(5)))
    assert reader.source_info == ("spool", str(tmp_path / "nowhere"))


def test_the_listing_decodes_as_the_spool_reads() -> None:
    """``exim -bp`` output of the same spool: ids, frozen, recipients; sizes as precise as -bp."""
    listed = {m.queue_id: m for m in decode_bp(BP.splitlines(), now=2e9)}
    ours = spool_messages()
    assert set(listed) == set(ours)
    for message_id, message in listed.items():
        assert (message.queue, message.sender) == (ours[message_id].queue, ours[message_id].sender)
        assert [r.address for r in message.recipients] == [r.address for r in ours[message_id].recipients]
        assert format_size(message.size) == format_size(ours[message_id].size)
        assert message.arrival == id_time(message_id)


@pytest.mark.parametrize("line", ["exim: permission denied (not an admin user)", "\x00\x01 binary", "25m"])
def test_a_listing_with_foreign_lines_is_refused(line: str) -> None:
    with pytest.raises(ValueError, match="not an exim -bp line"):
        list(decode_bp([*BP.splitlines()[:3], line], now=2e9))


@pytest.mark.parametrize("text", [
    "      1xYPwE-0006Mc-2c\n    *** spool format error: size=120 ***\n",  # the envelope is unreadable
    " 5m   385 1xYPwE-0006Mc-2c <x@example.com>\n    *** spool format error: size=2000 ***\n"
    "          a@example.com\n",  # the headers part is
    " 5m   385 1xYPwE-0006Mc-2c <x@example.com>\n    *** spool read error: Permission denied ***\n"])
def test_a_spool_error_in_the_listing_is_counted_not_totalled(text: str) -> None:
    """queue.c's layout of a message it cannot read: left out of the totals, as the spool reader does."""
    (message,) = decode_bp(text.splitlines(), now=2e9)
    assert math.isnan(message.arrival)
    assert len(list(decode_bp((text + BP).splitlines(), now=2e9))) == len(LISTED) + 1


def test_section_defaults_and_validation() -> None:
    assert not EximSection().queue_enabled() and not EximSection().log_enabled()
    assert EximSection(instances=[EximInstance()]).queue_enabled()
    assert not EximSection(instances=[EximInstance(log_path="/x")], enabled=False).log_enabled()
    with pytest.raises(ValueError, match="unique"):
        EximSection(instances=[EximInstance(), EximInstance()])
    with pytest.raises(ValueError, match="must not exceed"):
        EximSection(queue_scan_interval=10, queue_read_timeout=20)

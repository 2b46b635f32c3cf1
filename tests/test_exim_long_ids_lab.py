"""Exim 4.97 and later write 23-character message ids (``exim_exporter`` counted such a queue as
empty, its issue #59). A real Exim 4.98 from Debian 12's backports (``install_backport()`` in
``tests/lab/exim.py``) queues mail in a split spool; a recipient is marked delivered and a message
frozen by Exim's own commands. The spool reader, the incremental scan and the log parser must
read exactly what that Exim lists and logs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import ClassificationConfig, Classifier
from collectors.deadline import Deadline
from collectors.delivery_accounting import merge_snapshots
from collectors.exim.instance import EximInstance, EximQueueReader
from collectors.exim.log_events import EXIM_LOG
from collectors.exim.message_id import is_message_id
from collectors.log_pipeline import LogProcessor
from tests.exim_reference import format_size, listing
from tests.helpers import FakeClock
from tests.lab import exim as exim_lab
from tests.test_exim_queue import as_read_afresh, collector, totals

pytestmark = pytest.mark.lab

MAIL = [("billing@shop.example.com", ["paid@example.com", "late@gmail.com"]),
        ("ops@alerts.example.com", ["a@icloud.com"]),
        ("news@bulk.example.com", ["x@yahoo.com", "y@outlook.com", "z@gmx.de"])]


class NewExim:
    """An Exim 4.97+ run directly on its own spool (no daemon): ``exim -C <config> args``."""

    def __init__(self, root: Path) -> None:
        exim_lab.install()  # the Debian-exim user and the libraries both versions need
        self.binary = exim_lab.install_backport()
        self.spool = root / "spool"
        self.mainlog = root / "log" / "mainlog"
        for directory in (self.spool, self.mainlog.parent):
            directory.mkdir(parents=True)
            directory.chmod(0o750)
            subprocess.run(["chown", f"{exim_lab.USER}:{exim_lab.USER}", str(directory)], check=True)
        for directory in (root, *root.parents):  # Debian-exim must reach its spool
            if directory.stat().st_mode & 0o005 != 0o005:
                directory.chmod(directory.stat().st_mode | 0o005)
        self.config = root / "exim.conf"
        self.config.write_text("\n".join([
            "primary_hostname = mta.lab.test", f"exim_user = {exim_lab.USER}", f"exim_group = {exim_lab.USER}",
            "keep_environment =", f"spool_directory = {self.spool}", f"log_file_path = {root}/log/%slog",
            "split_spool_directory = true", "log_selector = +millisec +pid", "log_timezone = true",
            "begin routers", "begin transports", ""]))

    def run(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run([str(self.binary), "-C", str(self.config), *args], input=stdin, capture_output=True,
                              text=True, check=False, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout


@pytest.fixture(scope="module")
def exim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NewExim]:
    reason = exim_lab.available()
    if reason:
        pytest.skip(reason)
    if exim_lab.debian_codename() != "bookworm":
        pytest.skip("Exim 4.97+ comes from Debian 12's backports here; this host is no Debian 12")
    new = NewExim(tmp_path_factory.mktemp("exim-4.9x"))
    for n, (sender, recipients) in enumerate(MAIL):
        new.run("-odq", "-f", sender, *recipients, stdin=f"Subject: message {n}\n\nbody {n}\n")
    yield new


def test_the_new_exim_writes_23_character_ids(exim: NewExim) -> None:
    assert exim.run("-bV").startswith("Exim version 4.9") and "4.96" not in exim.run("-bV").split("\n")[0]
    ids = list(listing(exim.run("-bp")))
    assert len(ids) == len(MAIL) and all(len(i) == 23 and is_message_id(i) for i in ids)


def test_the_spool_reads_as_the_new_exim_lists_it(exim: NewExim) -> None:
    """After ``-Mmd`` (a recipient marked delivered) and ``-Mf`` (frozen): ids, frozen flags,
    senders, sizes and waiting recipients equal ``exim -bp``, totals ``exim -bpc``."""
    before = listing(exim.run("-bp"))
    first, second = (i for i, b in before.items() if b["sender"] in ("billing@shop.example.com",
                                                                    "ops@alerts.example.com"))
    exim.run("-Mmd", first, "paid@example.com")
    exim.run("-Mf", second)
    listed = listing(exim.run("-bp"))
    reader = EximQueueReader(EximInstance(name="exim-new", spool_directory=str(exim.spool)))
    ours = {m.queue_id: m for m in reader.read(Deadline(30))}
    assert set(ours) == set(listed) and len(ours) == int(exim.run("-bpc"))
    for message_id, entry in listed.items():
        message = ours[message_id]
        assert (message.queue, message.sender, format_size(message.size)) == (
            "frozen" if entry["frozen"] else "queued", entry["sender"], entry["size"])
        assert [r.address for r in message.recipients] == entry["recipients"]
    assert [r.address for r in ours[first].recipients] == ["late@gmail.com"]
    assert ours[second].queue == "frozen"


def test_the_incremental_scan_follows_the_new_exim(exim: NewExim) -> None:
    queue = collector(exim.spool)
    assert queue.run_refresh()
    target = next(i for i, b in listing(exim.run("-bp")).items() if not b["frozen"])
    steps = [("-Mf", target), ("-Mt", target), ("-odq", "-f", "late@shop.example.com", "w@gmail.com")]
    for step in steps:
        exim.run(*step, stdin="Subject: later\n\nlater\n" if step[0] == "-odq" else None)
        assert queue.run_refresh()
        assert totals(queue) == as_read_afresh(exim.spool), step
        assert sum(value for _, value in totals(queue)["mtaq_queue_messages"]) == int(exim.run("-bpc"))


def test_the_new_exim_log_counts_each_message_once(exim: NewExim) -> None:
    lines = exim.mainlog.read_text().splitlines()
    processor = LogProcessor(EXIM_LOG, Classifier(ClassificationConfig()), clock=FakeClock(2e9))
    processor.process_lines("mainlog", lines)
    snap = merge_snapshots(processor.accounts.snapshots().values())
    arrivals = [line for line in lines if " <= " in line]
    assert len(arrivals) >= len(MAIL)
    assert sum(snap.messages_received.values()) == len(arrivals)
    assert snap.tracked_messages == len(arrivals)  # one per 23-character id, none lost to the id's length

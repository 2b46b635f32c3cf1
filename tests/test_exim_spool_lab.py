"""The Exim queue followed between walks with inotify, against a real Exim: while it takes in,
defers, retries, delivers and bounces mail, and while an operator freezes, thaws, removes and
forces messages, every scan's totals equal a full read of the spool, and the queue's size equals
``exim -bpc`` (a queue run may change the spool between two reads: the next scan converges).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from collectors.queue_collector import QueueCollector
from tests.exim_reference import listing
from tests.lab import exim as exim_lab
from tests.lab.postfix import send_traffic
from tests.test_exim_queue import as_read_afresh, collector, reader_of, totals

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[exim_lab.EximLab]:
    reason = exim_lab.available()
    if reason:
        pytest.skip(reason)
    lab, provider = exim_lab.start_lab(tmp_path_factory.mktemp("exim-spool"), split_spool=True)
    try:
        yield lab
    finally:
        lab.stop()
        provider.stop()


def converge(queue: QueueCollector, lab: exim_lab.EximLab) -> None:
    """A scan whose totals equal a full read and ``exim -bpc``, within a few tries."""
    for _ in range(10):
        assert queue.run_refresh()
        ours = totals(queue)
        if ours == as_read_afresh(lab.spool) and sum(
                v for _, v in ours["mtaq_queue_messages"]) == lab.bpc():
            return
        time.sleep(0.3)
    raise AssertionError(f"the scans did not converge: {ours} vs {as_read_afresh(lab.spool)}, bpc {lab.bpc()}")


def test_updates_follow_what_exim_and_its_operator_do(lab: exim_lab.EximLab) -> None:
    queue = collector(lab.spool)
    reader = reader_of(queue)

    def waiting() -> str:
        return next(i for i, b in listing(lab.bp()).items() if not b["frozen"])

    steps: list[tuple[str, Callable[[], object]]] = [
        ("traffic", lambda: send_traffic(lab, rounds=1)),  # type: ignore[arg-type] - it only needs send()
        ("delivered and deferred", lambda: lab.send("billing@shop.example.com", ["paid@example.com",
                                                                                 "late@gmail.com"])),
        ("a queue run", lab.queue_run),
        ("frozen", lambda: lab.run("-Mf", waiting(), check=True)),
        ("thawed", lambda: lab.run("-Mt", next(i for i, b in listing(lab.bp()).items() if b["frozen"]),
                                   check=True)),
        ("forced", lambda: lab.run("-M", waiting())),
        ("removed", lambda: lab.run("-Mrm", waiting(), check=True)),
        ("another queue run", lab.queue_run),
    ]
    converge(queue, lab)
    assert reader.walk == "nothing cached yet"
    kinds = []
    for _, step in steps:
        step()
        converge(queue, lab)
        kinds.append((reader.walk, reader.last_read))
    assert kinds[0][0] == f"new directory {lab.spool}/input", kinds  # Exim made it with its first message
    # Walks only for split-spool directories Exim made for a new message (not watched yet); for
    # anything else inotify saw the change.
    assert all(walk is None or walk.startswith(f"new directory {lab.spool}/input/") for walk, _ in kinds[1:]), kinds
    updates = [read for walk, read in kinds if walk is None]
    assert len(updates) >= len(steps) // 2, kinds
    assert lab.bpc() > 10 and max(updates) < lab.bpc(), kinds  # each update read only what changed

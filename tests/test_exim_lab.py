"""End to end with a real Exim: the queue equals ``exim -bp``/``-bpc``, every log counter equals an
independent count of the same main log.

Exim 4.96 (Debian's ``exim4-daemon-light``, unpacked by ``tests/lab/exim.py``) relays to the
provider simulator, each provider on its own loopback address, with retries every 15 s that run
out after a minute. While mail is deferred the queue is compared with Exim's own listing; once
every retry has run out the log is compared with counts made below from the raw main log with
plain string handling, apart from the agent's parser.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.classify import Classifier
from collectors.deadline import Deadline
from collectors.exim.instance import EximInstance, EximQueueReader
from collectors.exim.message_id import id_time
from collectors.queue_model import QueueMessage
from exporter.agent import build_collectors
from exporter.config import load_config
from exporter.summary import collect_samples
from tests.exim_reference import format_size, line_results, listing, reference, series
from tests.lab import exim as exim_lab
from tests.lab.postfix import send_traffic

pytestmark = pytest.mark.lab

LAB = {"local_delivery": {"loopback": False}, "postfix": {"enabled": False}}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[exim_lab.EximLab]:
    reason = exim_lab.available()
    if reason:
        pytest.skip(reason)
    lab, provider = exim_lab.start_lab(tmp_path_factory.mktemp("exim"))
    try:
        send_traffic(lab, rounds=1)  # type: ignore[arg-type] - it only needs send()
        # Two recipients, one delivered at once: the -H file's delivered tree marks it.
        lab.send("billing@shop.example.com", ["paid@example.com", "late@gmail.com"])
        lab.send("billing@shop.example.com", ["a@icloud.com", "b@icloud.com"])
        # A sender whose bounce fails too: Exim freezes the bounce.
        lab.send("postmaster@gmx.de", ["nobody@gmx.de"])
        lab.wait_for(lambda: "Frozen (delivery error message)" in lab.mainlog.read_text(), 60, "a frozen bounce")
        yield lab
    finally:
        lab.stop()
        provider.stop()


def _read(lab: exim_lab.EximLab) -> tuple[list[QueueMessage], dict[str, dict[str, Any]], float, float]:
    before = time.time()
    bp = listing(lab.bp())
    after = time.time()
    reader = EximQueueReader(EximInstance(name="exim-lab", spool_directory=str(lab.spool)))
    messages = list(reader.read(Deadline(30)))
    assert reader.source_info == ("spool", str(lab.spool))
    return messages, bp, before, after


def test_the_queue_is_what_exim_lists(lab: exim_lab.EximLab) -> None:
    """Ids, frozen flags, undelivered recipients, senders, sizes and ages equal ``exim -bp``."""
    for _ in range(5):  # a queue run may change the queue between the two reads: read again
        messages, bp, before, after = _read(lab)
        if {m.queue_id for m in messages} == set(bp):
            break
    ours = {m.queue_id: m for m in messages}
    assert set(ours) == set(bp) and len(ours) == len(messages)
    assert len(ours) == lab.bpc()
    for message_id, listed in bp.items():
        message = ours[message_id]
        assert message.queue == ("frozen" if listed["frozen"] else "queued"), message_id
        assert [r.address for r in message.recipients] == listed["recipients"], message_id
        assert message.sender == listed["sender"]
        assert format_size(message.size) == listed["size"], message_id
        minutes = {int((t - message.arrival) // 60) * 60 for t in (before, after)}
        assert listed["age"] in minutes, message_id
        assert int(message.arrival) in (id_time(message_id), id_time(message_id) - 1)  # type: ignore[operator]
    assert sum(1 for m in messages if m.queue == "frozen") == sum(1 for b in bp.values() if b["frozen"]) >= 1
    partly = next(m for m in messages if any(r.address == "late@gmail.com" for r in m.recipients))
    assert [r.address for r in partly.recipients] == ["late@gmail.com"]  # paid@example.com is delivered


def test_the_queue_collector_matches_exim_bpc(lab: exim_lab.EximLab) -> None:
    """Totals, the frozen count and the oldest arrival per lane, and each deferred recipient's reason."""
    config = load_config(environ={}, overrides={**LAB, "exim": {"instances": [
        {"name": "exim-lab", "spool_directory": str(lab.spool)}]}})
    (collector,) = build_collectors(config, Classifier(config))
    lab.run("-Mf", next(i for i, b in listing(lab.bp()).items() if not b["frozen"]))  # an administrator freezes one
    for _ in range(5):
        assert collector.run_refresh()
        bp = listing(lab.bp())
        samples = collect_samples([collector])
        if sum(series(samples, "mtaq_queue_messages", "queue").values()) == len(bp):
            break
    assert series(samples, "mtaq_up", "mta_instance") == {"exim-lab": 1}
    assert sum(series(samples, "mtaq_queue_messages", "queue").values()) == len(bp)
    assert series(samples, "mtaq_queue_messages", "queue")["frozen"] == sum(b["frozen"] for b in bp.values()) >= 2
    assert sum(series(samples, "mtaq_queue_recipients", "queue").values()) == sum(
        len(b["recipients"]) for b in bp.values())
    oldest = min(v for _, v in samples["mtaq_queue_oldest_message_timestamp_seconds"])
    assert math.floor(oldest) == min(id_time(i) for i in bp) or math.floor(oldest) + 1 == min(id_time(i) for i in bp)
    deferred = series(samples, "mtaq_queue_deferred_recipients", "provider", "reason")
    assert deferred[("google", "rate_limited")] >= 1 and deferred[("microsoft", "rate_limited")] >= 1
    assert deferred[("yahoo", "rate_limited")] >= 1 and deferred[("apple", "mailbox_full")] >= 1
    assert set(p for p, _ in deferred) <= {"google", "yahoo", "microsoft", "apple"}


@pytest.mark.parametrize("spool_mode", [None, 0o750], ids=["input-closed", "spool-closed"])
def test_the_exim_bp_fallback_as_an_unprivileged_user(lab: exim_lab.EximLab, spool_mode: int | None) -> None:
    """``nobody`` cannot list the spool (``input/``, or the spool directory itself as Debian makes
    it); ``exim -bp`` (setuid, ``queue_list_requires_admin = false`` in Exim's default configuration
    file) lists it for the reader, with the same messages."""
    default = Path("/etc/exim4/exim4.conf")
    if default.exists() or default.parent.exists():
        pytest.skip("/etc/exim4 exists on this host: its Exim configuration is not the lab's to replace")
    default.parent.mkdir()
    mode = lab.spool.stat().st_mode & 0o7777
    if spool_mode is not None:
        lab.spool.chmod(spool_mode)
    try:
        default.write_text(lab.config.read_text().replace("keep_environment =",
                                                          "keep_environment =\nqueue_list_requires_admin = false"))
        reader = EximQueueReader(EximInstance(name="exim-lab", spool_directory=str(lab.spool), binary=lab.exim))
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child reads as nobody, like an agent outside the Exim group
            os.close(read_fd)
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                found = [(m.queue_id, m.queue, len(m.recipients)) for m in reader.read(Deadline(30))]
                os.write(write_fd, json.dumps([reader.source_info, found]).encode())
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:
            answer = pipe.read()
        os.waitpid(pid, 0)
    finally:
        shutil.rmtree(default.parent)
        lab.spool.chmod(mode)
    source, found = json.loads(answer)
    assert source == ["exim_bp", f"{lab.exim} -bp"]
    expected = listing(lab.bp())
    assert {qid for qid, _, _ in found} == set(expected)
    assert {(qid, queue, n) for qid, queue, n in found} == {
        (qid, "frozen" if b["frozen"] else "queued", len(b["recipients"])) for qid, b in expected.items()}


def test_log_counters_equal_an_independent_count(lab: exim_lab.EximLab) -> None:
    """Once every retry has run out: received, sent, deferrals by provider and reason (throttle
    replies of Gmail, Yahoo and Microsoft are rate_limited), self-inflicted deferrals, hard and
    soft bounces and dead letters equal the count made from the raw log."""
    lab.wait_for(lambda: all(b["frozen"] for b in listing(lab.bp()).values()), 240,
                 "every retry to run out (only frozen messages left)")
    config = load_config(environ={}, overrides={**LAB, "log": {"from": "start"}, "exim": {
        "instances": [{"name": "exim-lab", "log_path": str(lab.mainlog)}]}, "collectors": {"exim_queue": False}})
    (collector,) = build_collectors(config, Classifier(config))
    lines = lab.mainlog.read_text().splitlines()
    collector.process_lines(str(lab.mainlog), lines)
    samples = collect_samples([collector])
    expected = reference(lines)
    assert series(samples, "mtaq_messages_received_total", "mta_instance") == {"exim-lab": expected["received"][()]}
    assert series(samples, "mtaq_delivery_attempts_total", "provider", status="sent") == expected["sent"]
    deferrals = series(samples, "mtaq_deferrals_total", "provider", "reason")
    assert deferrals == expected["deferrals"]
    for provider in ("google", "yahoo", "microsoft"):
        assert deferrals[(provider, "rate_limited")] >= 1, provider
    # Whether a queue run meets a message before its retry time is timing: a run may have none,
    # and then no series (the bundled lab log has them: tests/test_exim_log.py).
    assert series(samples, "mtaq_self_deferrals_total", "mta")["exim"] == expected["self"][()]
    assert series(samples, "mtaq_bounces_total", "provider", "type", "reason") == expected["bounces"]
    assert series(samples, "mtaq_dead_letters_total", "provider", "reason") == expected["dead_letters"]
    assert sum(expected["dead_letters"].values()) >= 4
    assert series(samples, "mtaq_notifications_total", "type")["non_delivery"] == expected["notifications"][()]
    assert series(samples, "mtaq_log_lines_total", "result") == line_results(lines)

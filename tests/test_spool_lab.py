"""The spool reader against a real Postfix: after real deferrals (the provider simulator's replies)
and with messages on hold, every message it reads equals what ``postqueue -j`` and the showq
socket list, at 0, 1 and 1k messages, and the incrementally kept queue families equal the showq
collector's. While Postfix is delivering, the only differences allowed are messages that changed
between the reads (they differ between two ``postqueue -j`` listings around them); once delivery
settles, the next scan agrees exactly; with inotify following the queue between walks, dozens of
scans while Postfix delivers, defers, retries, holds, releases, requeues and deletes converge to
showq's totals exactly. The 100k and 1M cases are ``bench/spool_bench.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import ClassificationConfig, Classifier
from collectors.deadline import Deadline
from collectors.postfix.instance import PostfixInstance, PostfixQueueReader, spool_reader
from collectors.postfix.showq import POSTFIX_QUEUES, decode_postqueue_json
from collectors.postfix.spool import SpoolQueueReader
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage
from exporter.registry import build_registry
from tests.helpers import wait_until
from tests.lab.postfix import TRAFFIC, PostfixLab, send_traffic, start_lab

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parent.parent

LANES = ClassificationConfig.model_validate({"lanes": {"rules": [
    {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
    {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]}})
#: Families whose values are the same whichever way the queue was read.
QUEUE_FAMILIES = ("mtaq_up", "mtaq_queue_messages", "mtaq_queue_recipients", "mtaq_queue_size_bytes",
                  "mtaq_queue_oldest_message_timestamp_seconds", "mtaq_queue_deferred_recipients",
                  "mtaq_queue_forced_expire_messages")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[PostfixLab]:
    lab, provider = start_lab(tmp_path)
    try:
        yield lab
    finally:
        lab.abort()
        provider.stop()


def by_id(messages: Iterator[QueueMessage] | list[QueueMessage]) -> dict[str, QueueMessage]:
    return {m.queue_id: m for m in messages}


def postqueue(lab: PostfixLab) -> dict[str, QueueMessage]:
    out = subprocess.run(["postqueue", "-c", str(lab.config_dir), "-j"], capture_output=True, check=True).stdout
    return by_id(decode_postqueue_json(out.splitlines()))


def readers(lab: PostfixLab) -> tuple[SpoolQueueReader, PostfixQueueReader]:
    instance = PostfixInstance(name="postfix-lab", config_dir=str(lab.config_dir), queue_source="spool",
                               spool_files_per_second=0)
    spool = spool_reader(instance)
    assert spool.root == str(lab.queue_dir)  # found through postconf, as the agent finds it
    return spool, PostfixQueueReader(PostfixInstance(name="postfix-lab", showq_path=str(lab.showq_path)))


def compare(lab: PostfixLab, spool: SpoolQueueReader, showq: PostfixQueueReader) -> int:
    """Spool and showq listings equal ``postqueue -j`` for every message that did not change while
    they were read (same in the listings before and after); returns how many did change."""
    before = postqueue(lab)
    from_spool = by_id(spool.read(Deadline(60)))
    from_showq = by_id(showq.read(Deadline(60)))
    after = postqueue(lab)
    unstable = {q for q in before.keys() | after.keys() if before.get(q) != after.get(q)}
    for listing in (from_spool, from_showq):
        stable = {q: m for q, m in listing.items() if q not in unstable}
        assert stable == {q: m for q, m in after.items() if q not in unstable}
    return len(unstable)


def families(collector: QueueCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    assert collector.run_refresh(), collector.health.view().last_error
    out = {}
    for family in build_registry([collector]).collect():
        for s in family.samples:
            if s.name in QUEUE_FAMILIES:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def collectors(lab: PostfixLab) -> tuple[QueueCollector, QueueCollector, SpoolQueueReader, PostfixQueueReader]:
    spool, showq = readers(lab)
    return (QueueCollector("postfix_queue", "postfix", [spool], Classifier(LANES), POSTFIX_QUEUES, read_timeout=60),
            QueueCollector("postfix_queue", "postfix", [showq], Classifier(LANES), POSTFIX_QUEUES, read_timeout=60),
            spool, showq)


def settled(lab: PostfixLab) -> dict[str, QueueMessage]:
    """``postqueue -j`` once two listings a moment apart agree and nothing is active or incoming."""
    previous: list[dict[str, QueueMessage]] = [{}]

    def quiet() -> dict[str, QueueMessage] | None:
        now = postqueue(lab)
        calm = now == previous[0] and not any(m.queue in ("active", "incoming") for m in now.values())
        previous[0] = now
        return now if calm else None

    return wait_until(quiet, timeout=120, interval=0.5, what="the queue to settle")


def hold(lab: PostfixLab, queue_ids: list[str]) -> None:
    for queue_id in queue_ids:
        subprocess.run(["postsuper", "-c", str(lab.config_dir), "-h", queue_id], check=True, capture_output=True)


def test_empty_and_one_message(lab: PostfixLab) -> None:
    by_spool, by_showq, spool, showq = collectors(lab)
    assert compare(lab, spool, showq) == 0 and postqueue(lab) == {}
    empty = families(by_spool)
    assert empty == families(by_showq)
    assert empty[("mtaq_up", (("mta", "postfix"), ("mta_instance", "postfix-lab")))] == 1
    lab.send("ops@alerts.example.com", ["one@gmail.com"])
    queue = settled(lab)
    [message] = queue.values()
    assert message.queue == "deferred" and "421-4.7.28" in message.recipients[0].reason
    assert compare(lab, spool, showq) == 0
    assert families(by_spool) == families(by_showq) != empty


def test_deferred_and_held_messages_equal_showq_and_postqueue(lab: PostfixLab) -> None:
    by_spool, by_showq, spool, showq = collectors(lab)
    families(by_spool)  # the cache fills before the mail arrives: what follows is incremental
    send_traffic(lab)
    queue = settled(lab)
    deferred = sorted(q for q, m in queue.items() if m.queue == "deferred")
    assert len(deferred) == sum(1 for _, domains in TRAFFIC for d in domains
                                if d in ("gmail.com", "yahoo.com", "outlook.com", "icloud.com"))
    families(by_spool)
    hold(lab, deferred[::2])
    subprocess.run(["postsuper", "-c", str(lab.config_dir), "-e", deferred[1]], check=True, capture_output=True)
    queue = postqueue(lab)
    assert sum(1 for m in queue.values() if m.queue == "hold") == len(deferred[::2])
    assert compare(lab, spool, showq) == 0
    got = families(by_spool)
    assert got == families(by_showq)
    # held without being read again; the one marked to expire changed its mode: read again
    assert (spool.stats.moved, spool.stats.read) == (len(deferred[::2]), 1)
    assert sum(v for (name, _), v in got.items() if name == "mtaq_queue_deferred_recipients") == \
        sum(1 for m in queue.values() if m.queue == "deferred" for r in m.recipients if r.reason)


def test_a_thousand_messages_while_postfix_delivers(lab: PostfixLab) -> None:
    by_spool, by_showq, spool, showq = collectors(lab)
    families(by_spool)
    domains = ["gmail.com", "example.com", "yahoo.com", "example.org", "outlook.com"]
    senders = ["ops@alerts.example.com", "billing@shop.example.com", "news@bulk.example.com"]
    changed_while_delivering = []
    for i in range(1000):
        lab.send(senders[i % 3], [f"u{i}@{domains[i % len(domains)]}"])
        if i % 250 == 249:  # read while Postfix is busy with what was just sent
            changed_while_delivering.append(compare(lab, spool, showq))
            families(by_spool)
    queue = settled(lab)
    # gmail, yahoo and outlook defer; the example domains accept (unless a busy moment made one wait)
    assert sum(1 for m in queue.values() if m.recipients[0].address.split("@")[1] in domains[::2]) == 600
    hold(lab, sorted(queue)[:100])
    assert compare(lab, spool, showq) == 0  # converged: nothing moves any more
    assert families(by_spool) == families(by_showq)
    assert sum(1 for m in postqueue(lab).values() if m.queue == "hold") == 100
    print(f"messages that changed between the reads while delivering: {changed_while_delivering}")


@pytest.mark.parametrize("command", [[], ["check-config"]])
def test_without_read_access_the_spool_source_refuses_to_start(lab: PostfixLab, command: list[str]) -> None:
    """Run as ``nobody``, the agent (and check-config) exit 2 naming the key: Postfix's queue
    directories are its own (mode 0700), and the spool source needs Postfix's uid or root."""
    done = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, "-m", "exporter.cli",
         *command, "--postfix.queue-source", "spool", "--postfix.config-dir", str(lab.config_dir),
         "--web.listen-address", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env={**os.environ, "MTAQ_POSTFIX__ENABLED": "true"})
    assert done.returncode == 2, done.stderr
    assert (f"configuration error: postfix.instances[0].queue_source: spool: postfix instance postfix: no read access "
            f"to {lab.queue_dir}/active") in done.stderr


def postsuper(lab: PostfixLab, option: str, queue_ids: list[str]) -> None:
    if queue_ids:
        subprocess.run(["postsuper", "-c", str(lab.config_dir), option, "-"], input="\n".join(queue_ids) + "\n",
                       text=True, check=True, capture_output=True)


def test_scans_tracked_by_inotify_converge_while_postfix_delivers_defers_holds_and_releases(lab: PostfixLab) -> None:
    """Sixty scans while Postfix takes in, delivers, defers and retries mail and messages are put on
    hold, released, requeued, marked to expire and deleted: after the first walk, the scans look
    only at what inotify named (apart from walks for new hashed subdirectories), and once the queue
    settles the totals equal showq's exactly; so does a last round of holds and releases."""
    by_spool, by_showq, spool, showq = collectors(lab)
    families(by_spool)
    assert spool.stats.walk == "nothing cached yet"
    domains = ["gmail.com", "example.com", "yahoo.com", "example.org", "outlook.com", "icloud.com"]
    senders = ["ops@alerts.example.com", "billing@shop.example.com", "news@bulk.example.com"]
    walks, updates = [], 0
    for i in range(60):
        for n in range(8):
            lab.send(senders[(i + n) % 3], [f"r{i}n{n}@{domains[(i + n) % len(domains)]}"])
        queue = lab.queue_json()
        deferred = sorted(m["queue_id"] for m in queue if m["queue_name"] == "deferred")
        held = sorted(m["queue_id"] for m in queue if m["queue_name"] == "hold")
        if i % 3 == 0:
            postsuper(lab, "-h", deferred[:4])
        elif i % 3 == 1:
            postsuper(lab, "-H", held[:3])
            postsuper(lab, "-e", deferred[-2:])
        else:
            postsuper(lab, "-r", deferred[4:6])
            postsuper(lab, "-d", held[-1:])
        if i % 10 == 9:
            lab.flush()  # every deferred message retried: moved to active, deferred again
        families(by_spool)
        if spool.stats.walk is None:
            updates += 1
        else:
            walks.append(spool.stats.walk)
    assert all(why.startswith("new directory") for why in walks), walks
    assert updates >= 30, walks
    settled(lab)
    assert families(by_spool) == families(by_showq)
    assert compare(lab, spool, showq) == 0
    queue = postqueue(lab)
    deferred = sorted(q for q, m in queue.items() if m.queue == "deferred")
    postsuper(lab, "-h", deferred[::3])
    postsuper(lab, "-H", sorted(q for q, m in queue.items() if m.queue == "hold")[:5])
    got = families(by_spool)
    assert spool.stats.walk is None or spool.stats.walk.startswith("new directory")
    assert got == families(by_showq)
    print(f"{updates} updates, {len(walks)} walks: {walks}")

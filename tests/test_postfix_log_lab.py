"""End to end with a real Postfix: every log counter equals an independent count of the same log.

Postfix relays to the provider simulator with short retry times and a 15 s queue lifetime, so
within a minute the log holds deliveries, deferrals (provider and self-inflicted), bounces,
expiries and removals. The reference below reads the raw log with plain string handling, apart
from the agent's parser, and the tests compare it with what the agent exports over HTTP;
rotation (rename, ``postfix logrotate``, copytruncate) and agent restarts must not change it.
"""

from __future__ import annotations

import gzip
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.classify import ClassificationConfig, Classifier
from collectors.delivery_accounting import merge_snapshots
from collectors.log_pipeline import LogProcessor
from collectors.postfix.log_events import POSTFIX_LOG
from exporter.agent import Agent
from exporter.config import load_config
from tests.helpers import scrape, wait_until
from tests.lab.postfix import TRAFFIC, PostfixLab, send_traffic, start_lab

pytestmark = pytest.mark.lab

PROVIDERS = {"gmail.com": "google", "yahoo.com": "yahoo", "outlook.com": "microsoft", "icloud.com": "apple",
             "gmx.de": "gmx", "comcast.net": "comcast"}
LANES = {"rules": [{"lane": "high", "match": {"sender": "*@alerts.example.com"}},
                   {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]}
#: The lab relays every message to a loopback server that answers like the providers: that hop
#: stands in for the internet, so loopback is not "on the host" here.
LOCAL = {"loopback": False}
SELF = ("delivery temporarily suspended", "deferred transport")
QID = re.compile(r"postfix-lab/(\w+)\[\d+\]: ([0-9A-F]+): (.*)$")


def lane_of(sender: str) -> str:
    return {"alerts.example.com": "high", "bulk.example.com": "low"}.get(sender.rpartition("@")[2], "normal")


def reference(lines: list[str]) -> dict[str, Counter]:
    """Counts straight from the raw log, keyed like the exported series."""
    out: dict[str, Counter] = {k: Counter() for k in (
        "received", "attempts", "messages_deferred", "bounces", "dead_letters", "self")}
    sender: dict[str, str] = {}
    pending: dict[str, set[str]] = {}
    deferred_once: set[str] = set()
    submitted: set[str] = set()
    for line in lines:
        m = QID.search(line)
        if not m:
            continue
        service, qid, rest = m.groups()
        if service == "smtpd" and rest.startswith("client="):
            submitted.add(qid)  # received mail, as pflogsumm counts it; bounce notifications never pass smtpd
        elif service == "qmgr" and rest.endswith("(queue active)"):
            if qid not in sender:  # qmgr logs this again each time a deferred message is retried
                sender[qid] = rest[rest.index("<") + 1:rest.index(">")]
                if qid in submitted:
                    out["received"][lane_of(sender[qid])] += 1
        elif service == "qmgr" and "status=expired" in rest:
            lane = lane_of(sender.get(qid, ""))
            out["dead_letters"][lane] += 1
            out["bounces"][(lane, "soft")] += len(pending.pop(qid, set()))
        elif rest.startswith("to=<") and " status=" in rest:
            rcpt = rest[4:rest.index(">")]
            status = rest.split(" status=", 1)[1].split(" ", 1)[0]
            dsn = rest.split(" dsn=", 1)[1].split(",", 1)[0]
            lane = lane_of(sender.get(qid, ""))
            provider = PROVIDERS.get(rcpt.rpartition("@")[2], "other")
            if status == "deferred" and any(s in rest for s in SELF):
                out["self"]["all"] += 1
                pending.setdefault(qid, set()).add(rcpt)
                continue
            out["attempts"][(lane, provider, status)] += 1
            if status == "deferred":
                pending.setdefault(qid, set()).add(rcpt)
                if qid not in deferred_once:
                    deferred_once.add(qid)
                    out["messages_deferred"][lane] += 1
            else:
                pending.get(qid, set()).discard(rcpt)
                if status == "bounced":
                    hard = dsn.startswith("5.") and not dsn.startswith("5.2.")
                    out["bounces"][(lane, "hard" if hard else "soft")] += 1
    return out


def exported(port: int) -> dict[str, Counter]:
    """The same counts from one scrape of the agent."""
    out: dict[str, Counter] = {k: Counter() for k in (
        "received", "attempts", "messages_deferred", "bounces", "dead_letters", "self", "lines", "reopens")}
    for (name, labels), value in scrape(port).items():
        label = dict(labels)
        if name == "mtaq_messages_received_total":
            out["received"][label["lane"]] += value
        elif name == "mtaq_delivery_attempts_total":
            out["attempts"][(label["lane"], label["provider"], label["status"])] += value
        elif name == "mtaq_messages_deferred_total":
            out["messages_deferred"][label["lane"]] += value
        elif name == "mtaq_bounces_total":
            out["bounces"][(label["lane"], label["type"])] += value
        elif name == "mtaq_dead_letters_total":
            out["dead_letters"][label["lane"]] += value
        elif name == "mtaq_self_deferrals_total":
            out["self"]["all"] += value
        elif name == "mtaq_log_lines_total":
            out["lines"][label["result"]] += value
        elif name == "mtaq_log_reopens_total":
            out["reopens"]["all"] += value
    return {k: +v for k, v in out.items()}  # drop zero-filled series


def all_log_lines(lab: PostfixLab) -> list[str]:
    """Every line Postfix logged, across rotated files (oldest first) and the current file.

    ``postfix logrotate`` gzips the file it renames (``maillog_file_compressor``).
    """
    rotated = sorted((p for p in lab.log_file.parent.iterdir() if p != lab.log_file), key=lambda p: p.stat().st_mtime)
    lines = []
    for path in (*rotated, lab.log_file):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        lines += data.decode(errors="replace").splitlines()
    return lines


def make_agent(lab: PostfixLab, checkpoint: Path) -> Agent:
    agent = Agent(load_config(None, environ={}, overrides={
        "web": {"listen_address": "127.0.0.1:0"}, "postfix": {"enabled": False}, "lanes": LANES,
        "local_delivery": LOCAL,
        "log": {"paths": [str(lab.log_file)], "from": "start", "checkpoint_file": str(checkpoint)}}))
    agent.start()
    return agent


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[PostfixLab]:
    lab, provider = start_lab(tmp_path / "postfix", queue_run_delay="1s", minimal_backoff_time="1s",
                              maximal_backoff_time="2s", maximal_queue_lifetime="15s",
                              bounce_queue_lifetime="15s")
    yield lab
    lab.abort()
    provider.stop()


def drained(lab: PostfixLab) -> bool:
    """No mail left to deliver.

    ``postfix logrotate`` reloads Postfix; the restarted queue manager moves active mail back to
    incoming and has been seen to leave it there until the next trigger, so waiting also asks for
    a queue run now and then (the reference is computed from the log, whatever the schedule). An
    incoming file without recipients is one cleanup never finished: qmgr never picks it up.
    """
    queue = lab.queue_json()
    if all(m["queue_name"] == "incoming" and not m["recipients"] for m in queue):
        return True
    if any(m["queue_name"] == "incoming" for m in queue):
        lab.flush()
    return False


def settle(lab: PostfixLab, agent: Agent, counted_before: int = 0) -> dict[str, Counter]:
    """Wait for an empty queue, then until the agent has counted every line of the log.

    ``counted_before`` is what an earlier run of the agent counted: a restarted agent resumes
    from its checkpoint, so its own counters cover only the lines after it.
    """
    lab.wait_for(lambda: drained(lab), timeout=90, what="the queue to drain (deliver/bounce/expire)")
    total = len(all_log_lines(lab)) - counted_before
    wait_until(lambda: sum(exported(agent.port)["lines"].values()) == total, timeout=30,
               what=f"the agent to count all {total} new log lines")
    return exported(agent.port)


def assert_matches_reference(lab: PostfixLab, got: dict[str, Counter]) -> None:
    want = reference(all_log_lines(lab))
    for key, counts in want.items():
        assert got.get(key, Counter()) == +counts, key
    assert want["dead_letters"], "the scenario must expire mail"
    assert {status for _, _, status in want["attempts"]} == {"sent", "deferred", "bounced"}
    assert got["lines"].get("unparsed", 0) == 0


def test_every_counter_equals_the_reference(lab: PostfixLab, tmp_path: Path) -> None:
    agent = make_agent(lab, tmp_path / "checkpoint.json")
    try:
        send_traffic(lab, rounds=2)
        got = settle(lab, agent)
    finally:
        agent.stop()
    assert_matches_reference(lab, got)
    assert got["attempts"][("low", "google", "deferred")] >= 2
    assert got["bounces"][("low", "hard")] == 4  # comcast blocklisted + gmx user unknown, twice


def test_rotation_and_restart_lose_and_double_nothing(lab: PostfixLab, tmp_path: Path) -> None:
    """Counters restart at zero with the agent (Prometheus handles counter resets); what the
    first run and the resumed run counted must add up to the whole log, no line lost or twice."""
    checkpoint = tmp_path / "checkpoint.json"
    agent = make_agent(lab, checkpoint)
    try:
        send_traffic(lab)
        lab.postfix("logrotate")  # rename + reopen while mail is in flight
        send_traffic(lab)
        first = settle(lab, agent)
        agent.stop()
        send_traffic(lab)  # logged while the agent is down: the checkpoint must bring it back
        lab.wait_for(lambda: drained(lab), timeout=90, what="the queue to drain")
        agent = make_agent(lab, checkpoint)
        counted_before = int(sum(first["lines"].values()))
        settle(lab, agent, counted_before)
        # copytruncate, done while Postfix is quiet (logrotate's own copy/truncate race aside)
        shutil.copyfile(lab.log_file, lab.log_file.with_name("maillog.copytruncated"))
        with open(lab.log_file, "r+b") as handle:
            handle.truncate(0)
        send_traffic(lab)
        second = settle(lab, agent, counted_before)
    finally:
        agent.stop()
    assert second["reopens"]["all"] >= 1  # the truncation
    assert_matches_reference(lab, {key: first.get(key, Counter()) + second.get(key, Counter())
                                   for key in {*first, *second}})


def test_soft_bounce_deferrals_stay_queued(tmp_path: Path) -> None:
    """Issue 10: with soft_bounce = yes, Postfix logs would-be bounces as status=SOFTBOUNCE and keeps
    the mail queued; every such line is a deferral with its reason, counted apart, never a bounce."""
    lab, provider = start_lab(tmp_path / "postfix", soft_bounce="yes", queue_run_delay="1s",
                              minimal_backoff_time="1s", maximal_backoff_time="2s")
    try:
        sent = send_traffic(lab)
        # The simulator accepts mail for example.* only; soft_bounce turns the 5xx replies of comcast
        # (blocklisted) and gmx (user unknown) into deferrals, so every other message stays queued.
        rejected = sum(1 for _, domains in TRAFFIC for d in domains if d in PROVIDERS)
        lab.wait_for(lambda: sum(1 for m in lab.queue_json() if m["queue_name"] == "deferred") == rejected,
                     what=f"{rejected} deferred messages")
        lines = all_log_lines(lab)
        queue = lab.queue_json()
    finally:
        lab.abort()
        provider.stop()
    softbounce = [line for line in lines if " status=SOFTBOUNCE " in line]
    assert softbounce, "the scenario must soft-bounce"
    config = ClassificationConfig.model_validate({"lanes": LANES, "local_delivery": LOCAL})
    processor = LogProcessor(POSTFIX_LOG, Classifier(config))
    processor.process_lines("maillog", lines)
    snap = merge_snapshots(processor.accounts.snapshots().values())
    assert processor.line_counts()["maillog"]["unparsed"] == 0
    assert sum(snap.soft_bounces.values()) == len(softbounce)
    assert snap.soft_bounces == dict(Counter(
        ("blocklisted",) if "blocked using" in line else ("user_unknown",) for line in softbounce))
    assert snap.bounces == {}
    assert sum(n for (_, _, status), n in snap.delivery_attempts.items() if status == "deferred") == sum(
        1 for line in lines if " status=deferred " in line or " status=SOFTBOUNCE " in line)
    # Still queued, with the would-be bounce as defer reason (the independent reference: postqueue -j).
    held_back = {r["address"] for m in queue for r in m["recipients"]
                 if "User unknown" in r.get("delay_reason", "") or "spamhaus" in r.get("delay_reason", "")}
    assert {line.split("to=<", 1)[1].split(">", 1)[0] for line in softbounce} == held_back
    assert sum(snap.messages_received.values()) == sent

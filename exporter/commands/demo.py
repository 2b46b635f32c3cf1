"""``mtaq-exporter demo``: the agent on bundled real Postfix data, for a first look without an MTA.

The data was captured from a real Postfix 3.7 relaying to a provider simulator
(``scripts/capture_demo_data.py``): a ``postqueue -j`` listing and that instance's mail log.
Arrival times are shifted so the captured queue looks as old now as it was at capture. The log
is written into a temporary file a few lines at a time, over and over, and the agent tails that
file with its real tailer, so the delivery counters keep moving.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import resources

from collectors import postfix_log, postfix_queue
from collectors.classify import Classifier
from collectors.deadline import Deadline
from collectors.log_collector import LogCollector
from collectors.postfix.instance import MTA
from collectors.postfix.log_events import POSTFIX_LOG
from collectors.postfix.showq import POSTFIX_QUEUES, decode_postqueue_json
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage
from exporter.commands.run import run_agent
from exporter.config import Config

#: The syslog_name of the lab instance the data was captured from: its mta_instance.
DEMO_INSTANCE = "postfix-lab"

#: The lab's lanes, and its provider simulator on loopback standing in for the providers.
DEMO_CLASSIFICATION = {
    "lanes": {
        "rules": [
            {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
            {"lane": "low", "match": {"sender_domain": "bulk.example.com"}},
        ]
    },
    "local_delivery": {"loopback": False},
}


def demo_file(name: str) -> str:
    """Text of a bundled demo data file."""
    return resources.files("collectors").joinpath(f"data/{name}").read_text()


def shifted_queue(now: float) -> list[QueueMessage]:
    """The bundled queue with arrival times moved so its newest message arrived a minute ago."""
    messages = list(decode_postqueue_json(demo_file("demo_queue.jsonl").splitlines()))
    shift = now - 60 - max(m.arrival for m in messages)
    return [QueueMessage(m.queue, m.queue_id, m.arrival + shift, m.size, m.sender, m.recipients, m.forced_expire)
            for m in messages]


class BundledQueue:
    """The captured queue as a ``QueueReader``."""

    name = DEMO_INSTANCE
    source_info = ("bundled", "demo_queue.jsonl")

    def __init__(self, messages: list[QueueMessage]) -> None:
        self.messages = messages

    def source(self) -> str:
        """Where the data comes from."""
        return "the bundled demo queue (a captured postqueue -j listing)"

    def preflight(self) -> list[str]:
        """Bundled data has no problems to report."""
        return []

    def read(self, _deadline: Deadline) -> Iterator[QueueMessage]:
        """The same messages at every scan."""
        return iter(self.messages)


def replay_log(path: str, stop: threading.Event, lines_per_second: float) -> None:
    """Append the bundled mail log to ``path`` at a steady pace, looping until ``stop``."""
    lines = demo_file("demo_maillog.log").splitlines(keepends=True)
    with open(path, "a") as out:
        while not stop.is_set():
            for line in lines:
                out.write(line)
                out.flush()
                if stop.wait(1 / lines_per_second):
                    return


def main(argv: list[str]) -> int:
    """Run the demo agent until interrupted."""
    parser = argparse.ArgumentParser(prog="mtaq-exporter demo", description=__doc__)
    parser.add_argument("--web.listen-address", dest="listen", default=":10154")
    parser.add_argument("--lines-per-second", type=float, default=50, help="log replay pace (default 50)")
    args = parser.parse_args(argv)
    config = Config.model_validate({**DEMO_CLASSIFICATION, "web": {"listen_address": args.listen}})
    classifier = Classifier(config)
    queue = QueueCollector(postfix_queue.ID, MTA, [BundledQueue(shifted_queue(time.time()))], classifier,
                           POSTFIX_QUEUES)
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="mtaq-demo-") as tmp:
        log_path = os.path.join(tmp, "maillog")
        open(log_path, "w").close()
        log = LogCollector(postfix_log.ID, POSTFIX_LOG, [log_path], classifier, checkpoint_path=None,
                           start_at="start", instances=[DEMO_INSTANCE])
        replay = threading.Thread(target=replay_log, args=(log_path, stop, args.lines_per_second),
                                  name="demo-replay", daemon=True)
        replay.start()
        try:
            return run_agent(config, [queue, log])
        finally:
            stop.set()
            replay.join()

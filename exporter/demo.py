"""``mtaq-exporter demo``: the agent on bundled real Postfix data, for a first look without an MTA.

The data was captured from a real Postfix 3.7 relaying to a provider simulator
(``tests/capture_demo_data.py``): a ``postqueue -j`` listing and that instance's mail log.
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

from collectors.classify import Classifier
from collectors.postfix_log import PostfixLogCollector
from collectors.postfix_queue import PostfixInstance, PostfixQueueCollector
from collectors.queue_model import QueueMessage
from collectors.showq import decode_postqueue_json
from exporter.cli import run_agent
from exporter.config import Config

DEMO_LANES = {
    "lanes": {
        "rules": [
            {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
            {"lane": "low", "match": {"sender_domain": "bulk.example.com"}},
        ]
    }
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
    config = Config.model_validate({**DEMO_LANES, "web": {"listen_address": args.listen},
                                    "postfix": {"enabled": False}})
    messages = shifted_queue(time.time())

    def source(_instance: PostfixInstance) -> Iterator[QueueMessage]:
        return iter(messages)

    classifier = Classifier(config)
    queue = PostfixQueueCollector([PostfixInstance("demo", "(bundled demo queue)")], classifier,
                                  interval=30, source=source)
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="mtaq-demo-") as tmp:
        log_path = os.path.join(tmp, "maillog")
        open(log_path, "w").close()
        log = PostfixLogCollector([log_path], classifier, checkpoint_path=None, start_at="start")
        replay = threading.Thread(target=replay_log, args=(log_path, stop, args.lines_per_second),
                                  name="demo-replay", daemon=True)
        replay.start()
        try:
            return run_agent(config, [queue, log])
        finally:
            stop.set()
            replay.join()

"""``mtaq-exporter demo``: the agent on bundled real Postfix data, for a first look without an MTA.

The data was captured from a real Postfix 3.7 relaying to a provider simulator
(``scripts/capture_demo_data.py``): a ``postqueue -j`` listing and that instance's mail log.

- The queue: arrival times are shifted so that its newest message arrived a minute before the
  demo started, and the shifted listing is written to the demo's temporary directory (its path
  is logged): ``mtaq-exporter qshape --from-json PATH`` on it shows the ages the demo exports.
- The log is written into a temporary file a few lines at a time and the agent tails that file
  with its real tailer, so the delivery counters keep moving. Each line gets the current time,
  and every replay after the first gives each message a new queue id (the old one with ``Z`` and
  the replay number appended), so a replayed expiry is a new dead letter with an id of its own,
  never the same queue id counted twice.

The page at ``/`` says DEMO in a banner; the web flags work as for the agent.
"""

from __future__ import annotations

import json
import logging
import os
import re
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
from exporter.commands.flags import WEB_FLAGS, add_log_level, add_setting_flags, command_parser, load, setup_logging
from exporter.commands.run import run_agent

log = logging.getLogger("mtaq.demo")

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

BANNER = "DEMO: bundled sample data captured from a lab Postfix, not your mail system"

#: "Nov 27 17:52:39 " (BSD syslog): the part of each bundled line that gets the current time.
_STAMP = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d ")
#: Queue ids where Postfix logs them: "<qid>: ..." and a bounce's "notification: <qid>".
_QID = re.compile(r"(?:\]: |notification: )([0-9A-F]{6,})\b")


def demo_file(name: str) -> str:
    """Text of a bundled demo data file."""
    return resources.files("collectors").joinpath(f"data/{name}").read_text()


def shifted_listing(now: float) -> str:
    """The bundled ``postqueue -j`` listing with arrival times moved so that its newest message
    arrived a minute before ``now``."""
    records = [json.loads(line) for line in demo_file("demo_queue.jsonl").splitlines() if line.strip()]
    shift = round(now - 60 - max(r["arrival_time"] for r in records))
    return "".join(json.dumps({**r, "arrival_time": r["arrival_time"] + shift}) + "\n" for r in records)


class BundledQueue:
    """The demo's queue listing as a ``QueueReader``."""

    name = DEMO_INSTANCE

    def __init__(self, path: str) -> None:
        self.path = path
        self.source_info = ("bundled", path)
        with open(path) as listing:
            self.messages: list[QueueMessage] = list(decode_postqueue_json(listing.read().splitlines()))

    def source(self) -> str:
        """Where the data comes from."""
        return f"the bundled demo queue, shifted to now ({self.path})"

    def preflight(self) -> list[str]:
        """Bundled data has no problems to report."""
        return []

    def read(self, _deadline: Deadline) -> Iterator[QueueMessage]:
        """The same messages at every scan."""
        return iter(self.messages)


def replayed(line: str, replay: int, now: float) -> str:
    """A bundled ``line`` stamped with ``now``; from the second replay on (``replay`` >= 1), with
    the queue ids it names made its own."""
    line = _STAMP.sub(time.strftime("%b %e %H:%M:%S ", time.localtime(now)), line, count=1)
    return _QID.sub(lambda m: f"{m.group(0)}Z{replay:X}", line) if replay else line


def replay_log(path: str, stop: threading.Event, lines_per_second: float) -> None:
    """Append the bundled mail log to ``path`` at a steady pace, replaying it until ``stop``."""
    lines = demo_file("demo_maillog.log").splitlines(keepends=True)
    replay = 0
    with open(path, "a") as out:
        while not stop.is_set():
            for line in lines:
                out.write(replayed(line, replay, time.time()))
                out.flush()
                if stop.wait(1 / lines_per_second):
                    return
            replay += 1


def main(argv: list[str]) -> int:
    """Run the demo agent until interrupted."""
    parser = command_parser("mtaq-exporter demo", __doc__)
    add_setting_flags(parser, WEB_FLAGS)
    parser.add_argument("--lines-per-second", type=float, default=50, metavar="N",
                        help="pace of the log replay (default 50)")
    add_log_level(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    config = load(args, WEB_FLAGS, fixed=DEMO_CLASSIFICATION)
    classifier = Classifier(config)
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="mtaq-demo-") as tmp:
        listing = os.path.join(tmp, "queue.jsonl")
        with open(listing, "w") as out:
            out.write(shifted_listing(time.time()))
        log.info("demo queue listing: %s (mtaq-exporter qshape --from-json %s shows the same ages)", listing, listing)
        queue = QueueCollector(postfix_queue.ID, MTA, [BundledQueue(listing)], classifier, POSTFIX_QUEUES)
        log_path = os.path.join(tmp, "maillog")
        open(log_path, "w").close()
        tail = LogCollector(postfix_log.ID, POSTFIX_LOG, [log_path], classifier, checkpoint_path=None,
                            start_at="start", instances=[DEMO_INSTANCE])
        replay = threading.Thread(target=replay_log, args=(log_path, stop, args.lines_per_second),
                                  name="demo-replay", daemon=True)
        replay.start()
        try:
            return run_agent(config, [queue, tail], banner=BANNER)
        finally:
            stop.set()
            replay.join()

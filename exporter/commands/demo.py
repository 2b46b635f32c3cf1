"""``mtaq-exporter demo``: the agent on bundled real Postfix and Exim data, for a first look without an MTA.

The data was captured from two real labs relaying to a provider simulator, and is bundled as it
came out of them (``collectors/data/``):

- Postfix 3.7, instance ``postfix-lab`` (``scripts/capture_demo_data.py``): a ``postqueue -j``
  listing and that instance's mail log;
- Exim 4.96, instance ``exim-lab`` (``scripts/capture_exim_data.py``): a split spool (``input/``
  and ``msglog/``) while mail for every simulated provider waits, two of its messages frozen, and
  that instance's main log until every retry had run out.

Both run in one agent, as ``mta="postfix"`` and ``mta="exim"``:

- The queues: arrival times are shifted so that each queue's newest message arrived a minute
  before the demo started, and the shifted copies are written to the demo's temporary directory
  (their paths are logged): ``mtaq-exporter qshape --from-json PATH`` on the listing, and
  ``mtaq-exporter qshape --exim.spool-dir DIR`` on the spool, show the ages the demo exports.
- The logs are written into temporary files a few lines at a time and the agent tails them with
  its real tailer, so the delivery counters keep moving. Each line gets the current time, and
  every replay after the first gives each message a new id (Postfix: the old queue id with ``Z``
  and the replay number appended; Exim: the arrival second its id starts with moved one hour per
  replay, so the id keeps its format), so a replayed expiry is a new dead letter with an id of its
  own, never the same id counted twice.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from collectors import exim_log, exim_queue, postfix_log, postfix_queue
from collectors.base import BaseCollector
from collectors.classify import Classifier
from collectors.deadline import Deadline
from collectors.exim import instance as exim
from collectors.exim.log_events import EXIM_LOG
from collectors.exim.message_id import ID_PATTERN, shift_arrival
from collectors.exim.spool import EXIM_QUEUES, QUEUED, parse_header
from collectors.log_collector import LogCollector
from collectors.postfix import instance as postfix
from collectors.postfix.log_events import POSTFIX_LOG
from collectors.postfix.showq import POSTFIX_QUEUES, decode_postqueue_json
from collectors.queue_collector import QueueCollector
from collectors.queue_model import QueueMessage
from exporter.commands.flags import WEB_FLAGS, add_log_level, add_setting_flags, command_parser, load, setup_logging
from exporter.commands.run import run_agent

log = logging.getLogger("mtaq.demo")

#: The syslog_name of the Postfix lab instance the data was captured from: its mta_instance.
POSTFIX_INSTANCE = "postfix-lab"
#: The Exim lab's instance, named as an ``exim.instances[]`` entry names it (its mta_instance).
EXIM_INSTANCE = "exim-lab"
#: The bundled Exim spool: ``input/`` and ``msglog/`` as the lab left them.
EXIM_SPOOL = "demo_exim_spool"

#: The labs' lanes, and their provider simulator on loopback standing in for the providers.
DEMO_CLASSIFICATION = {
    "lanes": {
        "rules": [
            {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
            {"lane": "low", "match": {"sender_domain": "bulk.example.com"}},
        ]
    },
    "local_delivery": {"loopback": False},
}

BANNER = "DEMO: bundled sample data captured from a lab Postfix and a lab Exim, not your mail system"

#: Replay ``r`` moves the arrival second of Exim ids by ``r`` times this: more than the bundled
#: main log spans (about a minute; a test checks), so no two replays share an id.
EXIM_ID_STEP = 3600


def demo_file(name: str) -> str:
    """Text of a bundled demo data file."""
    return resources.files("collectors").joinpath(f"data/{name}").read_text()


def arrival_shift(newest: float, now: float) -> int:
    """Whole seconds to add to bundled arrival times so that the ``newest`` of them lies a minute
    before ``now`` (whole: both the listing and a -H file's arrival line count seconds)."""
    return round(now - 60 - newest)


# -- Postfix: the queue listing ---------------------------------------------------------------------

def shifted_listing(now: float) -> str:
    """The bundled ``postqueue -j`` listing with arrival times moved so that its newest message
    arrived a minute before ``now``."""
    records = [json.loads(line) for line in demo_file("demo_queue.jsonl").splitlines() if line.strip()]
    shift = arrival_shift(max(r["arrival_time"] for r in records), now)
    return "".join(json.dumps({**r, "arrival_time": r["arrival_time"] + shift}) + "\n" for r in records)


class BundledQueue:
    """The demo's queue listing as a ``QueueReader``."""

    name = POSTFIX_INSTANCE

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


# -- Exim: the spool -------------------------------------------------------------------------------

def _files(node: Traversable, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    """(relative path, bytes) of every file under ``node`` (a package resource, maybe zipped)."""
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        path = f"{prefix}{child.name}"
        if child.is_dir():
            yield from _files(child, f"{path}/")
        else:
            yield path, child.read_bytes()


def shifted_header(data: bytes, shift: int) -> bytes:
    """A -H file with the times it records moved by ``shift`` seconds: the arrival line (the
    fourth: ``<second> <warnings>``) and the ``-frozen`` and ``-received_time_complete``
    variables, so the file stays consistent; everything else, byte for byte, as it was."""
    lines = data.split(b"\n")
    second, _, warnings = lines[3].partition(b" ")
    lines[3] = b"%d %s" % (int(second) + shift, warnings)
    for i in range(4, len(lines)):
        if not lines[i].startswith(b"-"):  # the variables end where the recipients' part starts
            break
        name, _, value = lines[i].partition(b" ")
        if name in (b"-frozen", b"-received_time_complete"):
            whole, dot, fraction = value.partition(b".")
            lines[i] = b"%s %d%s%s" % (name, int(whole) + shift, dot, fraction)
    return b"\n".join(lines)


def shifted_spool(target: str, now: float) -> None:
    """Copy the bundled Exim spool into ``target`` (``input/`` and ``msglog/``), its arrival times
    moved so that its newest message arrived a minute before ``now``."""
    files = dict(_files(resources.files("collectors").joinpath(f"data/{EXIM_SPOOL}")))
    headers = {path: data for path, data in files.items() if path.endswith("-H")}
    newest = max(parse_header(data, os.path.basename(path)[:-2]).arrival for path, data in headers.items())
    shift = arrival_shift(newest, now)
    for path, data in files.items():
        out = os.path.join(target, *path.split("/"))
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "wb") as copy:
            copy.write(shifted_header(data, shift) if path in headers else data)


# -- the logs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LogReplay:
    """How one MTA's bundled log is replayed: ``stamp`` finds the time a line starts with and
    ``restamp`` writes the current time in its place; ``ids`` finds the message ids a line names
    and ``renamed`` gives each one of its own for replay number ``r`` (>= 1), the same for every
    line of that replay, never one of the bundled log or of another replay."""

    file: str
    stamp: re.Pattern[str]
    restamp: Callable[[re.Match[str], float], str]
    ids: re.Pattern[str]
    renamed: Callable[[re.Match[str], int], str]


def _exim_stamp(match: re.Match[str], now: float) -> str:
    """``now`` as Exim wrote the matched stamp: with ``.mmm`` if it had them, in its ``+ZZZZ``
    offset if it had one (``log_timezone``), else in local time."""
    zone = match.group(2) or ""
    if zone:
        offset = (int(zone[2:4]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[1] == "+" else -1)
        clock = time.gmtime(now + offset)
    else:
        clock = time.localtime(now)
    millis = f".{int(now * 1000) % 1000:03d}" if match.group(1) else ""
    return time.strftime("%Y-%m-%d %H:%M:%S", clock) + millis + zone


POSTFIX_REPLAY = LogReplay(
    file="demo_maillog.log",
    # "Nov 27 17:52:39 " (BSD syslog).
    stamp=re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d "),
    restamp=lambda _match, now: time.strftime("%b %e %H:%M:%S ", time.localtime(now)),
    # Queue ids where Postfix logs them: "<qid>: ..." and a bounce's "notification: <qid>".
    ids=re.compile(r"(?:\]: |notification: )([0-9A-F]{6,})\b"),
    renamed=lambda match, replay: f"{match.group(0)}Z{replay:X}",
)
EXIM_REPLAY = LogReplay(
    file="demo_exim_mainlog.log",
    # "2026-12-01 15:38:35.020 +0000 " (+millisec and log_timezone optional).
    stamp=re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{3})?( [+-]\d{4})?(?= )"),
    restamp=_exim_stamp,
    # Ids wherever they appear (a bounce's "R=<id>", "Spool file for <id> is locked"), both formats.
    ids=re.compile(rf"(?<![0-9A-Za-z-]){ID_PATTERN.pattern}(?![0-9A-Za-z-])"),
    # The id's first six characters are its arrival second: moving it keeps the id's format (and
    # length), and moving every id of a replay by the same step keeps them apart.
    renamed=lambda match, replay: shift_arrival(match.group(0), replay * EXIM_ID_STEP),
)


def replayed(line: str, replay: int, now: float, log_replay: LogReplay) -> str:
    """A bundled ``line`` stamped with ``now``; from the second replay on (``replay`` >= 1), with
    the message ids it names made its own."""
    line = log_replay.stamp.sub(lambda m: log_replay.restamp(m, now), line, count=1)
    return log_replay.ids.sub(lambda m: log_replay.renamed(m, replay), line) if replay else line


def replay_log(path: str, stop: threading.Event, lines_per_second: float, log_replay: LogReplay) -> None:
    """Append a bundled log to ``path`` at a steady pace, replaying it until ``stop``."""
    lines = demo_file(log_replay.file).splitlines(keepends=True)
    replay = 0
    with open(path, "a") as out:
        while not stop.is_set():
            for line in lines:
                out.write(replayed(line, replay, time.time(), log_replay))
                out.flush()
                if stop.wait(1 / lines_per_second):
                    return
            replay += 1


# -- the agent -------------------------------------------------------------------------------------

def demo_collectors(tmp: str, classifier: Classifier) -> tuple[list[BaseCollector], dict[str, LogReplay]]:
    """The demo's collectors over the shifted queues written into ``tmp``, and the log files in
    ``tmp`` (created empty) that they tail, each with the bundled log to replay into it."""
    now = time.time()
    listing = os.path.join(tmp, "queue.jsonl")
    with open(listing, "w") as out:
        out.write(shifted_listing(now))
    log.info("demo Postfix queue listing: %s (mtaq-exporter qshape --from-json %s shows the same ages)",
             listing, listing)
    spool = os.path.join(tmp, "exim-spool")
    shifted_spool(spool, now)
    log.info("demo Exim spool: %s (mtaq-exporter qshape --exim.spool-dir %s shows the same ages)", spool, spool)
    maillog, mainlog = os.path.join(tmp, "maillog"), os.path.join(tmp, "exim-mainlog")
    for path in (maillog, mainlog):
        open(path, "w").close()
    reader = exim.EximQueueReader(exim.EximInstance(name=EXIM_INSTANCE, spool_directory=spool))
    collectors: list[BaseCollector] = [
        QueueCollector(postfix_queue.ID, postfix.MTA, [BundledQueue(listing)], classifier, POSTFIX_QUEUES),
        LogCollector(postfix_log.ID, POSTFIX_LOG, [maillog], classifier, checkpoint_path=None, start_at="start",
                     instances=[POSTFIX_INSTANCE]),
        QueueCollector(exim_queue.ID, exim.MTA, [reader], classifier, EXIM_QUEUES, deferred_queue=QUEUED),
        exim_log.EximLogCollector({mainlog: EXIM_INSTANCE}, exim_log.ID, EXIM_LOG, [mainlog], classifier,
                                  checkpoint_path=None, start_at="start", instances=[EXIM_INSTANCE]),
    ]
    return collectors, {maillog: POSTFIX_REPLAY, mainlog: EXIM_REPLAY}


def main(argv: list[str]) -> int:
    """Run the demo agent until interrupted."""
    parser = command_parser("mtaq-exporter demo", __doc__)
    add_setting_flags(parser, WEB_FLAGS)
    parser.add_argument("--lines-per-second", type=float, default=50, metavar="N",
                        help="pace of the replay of each log (default 50)")
    add_log_level(parser)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    config = load(args, WEB_FLAGS, fixed=DEMO_CLASSIFICATION)
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="mtaq-demo-") as tmp:
        collectors, logs = demo_collectors(tmp, Classifier(config))
        replays = [threading.Thread(target=replay_log, args=(path, stop, args.lines_per_second, log_replay),
                                    name=f"demo-replay-{os.path.basename(path)}", daemon=True)
                   for path, log_replay in logs.items()]
        for replay in replays:
            replay.start()
        try:
            return run_agent(config, collectors, banner=BANNER)
        finally:
            stop.set()
            for replay in replays:
                replay.join()

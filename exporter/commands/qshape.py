"""``mtaq-exporter qshape``: queued recipients by age bucket and provider (or domain, or reason).

Like Postfix's ``qshape``: rows are sorted by total, columns are age buckets in minutes since
arrival (0-5, 5-10, 10-20, ... doubling, and older than 1280). Unlike it, rows can be the bounded
provider classes the metrics use, or the defer reason class, and the queue can come from a saved
``postqueue -j`` listing as well as from the live showq socket.

``--json`` prints ``{"by": …, "buckets": [labels], "total": {"total": n, "counts": [...]},
"rows": [{"key": …, "total": n, "counts": [...]}]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from collectors import postfix_queue
from collectors.classify import Classifier, domain_of, relay_host
from collectors.deadline import Deadline
from collectors.postfix.instance import PostfixQueueReader
from collectors.postfix.showq import POSTFIX_QUEUES, decode_postqueue_json
from collectors.queue_model import QueueMessage
from exporter.commands.flags import add_config_flags, collector_flags, load
from exporter.render import table

EDGES_MINUTES = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
#: Seconds the whole queue read may take from the shell (a million-message queue takes minutes).
QSHAPE_READ_TIMEOUT = 600.0
BUCKETS = (*(f"{e}m" for e in EDGES_MINUTES), "1280m+")  # each labelled by its upper edge


def _bucket(age_seconds: float) -> int:
    minutes = age_seconds / 60
    for i, edge in enumerate(EDGES_MINUTES):
        if minutes < edge:
            return i
    return len(EDGES_MINUTES)


def shape(messages: Iterable[QueueMessage], classifier: Classifier, by: str, now: float,
          queues: set[str]) -> dict[str, list[int]]:
    """Recipient counts per row key, each a list with one count per age bucket."""
    rows: dict[str, list[int]] = {}
    for message in messages:
        if message.queue not in queues:
            continue
        bucket = _bucket(now - message.arrival)
        for recipient in message.recipients:
            domain = domain_of(recipient.address)
            if by == "domain":
                key = domain or "(local)"
            elif by == "reason":
                key = classifier.reason(None, recipient.reason) if recipient.reason else "(no reason yet)"
            else:
                key = classifier.provider(domain, relay_host(None, recipient.reason))
            counts = rows.setdefault(key, [0] * len(BUCKETS))
            counts[bucket] += 1
    return rows


def ranked(rows: dict[str, list[int]], limit: int) -> tuple[list[int], list[tuple[str, list[int]]]]:
    """Column totals over all rows, and the ``limit`` largest rows (ties by name)."""
    total = [sum(col) for col in zip(*rows.values(), strict=True)] if rows else [0] * len(BUCKETS)
    return total, sorted(rows.items(), key=lambda kv: (-sum(kv[1]), kv[0]))[:limit]


def render(rows: dict[str, list[int]], by: str, limit: int) -> str:
    """A qshape-style text table, largest rows first, with a TOTAL line."""
    total, ordered = ranked(rows, limit)
    body = [["TOTAL", sum(total), *total], *([k, sum(v), *v] for k, v in ordered)]
    return "\n".join(table([by, "total", *BUCKETS], body, align="r" * (len(BUCKETS) + 2)))


def main(argv: list[str]) -> int:
    """Print the queue shape; exit 0, or 2 when the queue cannot be read."""
    parser = argparse.ArgumentParser(prog="mtaq-exporter qshape", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flags = collector_flags(postfix_queue.ID)
    add_config_flags(parser, flags)
    parser.add_argument("--by", choices=("provider", "domain", "reason"), default="provider")
    parser.add_argument("--queue", action="append", choices=POSTFIX_QUEUES,
                        help="queue to include (repeatable; default: all but hold)")
    parser.add_argument("--from-json", metavar="FILE", help="read a saved `postqueue -j` listing instead")
    parser.add_argument("--limit", type=int, default=30, help="rows to show (default 30)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    args = parser.parse_args(argv)
    config = load(args, flags)
    classifier = Classifier(config)
    queues = set(args.queue or [q for q in POSTFIX_QUEUES if q != "hold"])
    try:
        if args.from_json:
            messages: list[QueueMessage] = list(decode_postqueue_json(Path(args.from_json).read_text().splitlines()))
        else:
            deadline = Deadline(QSHAPE_READ_TIMEOUT)
            messages = [m for i in config.postfix.instances for m in PostfixQueueReader(i).read(deadline)]
    except (OSError, ValueError) as exc:
        print(f"mtaq-exporter qshape: cannot read the queue: {exc}", file=sys.stderr)
        return 2
    rows = shape(messages, classifier, args.by, time.time(), queues)
    if args.json:
        total, ordered = ranked(rows, args.limit)
        print(json.dumps({"by": args.by, "buckets": list(BUCKETS),
                          "total": {"total": sum(total), "counts": total},
                          "rows": [{"key": k, "total": sum(v), "counts": v} for k, v in ordered]}, indent=2))
    else:
        print(render(rows, args.by, args.limit))
    return 0

"""``mtaq-exporter qshape``: queued recipients by age bucket and lane, provider, domain, sender or reason.

Like Postfix's ``qshape``: rows are sorted by total, columns are age buckets in minutes since
arrival (0-5, 5-10, 10-20, ... doubling, and older than 1280). Rows can be:

  provider  the provider class of each recipient (the metrics' provider label)
  lane      the lane of each message (the agent's lane rules)
  domain    each recipient's domain (qshape's default view)
  sender    each message's sender domain (qshape -s; MAILER-DAEMON for bounces)
  reason    the class of each recipient's last defer reason

The queue is read live (every configured Postfix instance, through showq or postqueue -j; every
configured Exim instance, from its spool or exim -bp, e.g. ``--exim.spool-dir /var/spool/exim4``)
or from a saved ``postqueue -j`` listing (``--from-json FILE``, ``-`` for standard input). With
Exim instances configured, Postfix's queue is read too only when ``postfix.enabled`` is true. The
first line says where it came from and when.

``--json`` prints ``{"by": …, "source": [where each instance was read from], "read_at": epoch,
"buckets": [labels], "total": {"total": n, "counts": [...]}, "rows": [{"key": …, "total": n,
"counts": [...]}], "rows_omitted": n}`` (``rows_omitted``: rows beyond ``--limit``).

Exit status 0, or 2 when the queue cannot be read.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from collectors import exim_queue, postfix_queue
from collectors.classify import Classifier, domain_of, relay_host
from collectors.deadline import Deadline
from collectors.exim.instance import EximQueueReader
from collectors.exim.spool import EXIM_QUEUES, FROZEN
from collectors.postfix.instance import PostfixQueueReader
from collectors.postfix.showq import POSTFIX_QUEUES, decode_postqueue_json
from collectors.queue_collector import QueueReader
from collectors.queue_model import QueueMessage, QueueRecipient
from exporter.commands.flags import add_config_flags, collector_flags, command_parser, load
from exporter.config import collector_enabled
from exporter.render import table, when

EDGES_MINUTES = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
#: Seconds the whole queue read may take from the shell (a million-message queue takes minutes).
QSHAPE_READ_TIMEOUT = 600.0
BUCKETS = (*(f"{e}m" for e in EDGES_MINUTES), "1280m+")  # each labelled by its upper edge
VIEWS = ("provider", "lane", "domain", "sender", "reason")
QUEUES = (*POSTFIX_QUEUES, *EXIM_QUEUES)
#: Queues left out unless asked for: mail parked for an operator (Postfix hold, Exim frozen).
PARKED = ("hold", FROZEN)

#: The row key of one recipient of one message (of the named instance).
KeyOf = Callable[[QueueMessage, QueueRecipient, str | None], str]


def _bucket(age_seconds: float) -> int:
    minutes = age_seconds / 60
    for i, edge in enumerate(EDGES_MINUTES):
        if minutes < edge:
            return i
    return len(EDGES_MINUTES)


def key_function(by: str, classifier: Classifier) -> KeyOf:
    """How ``--by`` names the row of a recipient."""

    def provider(_m: QueueMessage, r: QueueRecipient, _i: str | None) -> str:
        return classifier.provider(domain_of(r.address), relay_host(None, r.reason))

    def lane(m: QueueMessage, _r: QueueRecipient, instance: str | None) -> str:
        first = domain_of(m.recipients[0].address) if m.recipients else None
        return classifier.lane(m.sender, first, instance)

    def domain(_m: QueueMessage, r: QueueRecipient, _i: str | None) -> str:
        return domain_of(r.address) or "(local)"

    def sender(m: QueueMessage, _r: QueueRecipient, _i: str | None) -> str:
        return (domain_of(m.sender) or "(local)") if m.sender else "MAILER-DAEMON"

    def reason(_m: QueueMessage, r: QueueRecipient, _i: str | None) -> str:
        return classifier.reason(None, r.reason) if r.reason else "(no reason yet)"

    return {"provider": provider, "lane": lane, "domain": domain, "sender": sender, "reason": reason}[by]


def shape(messages: Iterable[QueueMessage], classifier: Classifier, by: str, now: float,
          queues: set[str], instance: str | None = None,
          rows: dict[str, list[int]] | None = None) -> dict[str, list[int]]:
    """Recipient counts per row key, each a list with one count per age bucket; adds to ``rows``
    when given (several instances into one table)."""
    rows = {} if rows is None else rows
    key_of = key_function(by, classifier)
    for message in messages:
        if message.queue not in queues:
            continue
        bucket = _bucket(now - message.arrival)
        for recipient in message.recipients:
            counts = rows.setdefault(key_of(message, recipient, instance), [0] * len(BUCKETS))
            counts[bucket] += 1
    return rows


def ranked(rows: dict[str, list[int]], limit: int) -> tuple[list[int], list[tuple[str, list[int]]]]:
    """Column totals over all rows, and the ``limit`` largest rows (ties by name)."""
    total = [sum(col) for col in zip(*rows.values(), strict=True)] if rows else [0] * len(BUCKETS)
    return total, sorted(rows.items(), key=lambda kv: (-sum(kv[1]), kv[0]))[:limit]


def render(rows: dict[str, list[int]], by: str, limit: int) -> str:
    """A qshape-style text table, largest rows first, with a TOTAL line and a note when rows were left out."""
    total, ordered = ranked(rows, limit)
    body = [["TOTAL", sum(total), *total], *([k, sum(v), *v] for k, v in ordered)]
    lines = table([by, "total", *BUCKETS], body, align="r" * (len(BUCKETS) + 2))
    if len(rows) > limit:
        lines.append(f"... {len(rows) - limit} more rows with {sum(total) - sum(sum(v) for _, v in ordered)} "
                     f"recipients (--limit {limit})")
    return "\n".join(lines)


class ListingError(ValueError):
    """A file that is not a ``postqueue -j`` listing."""


def read_listing(name: str) -> list[QueueMessage]:
    """The messages of a saved ``postqueue -j`` listing (``-``: standard input)."""
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            with open(name, encoding="utf-8", errors="replace") as listing:
                text = listing.read()
    except OSError as exc:
        raise ListingError(f"{name}: {exc.strerror or exc}") from None
    messages = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            messages += decode_postqueue_json([line])
        except (ValueError, KeyError, TypeError, AttributeError):
            shown = line if len(line) <= 60 else line[:59] + "…"
            raise ListingError(f"{'standard input' if name == '-' else name} is not a postqueue -j listing "
                               f"(one JSON object per message): line {number}: {shown!r}") from None
    return messages


def readers(config: Any) -> list[QueueReader]:
    """The queues the agent would read: Exim's configured instances, and Postfix's (when its
    collector would run, and, beside Exim instances, only when ``postfix.enabled`` is true)."""
    exim = [EximQueueReader(i) for i in config.exim.instances] if collector_enabled(config, exim_queue.SPEC) else []
    postfix_wanted = collector_enabled(config, postfix_queue.SPEC) and (not exim or config.postfix.enabled)
    return [*(PostfixQueueReader(i) for i in config.postfix.instances if postfix_wanted), *exim]


def _live(queue_readers: Iterable[QueueReader]) -> Iterator[tuple[str, list[QueueMessage], str]]:
    """(instance name, messages, where they were read from) for each instance."""
    deadline = Deadline(QSHAPE_READ_TIMEOUT)
    for reader in queue_readers:
        messages = list(reader.read(deadline))
        yield reader.name, messages, f"instance {reader.name}: {' '.join(reader.source_info)}"


def main(argv: list[str]) -> int:
    """Print the queue shape; exit 0, or 2 when the queue cannot be read."""
    parser = command_parser("mtaq-exporter qshape", __doc__)
    flags = collector_flags(postfix_queue.ID, exim_queue.ID)
    add_config_flags(parser, flags)
    parser.add_argument("--by", choices=VIEWS, default="provider", help="what a row is (default provider)")
    parser.add_argument("--queue", action="append", choices=QUEUES,
                        help="queue to include (repeatable; default: all but hold and frozen)")
    parser.add_argument("--from-json", metavar="FILE",
                        help="read a saved postqueue -j listing instead (- for standard input)")
    parser.add_argument("--limit", type=int, default=30, metavar="N", help="rows to show (default 30)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    config = load(args, flags)
    classifier = Classifier(config)
    queues = set(args.queue or [q for q in QUEUES if q not in PARKED])
    now = time.time()
    rows: dict[str, list[int]] = {}
    sources = []
    listed = list(POSTFIX_QUEUES)  # the queues of the MTAs read, for the first line
    try:
        if args.from_json:
            shape(read_listing(args.from_json), classifier, args.by, now, queues, rows=rows)
            sources.append(f"listing {'standard input' if args.from_json == '-' else args.from_json}")
        else:
            queue_readers = readers(config)
            if not queue_readers:
                raise ValueError("no queue to read: Postfix is not found and no exim.instances are configured")
            exim = [r for r in queue_readers if isinstance(r, EximQueueReader)]
            listed = [*(POSTFIX_QUEUES if len(exim) < len(queue_readers) else ()), *(EXIM_QUEUES if exim else ())]
            for name, messages, source in _live(queue_readers):
                shape(messages, classifier, args.by, now, queues, name, rows)
                sources.append(source)
    except (OSError, ValueError) as exc:
        print(f"mtaq-exporter qshape: cannot read the queue: {exc}", file=sys.stderr)
        return 2
    if args.json:
        total, ordered = ranked(rows, args.limit)
        print(json.dumps({"by": args.by, "source": sources, "read_at": now, "buckets": list(BUCKETS),
                          "total": {"total": sum(total), "counts": total},
                          "rows": [{"key": k, "total": sum(v), "counts": v} for k, v in ordered],
                          "rows_omitted": max(0, len(rows) - args.limit)}, indent=2))
    else:
        print(f"queue: {'; '.join(sources)}; queues {', '.join(q for q in listed if q in queues)}; "
              f"ages as of {when(now)}")
        print(render(rows, args.by, args.limit))
    return 0

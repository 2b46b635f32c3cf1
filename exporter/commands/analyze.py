"""``mtaq-exporter analyze [--json] [--top N] LOG…``: an incident report from finished mail logs.

Reads whole files (plain or gzip, recognised by content; ``-`` reads standard input), through
the same parser and delivery accounting as the agent, so expiry, bounce and self-deferral rules
are identical. Reports outcomes by lane and by provider, retry rate per provider (deferred
attempts / all attempts), top deferral reasons with a sample reply, hard/soft bounces and the
bounce ratio, dead letters with their last reason, self-inflicted deferrals and line totals, then
pflogsumm's tables: traffic per hour, delivery per recipient domain and senders by message
count (``exporter/traffic.py``). BSD timestamps have no year: each file's modification time
places them (now, for standard input). A file without a single line of the format gets a warning.

Large files (32 MB and more) are read on the idle cores (``--jobs``): this process reads the files
and sends each forked one its share of the lines by queue id; each accounts the messages of its
share, and their results are put together into the report one process would make.

Postfix and Exim logs are read alike: ``--format exim`` (or ``postfix``) says which MTA wrote them;
by default the format is the one whose parser reads most of the files' first lines.

``--json`` prints one document::

    format           postfix or exim
    files            [{path, lines, parsed, first_timestamp, last_timestamp}]  (epoch seconds or null)
    lines            {total, parsed, ignored, unparsed}
    received         {lane: messages}     (once per queue id; the MTA's own notifications apart, as pflogsumm)
    notifications    {type: messages}     (non_delivery, delay, delivery_status: made by the MTA itself)
    by_lane          {lane: {sent, deferred, bounced, deferred_messages}}   (attempts, then messages)
    by_provider      {provider: {sent, deferred, bounced, deferred_messages, retry_rate}}
                     ("local": hops that stay on the host, content filters and local mailboxes)
    deferral_reasons [{provider, reason, count, sample}]                  (largest first)
    bounces          {hard, soft, final_outcomes, hard_ratio, soft_ratio, hard_share,
                      by_reason: [{type, lane, provider, reason, count, sample}]}
                     (final_outcomes: sent + bounced recipients, provider local left out; hard_ratio and
                      soft_ratio: share of final outcomes, as the rules' bounce ratios; hard_share: share
                      of all bounces that are hard)
    dead_letters     {total, by_reason: [{lane, provider, reason, count}],
                      recent: [{qid, sender, lane, provider, reason, text, first_seen, expired_at,
                                forced, attempts, pending_recipients}]}
    self_deferrals   {reason: count}
    soft_bounce_deferrals {reason: count}  (would-be bounces deferred by the MTA's soft-bounce mode)
    verify_probes    {status: count}
    delivery_delay   [{lane, status, count, mean_seconds}]
    tracked_at_end   messages still in flight (or pending) when the logs end
    per_hour         [{hour, received, sent, deferred, bounced, expired}]  (local "YYYY-MM-DD HH:00";
                      status lines, as pflogsumm's per-hour summary; received: smtpd and pickup)
    recipient_domains [{domain, sent, deferred, bounced, mean_delay_seconds, max_delay_seconds}]  (--top N)
    senders          [{sender, messages, bytes}]  (messages queued per sender, null sender left out; --top N)

Exit status: 0, or 1 when a file could not be read (the others are still reported).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import multiprocessing
import os
import queue
import sys
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import IO, Any, Protocol, TextIO, cast

from collectors.classify import LOCAL, Classifier
from collectors.delivery_accounting import BOUNCED, DEFERRED, SENT, AccountingSnapshot, merge_parts, merge_snapshots
from collectors.exim.log_events import EXIM_LOG
from collectors.log_pipeline import (
    Ignored,
    LineParser,
    LogFormat,
    LogPart,
    LogProcessor,
    LogSplit,
    RoutingParser,
    Unparsed,
)
from collectors.postfix.log_events import POSTFIX_LOG
from exporter.commands.flags import add_config_flags, command_parser, load
from exporter.render import clip, percent, table, when
from exporter.traffic import HOUR_COLUMNS, Traffic, mean

STDIN = "-"
_GZIP = b"\x1f\x8b"
_CHUNK_BYTES = 1 << 20
_PROGRESS_EVERY = 0.5
#: Offline reports may span days of traffic: keep far more message states than the agent does.
_MAX_TRACKED = 2_000_000
_EDGE_LINES = 20  # lines at each end of a file searched for its first/last timestamp
#: Below this much data (in all files) one process is quicker than starting more.
_SPLIT_BYTES = 32 << 20
#: One process reads and routes every line for all: beyond a few parts it is what they wait for.
_MAX_JOBS = 4
#: The log formats ``--format`` names; ``auto`` picks the one that reads most of the files' first lines.
FORMATS = {"postfix": POSTFIX_LOG, "exim": EXIM_LOG}
_SNIFF_BYTES = 65536
_SNIFF_LINES = 50
#: What a file of each format looks like, for the warning about a file that is none.
_EXPECTED = {"postfix": "a Postfix mail log: none of its {n} lines is a Postfix log line (expected syslog or journal "
                        "lines of postfix/smtp, postfix/qmgr, ...)",
             "exim": "an Exim main log: none of its {n} lines is an Exim log line (expected lines such as "
                     "'2026-12-01 15:38:36 1xYPwB-0006EL-0J => user@example.com R=... T=...')"}


class FileClock:
    """The reference time for year-less timestamps: the mtime of the file being read."""

    def __init__(self) -> None:
        self.reference = time.time()

    def __call__(self) -> float:
        return self.reference


def _open(path: str) -> tuple[IO[bytes], IO[bytes] | None]:
    """(stream to read lines from, raw file whose position tracks progress; None for standard input)."""
    if path == STDIN:
        stdin = sys.stdin.buffer
        return (gzip.GzipFile(fileobj=stdin) if stdin.peek(2)[:2] == _GZIP else stdin), None
    raw = open(path, "rb")  # noqa: SIM115 - closed by the caller
    if raw.read(2) == _GZIP:
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw), raw
    raw.seek(0)
    return raw, raw


def _chunks(stream: IO[bytes]) -> Iterator[list[str]]:
    """Decoded lines, about a megabyte at a time (invalid UTF-8 replaced, never fatal).

    Read in blocks and cut after the last newline of each: a third cheaper than ``readlines``,
    which makes an object of every line before they are joined to be decoded at once."""
    pending: list[bytes] = []  # the start of a line that has not ended yet
    while block := stream.read(_CHUNK_BYTES):
        cut = block.rfind(b"\n") + 1
        if not cut:  # a very long line: joined once when it ends, never copied block by block
            pending.append(block)
            continue
        lines = b"".join((*pending, block[:cut])).decode("utf-8", "replace").split("\n")
        lines.pop()  # what follows the last newline: nothing
        pending = [block[cut:]]
        yield lines
    if any(pending):  # a last line without its newline
        yield [b"".join(pending).decode("utf-8", "replace")]


class _Progress:
    """A one-line progress indicator on a terminal's stderr, silent otherwise."""

    def __init__(self, out: TextIO) -> None:
        self._out = out if out.isatty() else None
        self._shown = time.monotonic()

    def update(self, path: str, done: int, size: int) -> None:
        if self._out is None or time.monotonic() - self._shown < _PROGRESS_EVERY:
            return
        self._shown = time.monotonic()
        percent = 100 * done / size if size else 100
        self._out.write(f"\ranalyze: {os.path.basename(path)} {percent:5.1f}% of {size / 1e6:.1f} MB ")
        self._out.flush()

    def clear(self) -> None:
        if self._out is not None:
            self._out.write("\r\033[K")
            self._out.flush()


def _edge_timestamp(parser: LineParser, lines: list[str]) -> float | None:
    for line in lines:
        timestamp = getattr(parser.parse(line), "timestamp", None)
        if timestamp is not None:
            return timestamp
    return None


def _head_lines(path: str) -> list[str]:
    """The first lines of a file (plain or gzip; ``-``: what standard input has buffered), unread."""
    try:
        if path == STDIN:
            data = sys.stdin.buffer.peek(_SNIFF_BYTES)
            if data[:2] == _GZIP:
                data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, _SNIFF_BYTES)
        else:
            with open(path, "rb") as raw:
                data = raw.read(_SNIFF_BYTES)
            if data[:2] == _GZIP:
                with gzip.open(path, "rb") as unpacked:
                    data = unpacked.read(_SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        return []
    return data.decode("utf-8", "replace").split("\n")[:_SNIFF_LINES]


def detect_format(paths: list[str]) -> str:
    """The format (a key of ``FORMATS``) whose parser reads most of the files' first lines as its
    own; Postfix when none reads any."""
    heads = [line for path in paths for line in _head_lines(path)]

    def own_lines(log_format: LogFormat) -> int:
        parse = log_format.parser(time.time).parse
        own_chatter = Ignored(log_format.mta)  # the MTA's own lines without accounting value count too
        return sum(1 for record in map(parse, heads)
                   if type(record) not in (Unparsed, Ignored) or record == own_chatter)

    scores = {name: own_lines(log_format) for name, log_format in FORMATS.items()}
    return max(scores, key=lambda name: (scores[name], name == "postfix"))


class _Sink(Protocol):
    """Where ``read_logs`` puts each batch of a file's lines."""

    def process_lines(self, source: str, lines: list[str]) -> None:
        """Account ``lines`` of ``source``."""
        ...


def read_logs(paths: list[str], classifier: Classifier, progress_to: TextIO = sys.stderr,
              traffic: Traffic | None = None, log_format: LogFormat = POSTFIX_LOG,
              jobs: int = 1) -> tuple[Results, list[dict[str, Any]], list[str]]:
    """Feed every file (``-``: standard input) to one processor of ``log_format``, or with ``jobs``
    above 1 to this process and ``jobs - 1`` forked ones by queue id (``SplitAccounting``), the
    records shown to ``traffic`` too when given; returns the results, per-file facts and read errors."""
    clock = FileClock()
    edge_parser = log_format.parser(clock)
    sink: LogProcessor | SplitAccounting
    if jobs > 1:
        sink = SplitAccounting(log_format, classifier, jobs, clock, traffic)
    else:
        observed = traffic.observing(log_format) if traffic is not None else log_format
        sink = LogProcessor(observed, classifier, clock=clock, max_tracked_messages=_MAX_TRACKED)
    progress = _Progress(progress_to)
    files: list[dict[str, Any]] = []
    errors: list[str] = []
    for path in paths:
        try:
            stream, raw = _open(path)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror or exc}")
            continue
        with contextlib.ExitStack() as closing:
            if raw is not None:  # standard input stays open
                closing.enter_context(raw)
                closing.enter_context(stream)
            size = os.fstat(raw.fileno()).st_size if raw is not None else 0
            # Standard input has no modification time: year-less timestamps are placed by now.
            clock.reference = os.fstat(raw.fileno()).st_mtime if raw is not None else time.time()
            head: list[str] = []
            tail: list[str] = []
            count = 0
            try:
                for lines in _chunks(stream):
                    sink.process_lines(path, lines)
                    count += len(lines)
                    if len(head) < _EDGE_LINES:
                        head += lines[:_EDGE_LINES - len(head)]
                    tail = (tail + lines[-_EDGE_LINES:])[-_EDGE_LINES:]
                    if raw is not None:
                        progress.update(path, raw.tell(), size)
            except (OSError, EOFError) as exc:  # unreadable or corrupt gzip: keep what was read
                errors.append(f"{path}: {exc}")
        files.append({"path": path, "lines": count,
                      "first_timestamp": _edge_timestamp(edge_parser, head),
                      "last_timestamp": _edge_timestamp(edge_parser, tail[::-1])})
    progress.clear()
    results = sink.finish() if isinstance(sink, SplitAccounting) else sink
    counts = results.line_counts()
    for facts in files:
        facts["parsed"] = counts.get(facts["path"], {}).get("parsed", 0)
    return results, files, errors


class Results(Protocol):
    """What a report is made of: a ``LogProcessor``, or the parts of a split read put together."""

    def line_counts(self) -> dict[str, dict[str, int]]:
        """Lines per source and result."""
        ...

    def snapshots(self) -> Mapping[str, AccountingSnapshot]:
        """Accounting snapshots by MTA instance."""
        ...


@dataclass(frozen=True)
class SplitResults:
    """The parts of a split read put together (``SplitAccounting``)."""

    counts: dict[str, dict[str, int]]
    merged: dict[str, AccountingSnapshot]

    def line_counts(self) -> dict[str, dict[str, int]]:
        """Lines per source and result, summed over the parts."""
        return {source: dict(counts) for source, counts in self.counts.items()}

    def snapshots(self) -> Mapping[str, AccountingSnapshot]:
        """Each instance's snapshot, as one processor would have made it (``merge_parts``)."""
        return self.merged


def jobs_for(paths: list[str], log_format: LogFormat, requested: int = 0) -> int:
    """How many processes read ``paths``: one when the format's parser cannot split a log by queue
    id; else ``requested``, or for 0 one per idle core (cores less the 1-minute load average), up
    to four, when the files are large (standard input, whose size is unknown: one). Splitting costs about
    30% more CPU in all (routing every line, passing the parts' shares): on cores that other work
    keeps busy it is slower than one process."""
    if not isinstance(log_format.parser(time.time), RoutingParser):
        return 1
    if requested:
        return requested
    if STDIN in paths:
        return 1
    size = 0
    for path in paths:
        with contextlib.suppress(OSError):
            size += os.path.getsize(path)
    if size < _SPLIT_BYTES:
        return 1
    idle = len(os.sched_getaffinity(0)) - os.getloadavg()[0]
    return max(1, min(round(idle), _MAX_JOBS))


#: Relative shares of queue ids of this process, which also reads, decodes and routes every line,
#: and of each forked one: 2:3 finished both parts closest together on two cores (1:1 and 1:2 left
#: one waiting for the other by 0.1 to 0.3 s of 2.3 s on the 1M-line corpus of bench/analyze_bench.py).
_READER_WEIGHT = 2
_PART_WEIGHT = 3
#: Batches queued for a forked part before the reader waits for it (about a megabyte each).
_QUEUED_BATCHES = 16


class SplitAccounting:
    """A log accounted by this process and ``jobs - 1`` forked ones, split by queue id.

    This process reads the files, routes every line (``LogSplit``), accounts its own share and
    passes each forked part its share with the lines' places in the log, through a pipe fed by a
    thread so that reading never waits for a busy part. ``finish()`` collects the parts' results
    and puts them together into what one processor would have made (``merge_parts``); their
    traffic tables are added to ``traffic``.
    """

    def __init__(self, log_format: LogFormat, classifier: Classifier, jobs: int, clock: FileClock,
                 traffic: Traffic | None = None) -> None:
        self._clock = clock
        self._traffic = traffic
        self._split = LogSplit(cast(RoutingParser, log_format.parser(clock)),
                               [_READER_WEIGHT, *[_PART_WEIGHT] * (jobs - 1)])
        observed = traffic.observing(log_format) if traffic is not None else log_format
        # Forked, not spawned: the parts start at once, with the classification already built.
        context = multiprocessing.get_context("fork")
        self._workers: list[_Worker] = []
        for _ in range(1, jobs):
            here, there = context.Pipe()
            child = context.Process(target=_account_part, args=(there, log_format, classifier, traffic is not None),
                                    daemon=True)
            child.start()
            there.close()
            self._workers.append(_Worker(child, here))
        self._part = LogPart()
        self._processor = LogProcessor(self._part.format(observed), classifier, clock=clock,
                                       max_tracked_messages=_MAX_TRACKED, serial=self._part.serial)

    def process_lines(self, source: str, lines: list[str]) -> None:
        """Route ``lines`` (the next batch of the log, from ``source``) to their parts and account
        this process's share."""
        own, *shares = self._split.split(lines)
        for worker, (share, places) in zip(self._workers, shares, strict=True):
            worker.send((source, self._clock.reference, "\n".join(share), places))
        self._processor.process_lines(source, self._part.feed(*own))

    def finish(self) -> SplitResults:
        """The parts' results put together; raises RuntimeError when a part failed or died."""
        parts = [(dict(self._processor.snapshots()), self._processor.line_counts())]
        failures = []
        for worker in self._workers:
            result = worker.result()
            if isinstance(result, BaseException):
                failures.append(result)
                continue
            snapshots, counts, tables = result
            parts.append((snapshots, counts))
            if self._traffic is not None:
                self._traffic.add(tables)
        if failures:
            raise RuntimeError(f"analyze: part of the split read failed: {failures[0]!r}") from failures[0]
        counts: dict[str, dict[str, int]] = {}
        for _, part_counts in parts:
            for source, by_result in part_counts.items():
                total = counts.setdefault(source, dict.fromkeys(by_result, 0))
                for result_name, n in by_result.items():
                    total[result_name] += n
        names = list(dict.fromkeys(name for snapshots, _ in parts for name in snapshots))
        merged = {name: merge_parts([snapshots[name] for snapshots, _ in parts if name in snapshots])
                  for name in names}
        return SplitResults(counts, merged)


class _Worker:
    """A forked part as its reader sees it: the pipe, and the thread that feeds it from a queue."""

    def __init__(self, process: BaseProcess, connection: Connection) -> None:
        self._process = process
        self._connection = connection
        self._queue: queue.Queue[tuple[str, float, str, list[int]] | None] = queue.Queue(_QUEUED_BATCHES)
        self._broken: BaseException | None = None
        self._feeder = threading.Thread(target=self._feed, name="analyze-feed", daemon=True)
        self._feeder.start()

    def send(self, batch: tuple[str, float, str, list[int]]) -> None:
        """Queue a batch (source, clock reference, lines joined by newlines, their places)."""
        self._queue.put(batch)

    def _feed(self) -> None:
        while True:
            batch = self._queue.get()
            if self._broken is None:
                try:
                    self._connection.send(batch)
                except OSError as exc:  # the part died: keep draining so that the reader never blocks
                    self._broken = exc
            if batch is None:
                return

    def result(self) -> tuple[dict[str, AccountingSnapshot], dict[str, dict[str, int]], Any] | BaseException:
        """The part's (snapshots, line counts, traffic tables) after the last batch, or why there are none."""
        self._queue.put(None)
        self._feeder.join()
        try:
            result = self._connection.recv()
        except (EOFError, OSError):  # it died without a word: killed, or out of memory
            self._process.join()
            result = RuntimeError(f"the reading process exited with status {self._process.exitcode}")
        self._process.join()
        return result  # type: ignore[no-any-return]


def _account_part(connection: Connection, log_format: LogFormat, classifier: Classifier, observe: bool) -> None:
    """A forked part of ``SplitAccounting``: accounts the batches it is sent until ``None``, then
    sends back its results (or its failure)."""
    try:
        clock = FileClock()
        traffic = Traffic() if observe else None
        part = LogPart()
        observed = traffic.observing(log_format) if traffic is not None else log_format
        processor = LogProcessor(part.format(observed), classifier, clock=clock,
                                 max_tracked_messages=_MAX_TRACKED, serial=part.serial)
        while (batch := connection.recv()) is not None:
            source, clock.reference, text, places = batch
            processor.process_lines(source, part.feed(text.split("\n") if places else [], places))
        connection.send((dict(processor.snapshots()), processor.line_counts(),
                         traffic.tables() if traffic is not None else None))
    except BaseException as exc:  # the reader must learn of it, not wait for a result forever
        connection.send(exc)
    finally:
        connection.close()


def not_a_mail_log(files: list[dict[str, Any]], log_format: str = "postfix") -> list[str]:
    """A warning for each file with lines but not a single log line of ``log_format`` among them."""
    return [f"{_name(f['path'])}: this does not look like {_EXPECTED[log_format].format(n=f['lines'])}"
            for f in files if f["lines"] and not f["parsed"]]


def _name(path: str) -> str:
    return "standard input" if path == STDIN else path


def _ranked(counts: dict[Any, int]) -> list[tuple[Any, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def report(processor: Results, files: list[dict[str, Any]], traffic: Traffic | None = None,
           top: int = 15) -> dict[str, Any]:
    """The JSON document described in the module docstring (every MTA instance together); with
    ``traffic``, its tables too (``top`` rows of domains and senders)."""
    snap = merge_snapshots(processor.snapshots().values())
    lines = {"parsed": 0, "ignored": 0, "unparsed": 0}
    for counts in processor.line_counts().values():
        for result, n in counts.items():
            lines[result] += n
    by_lane: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(
        ("sent", "deferred", "bounced", "deferred_messages"), 0))
    by_provider: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(
        ("sent", "deferred", "bounced", "deferred_messages"), 0))
    for (lane, provider, status), n in snap.delivery_attempts.items():
        by_lane[lane][status] += n
        by_provider[provider][status] += n
    for (lane, provider), n in snap.messages_deferred.items():
        by_lane[lane]["deferred_messages"] += n
        by_provider[provider]["deferred_messages"] += n
    for row in by_provider.values():
        attempts = row["sent"] + row["deferred"] + row["bounced"]
        row["retry_rate"] = round(row["deferred"] / attempts, 4) if attempts else 0.0
    bounce_types = {"hard": 0, "soft": 0}
    external = {"hard": 0, "soft": 0}  # hops that stay on the host are no final outcome (as in the rules)
    for (_, provider, kind, _), n in snap.bounces.items():
        bounce_types[kind] += n
        if provider != LOCAL:
            external[kind] += n
    bounced = bounce_types["hard"] + bounce_types["soft"]
    finals = sum(n for (_, provider, status), n in snap.delivery_attempts.items()
                 if status == SENT and provider != LOCAL) + external["hard"] + external["soft"]
    samples = snap.reason_samples
    return {
        "files": files,
        "lines": {"total": sum(lines.values()), **lines},
        "received": {lane: n for (lane,), n in sorted(snap.messages_received.items())},
        "notifications": {kind: n for (kind,), n in _ranked(snap.notifications)},
        "by_lane": dict(sorted(by_lane.items())),
        "by_provider": dict(sorted(by_provider.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))),
        "deferral_reasons": [
            {"provider": provider, "reason": reason, "count": n,
             "sample": samples.get((DEFERRED, provider, reason), "")}
            for (provider, reason), n in _ranked(snap.deferrals)],
        "bounces": {
            **bounce_types,
            "final_outcomes": finals,
            "hard_ratio": round(external["hard"] / finals, 4) if finals else None,
            "soft_ratio": round(external["soft"] / finals, 4) if finals else None,
            "hard_share": round(bounce_types["hard"] / bounced, 4) if bounced else None,
            "by_reason": [
                {"type": kind, "lane": lane, "provider": provider, "reason": reason, "count": n,
                 # Soft bounces at expiry have no reply of their own: show the deferral's.
                 "sample": samples.get((BOUNCED, provider, reason)) or samples.get((DEFERRED, provider, reason), "")}
                for (lane, provider, kind, reason), n in _ranked(snap.bounces)],
        },
        "dead_letters": {
            "total": sum(snap.dead_letters.values()),
            "by_reason": [{"lane": lane, "provider": provider, "reason": reason, "count": n}
                          for (lane, provider, reason), n in _ranked(snap.dead_letters)],
            "recent": [
                {"qid": d.qid, "sender": d.sender, "lane": d.lane, "provider": d.provider, "reason": d.reason,
                 "text": d.text, "first_seen": d.first_seen, "expired_at": d.expired_at, "forced": d.forced,
                 "attempts": d.attempts, "pending_recipients": d.pending_recipients}
                for d in reversed(snap.dead_letter_log)],
        },
        "self_deferrals": {reason: n for (reason,), n in _ranked(snap.self_deferrals)},
        "soft_bounce_deferrals": {reason: n for (reason,), n in _ranked(snap.soft_bounces)},
        "verify_probes": {status: n for (status,), n in _ranked(snap.probes)},
        "delivery_delay": [
            {"lane": lane, "status": status, "count": h.count,
             "mean_seconds": mean(h.total, h.count)}
            for (lane, status), h in sorted(snap.delivery_delay.items())],
        "tracked_at_end": snap.tracked_messages,
        **(traffic.report(top) if traffic is not None else {}),
    }


def render(doc: dict[str, Any], top: int) -> str:
    """The human report: one section per question an operator asks during an incident."""
    out: list[str] = []
    lines = doc["lines"]
    out.append(f"Lines: {lines['total']} ({lines['parsed']} parsed, {lines['ignored']} ignored, "
               f"{lines['unparsed']} unparsed)")
    for f in doc["files"]:
        out.append(f"  {_name(f['path'])}: {f['lines']} lines, {when(f['first_timestamp'])} .. "
                   f"{when(f['last_timestamp'])}")
    out.append("")
    out.append("Messages received by lane: " + (", ".join(f"{lane} {n}" for lane, n in doc["received"].items())
                                                  or "none"))
    if doc["notifications"]:
        out.append("Notifications the MTA made itself (not received mail): "
                   + ", ".join(f"{kind} {n}" for kind, n in doc["notifications"].items()))
    out.append("")
    out.append("Delivery attempts by lane (deferred msgs = unique messages deferred at least once)")
    out += table(["lane", "sent", "deferred", "bounced", "deferred msgs"],
                 [[lane, r["sent"], r["deferred"], r["bounced"], r["deferred_messages"]]
                  for lane, r in doc["by_lane"].items()], indent="  ")
    out.append("")
    out.append("Delivery attempts by provider (retry rate = deferred / all attempts; local = hops on this host)")
    out += table(["provider", "sent", "deferred", "bounced", "deferred msgs", "retry rate"],
                 [[provider, r["sent"], r["deferred"], r["bounced"], r["deferred_messages"],
                   f"{100 * r['retry_rate']:.1f}%"] for provider, r in list(doc["by_provider"].items())[:top]],
                 indent="  ")
    out.append("")
    out.append("Top deferral reasons")
    for row in doc["deferral_reasons"][:top]:
        out.append(f"  {row['count']:>8}  {row['provider']}/{row['reason']}: {clip(row['sample'])}")
    if not doc["deferral_reasons"]:
        out.append("  none")
    out.append("")
    bounces = doc["bounces"]
    out.append(f"Bounces: {bounces['hard']} hard, {bounces['soft']} soft ({percent(bounces['hard_share'])} of "
               f"bounces are hard); bounce ratio {percent(bounces['hard_ratio'])} hard, "
               f"{percent(bounces['soft_ratio'])} soft of {bounces['final_outcomes']} final outcomes to providers")
    for row in bounces["by_reason"][:top]:
        out.append(f"  {row['count']:>8}  {row['type']:<4} {row['lane']}/{row['provider']}/{row['reason']}: "
                   f"{clip(row['sample'])}")
    out.append("")
    dead = doc["dead_letters"]
    out.append(f"Dead letters (expired, returned to sender): {dead['total']}")
    for row in dead["by_reason"][:top]:
        out.append(f"  {row['count']:>8}  {row['lane']}/{row['provider']}/{row['reason']}")
    for d in dead["recent"][:top]:
        forced = " (forced)" if d["forced"] else ""
        out.append(f"  {d['qid']}{forced} from <{d['sender'] or ''}> expired {when(d['expired_at'])} after "
                   f"{d['attempts']} attempts, {d['pending_recipients']} recipients pending; last: "
                   f"{d['provider']}/{d['reason']}: {clip(d['text'], 80)}")
    out.append("")
    out.append("Self-inflicted deferrals (not counted as provider retries): "
               + (", ".join(f"{reason} {n}" for reason, n in doc["self_deferrals"].items()) or "none"))
    if doc["soft_bounce_deferrals"]:
        out.append("Soft-bounce mode is on: would-be bounces deferred instead: "
                   + ", ".join(f"{reason} {n}" for reason, n in doc["soft_bounce_deferrals"].items()))
    if doc["verify_probes"]:
        out.append("Address-verification probes (not deliveries): "
                   + ", ".join(f"{status} {n}" for status, n in doc["verify_probes"].items()))
    out.append(f"Messages still tracked at the end of the logs: {doc['tracked_at_end']}")
    if "per_hour" in doc:
        out += _traffic(doc, top)
    return "\n".join(out)


def _traffic(doc: dict[str, Any], top: int) -> list[str]:
    """pflogsumm's tables: traffic per hour, delivery per recipient domain, top senders."""
    out = ["", "Per-hour traffic (status lines, as pflogsumm counts them; received: from smtpd and pickup)"]
    hours = [[h["hour"], *(h[c] for c in HOUR_COLUMNS)] for h in doc["per_hour"]]
    totals = ["TOTAL", *(sum(h[c] for h in doc["per_hour"]) for c in HOUR_COLUMNS)]
    out += table(["hour", "received", "delivered", "deferred", "bounced", "expired"], [*hours, totals], indent="  ")
    out += ["", f"Recipient domains (top {top}: status lines; mean delay of the sent, largest delay of any)"]
    out += table(["domain", "sent", "deferred", "bounced", "mean delay", "max delay"],
                 [[d["domain"], d["sent"], d["deferred"], d["bounced"],
                   "-" if d["mean_delay_seconds"] is None else f"{d['mean_delay_seconds']:.1f} s",
                   f"{d['max_delay_seconds']:.1f} s"] for d in doc["recipient_domains"]], indent="  ")
    out += ["", f"Senders by message count (top {top})"]
    out += table(["sender", "messages", "bytes"], [[s["sender"], s["messages"], s["bytes"]] for s in doc["senders"]],
                 indent="  ")
    return out


def main(argv: list[str]) -> int:
    """Analyze the log files named in ``argv``; print the report (``--json``: one document).

    Lanes, providers and reasons come from the configuration (``--config.file``), as in the agent.
    """
    parser = command_parser("mtaq-exporter analyze", __doc__)
    add_config_flags(parser, ())
    parser.add_argument("logs", nargs="+", metavar="LOG", help="mail log file (plain or gzip; - for standard input)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--top", type=int, default=15, metavar="N",
                        help="rows per ranking (default 15; in --json: recipient domains and senders)")
    parser.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                        help="the MTA whose log this is (default auto: the one whose lines the files start with)")
    parser.add_argument("--jobs", type=int, default=0, metavar="N",
                        help="processes that read the files (default 0: one per idle core, up to 4, for 32 MB "
                             "and more)")
    args = parser.parse_args(argv)
    if args.jobs < 0:
        parser.error("--jobs must be 0 (automatic) or more")
    traffic = Traffic()
    log_format = detect_format(args.logs) if args.format == "auto" else args.format
    classifier = Classifier(load(args, ()))
    jobs = jobs_for(args.logs, FORMATS[log_format], args.jobs)
    results, files, errors = read_logs(args.logs, classifier, traffic=traffic, log_format=FORMATS[log_format],
                                       jobs=jobs)
    for error in errors:
        print(f"mtaq-exporter analyze: cannot read {error}", file=sys.stderr)
    for warning in not_a_mail_log(files, log_format):
        print(f"mtaq-exporter analyze: warning: {warning}", file=sys.stderr)
    doc = {"format": log_format, **report(results, files, traffic, args.top)}
    print(json.dumps(doc, indent=2) if args.json else render(doc, args.top))
    return 1 if errors else 0

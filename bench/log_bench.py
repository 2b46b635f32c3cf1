"""Postfix log ingest throughput: parse, parse+classify+account, the collector, and the tailer (SPEC §8).

Builds a corpus of ``--lines`` lines (default 1M) by replicating a real Postfix log (default: the
test fixture ``tests/fixtures/postfix_log/samples.log`` without its comments; ``--source FILE``
for a captured lab or production log), giving every copy fresh queue ids so each copy is new
mail to the accounting. Then times, on that same corpus:

1. parse only (``PostfixLineParser.parse``);
2. parse + classify + account (``PostfixLogProcessor.process_lines`` in tailer-sized batches);
3. the collector through its tailer sink (bytes, UTF-8 decode, all of the above, one scrape);
4. the real ``Tailer`` reading the corpus from a file into the collector (``poll_once``), in a
   process of its own so that its peak RSS is the agent's, not the in-memory corpus's.

and prints lines/s (wall and CPU), the ratio to ``postfix_exporter``'s ~210k lines/s (the target
is 2x for stage 2 and beyond), and peak RSS.

    .venv/bin/python bench/log_bench.py [--source FILE] [--lines 1000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from collectors.classify import Classifier  # after the sys.path line above, so it runs from a checkout
from collectors.postfix_log import PostfixLogCollector, PostfixLogProcessor
from collectors.postfix_log_parse import Ignored, PostfixLineParser, Unparsed
from collectors.tailer import SourceStats, Tailer

BASELINE = 210_000  # Debian prometheus-postfix-exporter 0.3.0 on a 1M-line real log (SPEC §8)
TARGET = 2 * BASELINE
BATCH = 4096  # lines per sink call, about what the tailer hands over per read
DEFAULT_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                              "postfix_log", "samples.log")


def source_lines(path: str) -> list[str]:
    """The source log's lines, without blank lines and ``#`` comments (fixture annotations)."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


def corpus(lines: list[str], size: int) -> list[str]:
    """``size`` lines: copies of ``lines`` in which every queue id is replaced by a fresh one."""
    parser = PostfixLineParser()
    qids: set[str] = set()
    for line in lines:
        record = parser.parse(line)
        if not isinstance(record, Ignored | Unparsed):
            qids.update(q for q in (getattr(record, "qid", None), getattr(record, "new_qid", None)) if q)
    if not qids:
        return (lines * (size // len(lines) + 1))[:size]
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, qids), key=len, reverse=True)) + r")\b")
    index = {qid: i for i, qid in enumerate(sorted(qids))}
    templates = [pattern.split(line) for line in lines]  # odd items are queue ids
    out: list[str] = []
    copy = 0
    while len(out) < size:
        base = 0x10000000000 + copy * len(index)
        for parts in templates:
            out.append("".join(f"{base + index[p]:X}" if i % 2 else p for i, p in enumerate(parts)))
        copy += 1
    return out[:size]


class _NullTailer:
    """Stands in for the tailer when lines are handed to the sink directly."""

    def __init__(self, paths: list[str], sink: Callable[[str, list[bytes]], None], **_: Any) -> None:
        self.sink = sink
        self.stats = {path: SourceStats() for path in paths}

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""


def _timed(run: Callable[[], None], repeat: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds of ``repeat`` runs."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def _rss_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tail_file(path: str) -> None:
    """Stage 4, run in its own process: the real tailer reads ``path`` into the collector."""
    tailers: list[Tailer] = []

    def factory(*a: Any, **k: Any) -> Tailer:
        tailers.append(Tailer(*a, use_inotify=False, **k))
        return tailers[-1]

    collector = PostfixLogCollector([path], Classifier(), checkpoint_path=None, start_at="start",
                                    tailer_factory=factory)
    wall, cpu = time.perf_counter(), time.process_time()
    tailers[0].poll_once()
    list(collector.families())
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    lines = tailers[0].stats[path].lines
    print(f"{'tailer -> collector, from a file (own process)':<50} {lines / wall:>10,.0f} lines/s wall "
          f"({lines / cpu:>10,.0f} CPU)  {lines / wall / BASELINE:4.2f}x baseline; peak RSS "
          f"{_rss_mb('VmHWM'):.0f} MB, {collector.snapshot().tracked_messages} messages tracked")
    collector.stop()


def main() -> int:
    """Run every stage; exit 1 if parse+classify+account misses 2x the baseline."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="a real Postfix log to replicate")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per stage; the best is reported")
    parser.add_argument("--tail", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tail:
        tail_file(args.tail)
        return 0
    classifier = Classifier()
    lines = corpus(source_lines(args.source), args.lines)
    encoded = [line.encode() for line in lines]
    batches = [lines[i:i + BATCH] for i in range(0, len(lines), BATCH)]
    raw_batches = [encoded[i:i + BATCH] for i in range(0, len(encoded), BATCH)]
    print(f"corpus: {len(lines)} lines from {args.source} ({sum(map(len, encoded)) / 1e6:.0f} MB); "
          f"RSS {_rss_mb('VmRSS'):.0f} MB with the corpus in memory")

    def parse_only() -> None:
        parse = PostfixLineParser().parse
        for line in lines:
            parse(line)

    def account() -> None:
        processor = PostfixLogProcessor(classifier)
        for batch in batches:
            processor.process_lines("bench", batch)

    def collector() -> None:
        tailers: list[_NullTailer] = []

        def factory(*a: Any, **k: Any) -> _NullTailer:
            tailers.append(_NullTailer(*a, **k))
            return tailers[-1]

        c = PostfixLogCollector(["bench"], classifier, checkpoint_path=None, tailer_factory=factory)
        for batch in raw_batches:
            tailers[0].sink("bench", batch)
        list(c.families())

    stages = [("parse only", parse_only), ("parse + classify + account", account),
              ("collector (sink: decode, parse, account, scrape)", collector)]
    results = {}
    for name, run in stages:
        wall, cpu = _timed(run, args.repeat)
        results[name] = len(lines) / wall
        print(f"{name:<50} {len(lines) / wall:>10,.0f} lines/s wall ({len(lines) / cpu:>10,.0f} CPU)  "
              f"{len(lines) / wall / BASELINE:4.2f}x baseline; peak RSS {_rss_mb('VmHWM'):.0f} MB")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mail.log")
        with open(path, "wb") as f:
            for batch in raw_batches:
                f.write(b"\n".join(batch) + b"\n")
        # A fresh process, so that its peak RSS is the agent's own and not the corpus's.
        subprocess.run([sys.executable, os.path.abspath(__file__), "--tail", path], check=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the whole run: {peak:.0f} MB (corpus included); target {TARGET:,} lines/s "
          f"(2x {BASELINE:,}) for parse + classify + account")
    return 0 if results["parse + classify + account"] >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())

"""Exim benchmark: log ingest and a spool read, each against Exim's own tools in the same run.

    sudo .venv/bin/python -m bench.exim_bench [--lines 500000] [--messages 100000] [--repeat 3]

1. Log ingest. A corpus of ``--lines`` lines: the real lab main log
   (``collectors/data/demo_exim_mainlog.log``) replicated with fresh message ids. Timed: the
   parser alone, parser + accounting (what ``analyze`` runs), and the agent's path (the real
   tailer feeding the Exim log collector, from the first line until every line is counted). The
   baseline is ``eximstats``, Exim's own log analyser (Perl, Debian's exim4-base), on the same
   file. ``gvengel/exim_exporter`` (Go) cannot be built here: its module and dependencies come
   from the Go module proxy, and only Debian's and PyPI's registries are reachable (Debian has no
   package of it).
2. Spool read. A split spool of ``--messages`` messages (the lab spool's real -H, -D and message
   log files, replicated with fresh ids; 1% frozen). Timed: a first scan of the agent's queue
   collector (list, parse every -H, stat every -D, read the message logs, classify, tally), then
   a rescan of the unchanged spool and one after 1% of the -H files were rewritten as Exim
   rewrites them (a new file renamed over the old): as updates (inotify says what changed) and,
   with ``spool_inotify: false``, as walks (every file ``stat``ed); against ``exim -bpc``
   (counts the -H files) and ``exim -bp`` (reads every -H, every time), all interleaved
   ``--repeat`` times; medians and ratios. The totals must equal ``-bpc``.

Needs root for the Exim binary (``tests/lab/exim.py`` unpacks Debian's). Prints ratios: the machine
is shared, absolute numbers move between runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from collectors.classify import ClassificationConfig, Classifier
from collectors.exim.instance import EximInstance, EximQueueReader
from collectors.exim.log_events import EXIM_LOG
from collectors.exim.message_id import subdirectory
from collectors.exim.spool import EXIM_QUEUES, QUEUED
from collectors.log_pipeline import LogProcessor
from collectors.queue_collector import QueueCollector
from exporter.agent import build_collectors
from exporter.config import load_config
from exporter.summary import collect_samples
from tests.lab import exim as exim_lab

ROOT = Path(__file__).resolve().parent.parent
LAB_LOG = ROOT / "collectors" / "data" / "demo_exim_mainlog.log"
LAB_SPOOL = ROOT / "collectors" / "data" / "demo_exim_spool"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
CLASSIFIER = ClassificationConfig.model_validate({"local_delivery": {"loopback": False}})


def b62(value: int, width: int) -> str:
    out = ""
    for _ in range(width):
        value, digit = divmod(value, 62)
        out = BASE62[digit] + out
    return out


def fresh_id(serial: int, second: int) -> str:
    """A valid 16-character id: arrival second, a unique "pid" part, a fraction."""
    return f"{b62(second, 6)}-{b62(serial, 6)}-{b62(serial % 3844, 2)}"


def _cpu() -> float:
    """CPU seconds of this process and of the children it has waited for (user + system)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rss_now() -> float:
    """This process's resident memory now, in MB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``work``: on a shared, loaded machine CPU time is the fairer
    measure; both are printed."""
    wall, cpu = time.perf_counter(), _cpu()
    work()
    return time.perf_counter() - wall, _cpu() - cpu


def log_corpus(path: Path, lines: int) -> int:
    """The lab log replicated with fresh ids until ``lines`` lines; returns the count written."""
    template = LAB_LOG.read_text().splitlines()
    ids = sorted({word for line in template for word in line.split()[4:5] if len(word) == 16 and word[6] == "-"})
    written = 0
    with open(path, "w") as out:
        replica = 0
        while written < lines:
            mapping = {old: fresh_id(replica * len(ids) + i, 1_796_000_000 + replica) for i, old in enumerate(ids)}
            for line in template:
                parts = line.split(" ", 5)
                if len(parts) > 4 and parts[4] in mapping:
                    parts[4] = mapping[parts[4]]
                    line = " ".join(parts)
                out.write(line + "\n")
                written += 1
                if written == lines:
                    break
            replica += 1
    return written


def bench_log(lines: int, workdir: Path) -> None:
    corpus = workdir / "mainlog"
    count = log_corpus(corpus, lines)
    text = corpus.read_text().splitlines()
    parser = EXIM_LOG.parser(time.time)
    parse_s = timed(lambda: [parser.parse(line) for line in text])

    def account() -> None:
        LogProcessor(EXIM_LOG, Classifier(CLASSIFIER), max_tracked_messages=2_000_000).process_lines("bench", text)

    account_s = timed(account)
    config = load_config(environ={}, overrides={
        "postfix": {"enabled": False}, "log": {"from": "start", "max_tracked_messages": 2_000_000},
        "exim": {"instances": [{"log_path": str(corpus)}]}, "collectors": {"exim_queue": False}})
    (collector,) = build_collectors(config, Classifier(config))

    def tail() -> None:
        collector.start()
        try:
            while sum(v for labels, v in collect_samples([collector]).get("mtaq_log_lines_total", ())) < count:
                time.sleep(0.1)
        finally:
            collector.stop()

    agent_s = timed(tail)
    eximstats = str(exim_lab.UNPACKED / "usr" / "sbin" / "eximstats")
    baseline_s = timed(lambda: subprocess.run(["perl", eximstats, "-txt", str(corpus)], capture_output=True,
                                              check=True))
    print(f"log ingest, {count} lines ({corpus.stat().st_size / 1e6:.0f} MB); lines/s by CPU time (wall):")
    for name, (wall, cpu) in (("parse only", parse_s), ("parse + accounting", account_s),
                              ("agent (tailer + collector)", agent_s), ("eximstats (Exim's analyser)", baseline_s)):
        print(f"  {name:30} {count / cpu:>10,.0f} lines/s  ({count / wall:>9,.0f} wall)")
    print(f"  ratio agent / eximstats: {baseline_s[1] / agent_s[1]:.1f}x CPU ({baseline_s[0] / agent_s[0]:.1f}x wall); "
          f"parse + accounting / eximstats: {baseline_s[1] / account_s[1]:.1f}x CPU")


def build_spool(spool: Path, messages: int) -> None:
    """A split spool of ``messages`` messages from the lab spool's real files, with fresh ids."""
    templates = []
    for header in sorted(LAB_SPOOL.glob("input/*/*-H")):
        message_id = header.name[:-2]
        data = (header.parent / f"{message_id}-D").read_bytes()
        msglog = LAB_SPOOL / "msglog" / message_id[5] / message_id
        templates.append((message_id, header.read_bytes(), data, msglog.read_bytes() if msglog.exists() else None))
    for part in ("input", "msglog"):
        for digit in BASE62:
            (spool / part / digit).mkdir(parents=True, exist_ok=True)
    for serial in range(messages):
        old, header, data, msglog = templates[serial % len(templates)]
        new = fresh_id(serial, 1_796_000_000 + serial // 50)
        directory = spool / "input" / subdirectory(new)
        if serial % 100 == 0 and b"-frozen" not in header:
            header = header.replace(b"\n-received_protocol", b"\n-frozen 1796000000\n-received_protocol", 1)
        (directory / f"{new}-H").write_bytes(header.replace(old.encode(), new.encode(), 1))
        (directory / f"{new}-D").write_bytes(data.replace(old.encode(), new.encode(), 1))
        if msglog is not None:
            (spool / "msglog" / subdirectory(new) / new).write_bytes(msglog)
    subprocess.run(["chown", "-R", f"{exim_lab.USER}:{exim_lab.USER}", str(spool)], check=True)


def bench_spool(messages: int, repeat: int, workdir: Path) -> None:
    spool = workdir / "spool"
    build_spool(spool, messages)
    config = workdir / "exim.conf"
    config.write_text(f"spool_directory = {spool}\nsplit_spool_directory = true\nexim_user = {exim_lab.USER}\n"
                      f"exim_group = {exim_lab.USER}\nkeep_environment =\nlog_file_path = {workdir}/%slog\n")
    exim = [exim_lab.install().as_posix(), "-C", str(config)]
    headers = sorted(spool.glob("input/*/*-H"))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in (
        "agent first scan (read all)", "agent update, unchanged", "agent update, 1% rewritten",
        "agent walk, unchanged (no inotify)", "agent walk, 1% rewritten", "exim -bpc (count)",
        "exim -bp (full listing)")}
    first, unchanged, changed, walk_unchanged, walk_changed, bpc, bp = runs.values()
    for round_ in range(repeat):
        for inotify in (True, False):
            reader = EximQueueReader(EximInstance(name="bench", spool_directory=str(spool), spool_inotify=inotify))
            collector = QueueCollector("exim_queue", "exim", [reader], Classifier(CLASSIFIER), EXIM_QUEUES,
                                       deferred_queue=QUEUED, interval=3600)
            before = _rss_now()
            first.append(timed(collector.refresh))
            if inotify and round_ == 0:
                kept = _rss_now() - before  # what one reader keeps of every message (and the arenas it grew)
            (unchanged if inotify else walk_unchanged).append(timed(collector.refresh))
            rewritten = headers[2 * round_ + inotify::100]
            for header in rewritten:  # as Exim rewrites a -H file after an attempt: a new file renamed over it
                copy = header.with_name(header.name + ".new")
                shutil.copy2(header, copy)
                copy.rename(header)
            (changed if inotify else walk_changed).append(timed(collector.refresh))
            assert reader.last_read == len(rewritten), (reader.last_read, len(rewritten))
            assert reader.walk == (None if inotify else "no inotify"), reader.walk
            snapshot = collector.snapshot("bench")
            collector.stop()
            del reader, collector  # the next reader starts alone
            gc.collect()
        bpc.append(timed(lambda: subprocess.run([*exim, "-bpc"], capture_output=True, check=True)))
        bp.append(timed(lambda: subprocess.run([*exim, "-bp"], capture_output=True, check=True)))
    counted = int(subprocess.run([*exim, "-bpc"], capture_output=True, text=True, check=True).stdout)
    assert snapshot is not None and snapshot.total_messages == counted == messages, (snapshot, counted)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"spool read, {messages} messages (split spool, {sum(1 for _ in spool.rglob('*'))} files), "
          f"median of {repeat}, CPU seconds (wall):")
    medians = {}
    for name, timing in runs.items():
        wall, cpu = statistics.median(w for w, _ in timing), statistics.median(c for _, c in timing)
        medians[name] = (wall, cpu)
        print(f"  {name:38} {cpu:7.3f} s ({wall:7.3f} s)")
    first_m, unchanged_m, changed_m, walk_unchanged_m, walk_changed_m, bpc_m, bp_m = medians.values()
    print(f"  ratio exim -bp / agent (CPU): first scan {bp_m[1] / first_m[1]:.2f}x; 1% rewritten: update "
          f"{bp_m[1] / changed_m[1]:.0f}x, walk {bp_m[1] / walk_changed_m[1]:.1f}x; unchanged: update "
          f"{bp_m[1] / unchanged_m[1]:.0f}x, walk {bp_m[1] / walk_unchanged_m[1]:.1f}x; "
          f"exim -bpc / agent first scan: {bpc_m[1] / first_m[1]:.2f}x; totals equal -bpc ({counted}); "
          f"RSS the first scan added {kept:.0f} MB (the reader's state), peak so far {rss:.0f} MB")


def main() -> None:
    """Run both benchmarks and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=500_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    reason = exim_lab.available()
    if reason:
        raise SystemExit(f"exim_bench: {reason}")
    exim_lab.install()
    workdir = Path(tempfile.mkdtemp(prefix="mtaq-exim-bench-"))
    os.chmod(workdir, 0o755)
    try:
        bench_spool(args.messages, args.repeat, workdir)  # first: the peak RSS it prints is the scan's
        bench_log(args.lines, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

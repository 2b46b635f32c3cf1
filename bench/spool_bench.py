"""Spool reader benchmark: mtaq's spool source vs its showq read vs Debian's
prometheus-postfix-exporter, on the same real queue, in one run (SPEC §8, issue 15).

    sudo .venv/bin/python -m bench.spool_bench [--messages 100000] [--repeat 3] [--lab-dir DIR]

1. Builds a deferred queue of ``--messages`` messages in a private real Postfix (the lab, with
   ``defer_transports = smtp`` and day-long retry times, so that the queue stays put), injected
   over SMTP by ``--threads`` clients at once; every message has a queue file and a defer log.
   With ``--lab-dir`` the lab is kept there and a later run reuses its queue (topped up to
   ``--messages``): a 1M-message queue takes about half an hour to build here.
2. After one untimed showq read (so that every timed read finds the queue in the page cache),
   times, interleaved, a full read through showq by mtaq (showq → decode → classify → tally, a
   fresh process each time) and a ``/metrics`` scrape of ``prometheus-postfix-exporter`` on the
   same socket, ``--repeat`` times each.
3. ``--repeat`` times, in a fresh process of its own (so that its peak RSS is the reader's): the
   spool reader's first scan (nothing cached: worker processes read the files), a rescan of the
   unchanged queue (inotify: nothing to look at), then — after 1% of the messages changed (a third
   put on hold with ``postsuper -h``: moved, a third deleted with ``postsuper -d``, a third new ones
   injected and deferred) — the steady-state rescan, whose totals are checked against a showq read
   of the same state. Once more with one process only (``spool_processes: 1``) and without inotify
   (every rescan ``stat``s every file), for comparison.
4. Prints each figure as the range over the repeats (the machine is shared: expect noise) and the
   ratios measured in this run: the targets are a first scan no slower than showq, a steady-state
   rescan at least 10x faster than showq (and under 2 s at 1M), peak RSS under 300 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.queue_bench import ROOT, inject, mtaq_read, queue_files, showq_baselines
from tests.lab.postfix import PostfixLab, start_lab

#: The spool side, in a process of its own: scans when told to on stdin, one JSON line per scan.
SPOOL_SCANS = """
import json, os, sys, threading, time
from collectors.classify import Classifier, ClassificationConfig
from collectors.postfix.spool import SpoolQueueReader
from collectors.postfix.showq import POSTFIX_QUEUES
from collectors.queue_collector import QueueCollector
lanes = ClassificationConfig.model_validate({"lanes": {"rules": [
    {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
    {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]}})
reader = SpoolQueueReader("bench", sys.argv[1], files_per_second=float(sys.argv[2]), processes=int(sys.argv[3]),
                          inotify=sys.argv[4] == "inotify")
c = QueueCollector("postfix_queue", "postfix", [reader], Classifier(lanes), POSTFIX_QUEUES, read_timeout=3600)

def peak_rss(pid="self"):
    # VmHWM: the process's own peak (ru_maxrss carries the parent's over fork and exec)
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0

workers_peak = [0]

def is_worker(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"spool_workers" in cmdline.read()
    except OSError:
        return False

def watch_workers():
    while True:
        for task in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{task}/children") as children:
                    pids = children.read().split()
            except OSError:
                continue
            # only workers that have started: before exec, a child's status is the parent's
            workers_peak[0] = max([workers_peak[0], *(peak_rss(pid) for pid in pids if is_worker(pid))])
        time.sleep(0.05)

threading.Thread(target=watch_workers, daemon=True).start()
for line in sys.stdin:
    began = time.perf_counter()
    assert c.run_refresh(), c.health.view().last_error
    elapsed = time.perf_counter() - began
    s = reader.stats
    print(json.dumps({"seconds": elapsed, "messages": c.snapshot("bench").total_messages, "walk": s.walk,
                      "workers": s.workers, "files": s.files, "read": s.read, "moved": s.moved,
                      "removed": s.removed, "rss_kib": peak_rss(), "worker_rss_kib": workers_peak[0]}), flush=True)
c.stop()
"""

#: A queue that stays put: nothing is attempted (``defer_transports``) and no deferred message is
#: due again for a day, so that a queue built once can be measured again later (``--lab-dir``).
LAB_SETTINGS = {"defer_transports": "smtp", "smtpd_client_connection_count_limit": "0", "in_flow_delay": "0",
                "qmgr_message_active_limit": "50000", "queue_run_delay": "1d", "minimal_backoff_time": "1d",
                "maximal_backoff_time": "1d"}


def queued(lab: PostfixLab) -> int:
    """Messages in the (settled) queue: deferred and held files."""
    return queue_files(lab.queue_dir, "deferred") + queue_files(lab.queue_dir, "hold")


def build_queue(lab: PostfixLab, messages: int, threads: int) -> None:
    """Top the lab's queue up to ``messages`` messages over SMTP and wait until Postfix has
    deferred them all (each then has a queue file and a defer log)."""
    began = time.monotonic()
    missing = messages - queued(lab)
    if missing > 0:
        rate = inject(lab.smtp_port, missing, threads=threads)
        print(f"queue: {missing} messages injected over SMTP at {rate:.0f} msg/s ({threads} clients)", flush=True)
    lab.wait_for(lambda: queued(lab) >= messages, timeout=14400, what="all messages deferred")
    print(f"queue: {queued(lab)} messages deferred or held, built in {time.monotonic() - began:.0f} s", flush=True)


def change_one_percent(lab: PostfixLab, messages: int) -> dict[str, int]:
    """Hold a third of 1% of the deferred messages, delete a third, inject a third anew and wait
    until the new ones are deferred."""
    ids = sorted(name for _, _, names in os.walk(lab.queue_dir / "deferred") for name in names)
    share = max(1, messages // 300)
    for command, chosen in (("-h", ids[:share]), ("-d", ids[share:2 * share])):
        subprocess.run(["postsuper", "-c", str(lab.config_dir), command, "-"], input="\n".join(chosen) + "\n",
                       text=True, check=True, capture_output=True)
    before = queue_files(lab.queue_dir, "deferred")
    inject(lab.smtp_port, share, threads=1)
    lab.wait_for(lambda: queue_files(lab.queue_dir, "deferred") >= before + share, timeout=600,
                 what="the new messages deferred")
    return {"held": share, "deleted": share, "new": share}


class SpoolProcess:
    """The spool reader in a process of its own, scanning on demand."""

    def __init__(self, lab: PostfixLab, files_per_second: float, processes: int, inotify: bool) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SPOOL_SCANS, str(lab.queue_dir), str(files_per_second),
                                      str(processes), "inotify" if inotify else "stat"],
                                     cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def scan(self) -> dict:
        """One scan: its figures."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("scan\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        """End the process."""
        self.proc.terminate()
        self.proc.wait()


def spool_round(lab: PostfixLab, args: argparse.Namespace, processes: int, inotify: bool) -> dict[str, dict]:
    """First scan, unchanged rescan, 1% changed, steady-state rescan (checked against showq)."""
    spool = SpoolProcess(lab, args.files_per_second, processes, inotify)
    try:
        first = spool.scan()
        expected = queued(lab)
        assert first["messages"] == expected, (first, expected)
        unchanged = spool.scan()
        changes = change_one_percent(lab, args.messages)
        steady = spool.scan()
    finally:
        spool.close()
    after_s, after_count, _ = mtaq_read(str(lab.showq_path))
    assert steady["messages"] == after_count, (steady, after_count)
    return {"first": first, "unchanged": unchanged, "steady": steady, "changes": changes,
            "showq_after": {"seconds": after_s}}


def span(values: list[float], unit: str = "s", digits: int = 3) -> str:
    """A range over repeats: 'min to max (median)'."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f} {unit}"
    return (f"{min(values):.{digits}f} to {max(values):.{digits}f} {unit} "
            f"(median {statistics.median(values):.{digits}f})")


def ratio(numerators: list[float], denominators: list[float]) -> str:
    """The ratio of two medians, with the range of pairwise ratios of the same repeats."""
    pairs = [n / d for n, d in zip(numerators, denominators, strict=False)]
    return f"{statistics.median(numerators) / statistics.median(denominators):.2f}x " \
           f"(range {min(pairs):.2f} to {max(pairs):.2f})"


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files-per-second", type=float, default=0,
                        help="the spool reader's read budget (default 0: none, to measure the reader itself)")
    parser.add_argument("--processes", type=int, default=0, help="spool_processes (default: one per CPU)")
    parser.add_argument("--threads", type=int, default=6, help="SMTP clients injecting in parallel")
    parser.add_argument("--lab-dir", help="keep the lab (its queue) here and reuse it: a run tops the queue up to "
                                          "--messages instead of building it anew")
    parser.add_argument("--build-only", action="store_true", help="build the queue and stop (with --lab-dir)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        root = Path(args.lab_dir) if args.lab_dir else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="mtaq-spoolbench-")))
        lab, provider = start_lab(root, **LAB_SETTINGS)
        exporter = None
        try:
            build_queue(lab, args.messages, args.threads)
            if args.build_only:
                return
            n = queued(lab)
            mtaq_read(str(lab.showq_path))  # untimed: every timed read finds the files in the page cache
            showq_runs, exporter_runs, showq_rss = [], [], 0
            rounds = []
            for r in range(args.repeat):
                exporter, showq_s, exporter_s, rss = showq_baselines(lab, queued(lab), 1)
                exporter.terminate()
                exporter.wait()
                exporter = None
                showq_runs.append(showq_s)
                exporter_runs.append(exporter_s)
                showq_rss = max(showq_rss, rss)
                rounds.append(spool_round(lab, args, args.processes, inotify=True))
                print(f"round {r + 1}: showq {showq_s:.3f} s, postfix_exporter {exporter_s:.3f} s, spool first "
                      f"{rounds[-1]['first']['seconds']:.3f} s, unchanged {rounds[-1]['unchanged']['seconds']:.4f} s, "
                      f"after 1% {rounds[-1]['steady']['seconds']:.3f} s", flush=True)
            alone = spool_round(lab, args, 1, inotify=False)
        finally:
            if exporter:
                exporter.terminate()
                exporter.wait()
            lab.abort()
            provider.stop()

    def figures(key: str) -> list[float]:
        return [r[key]["seconds"] for r in rounds]

    first, unchanged, steady = figures("first"), figures("unchanged"), figures("steady")
    last = rounds[-1]
    changes = last["changes"]
    print(f"\nqueue read, {n} messages ({args.repeat} runs each, interleaved; ranges over the runs):")
    print(f"  mtaq showq read (showq -> classify -> tally):  {span(showq_runs)}, peak RSS {showq_rss / 1024:.0f} MiB")
    print(f"  prometheus-postfix-exporter 0.3.0 scrape:       {span(exporter_runs)}")
    print(f"  mtaq spool, first scan ({last['first']['workers']} worker processes): {span(first)}: "
          f"{ratio(showq_runs, first)} showq, {ratio(exporter_runs, first)} postfix_exporter (>= 1: no slower)")
    print(f"  mtaq spool, rescan of the unchanged queue (inotify): {span(unchanged, digits=4)}: "
          f"{ratio(showq_runs, unchanged)} faster than showq")
    print(f"  mtaq spool, rescan after 1% changed ({changes['held']} held, {changes['deleted']} deleted, "
          f"{changes['new']} new; files looked at {last['steady']['files']}, read {last['steady']['read']}, "
          f"moved {last['steady']['moved']}, removed {last['steady']['removed']}): {span(steady)}: "
          f"{ratio(showq_runs, steady)} faster than showq, {ratio(exporter_runs, steady)} than postfix_exporter "
          f"(target >= 10x)")
    print(f"  mtaq spool peak RSS: {max(r['steady']['rss_kib'] for r in rounds) / 1024:.0f} MiB, each worker "
          f"process {max(r['first']['worker_rss_kib'] for r in rounds) / 1024:.0f} MiB (target < 300 MiB)")
    print(f"  for comparison, one process and no inotify: first scan {alone['first']['seconds']:.3f} s, "
          f"rescan unchanged {alone['unchanged']['seconds']:.3f} s, after 1% {alone['steady']['seconds']:.3f} s "
          f"(every file stat'ed: {alone['steady']['files']}), peak RSS {alone['steady']['rss_kib'] / 1024:.0f} MiB")
    print(f"  read budget: {args.files_per_second:g} files/s (0: none)")


if __name__ == "__main__":
    main()

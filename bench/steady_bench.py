"""What a log sidecar costs at steady state: CPU seconds per million lines and RSS (SPEC §8).

Runs the real agent (``mtaq-exporter``, log collector only, the lab's classification) tailing a
file that this benchmark appends to at ``--rate`` lines/s (default 1000) for ``--duration``
seconds (default 600; ``--duration 60`` for a quick run while developing). The lines are the
bench corpus of ``bench/log_bench.py`` (the lab's real log replicated with fresh queue ids, its
share of deferral lines printed). Debian's ``prometheus-postfix-exporter``, when installed, tails
the same file at the same time, as the baseline measured in the same run.

Every second it samples each process's CPU time (user + system, from ``/proc/<pid>/stat``) and
RSS; at the end it waits until the agent's ``mtaq_log_lines_total`` has every line (so the
figure includes the backlog, if any), then prints:

- CPU seconds per million lines, counted from the first appended line (start-up excluded), and
  the average share of one core;
- RSS at the end and its peak (``VmHWM``); the agent's tracked messages (its per-message table,
  capped at 100k, is what grows with a backlog).

    .venv/bin/python bench/steady_bench.py [--rate 1000] [--duration 600] [--source FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.log_bench import (  # after the sys.path line
    DEFAULT_SOURCE,
    corpus,
    cpu_seconds,
    deferral_share,
    metric,
    source_lines,
)

_TICK = 0.1  # seconds between appends: 100 lines a time at 1k lines/s
# The lab's classification, as in log_bench: its provider simulator on loopback stands in for
# the providers, so that deliveries take the provider path, not the on-host one.
CONFIG = "local_delivery:\n  loopback: false\n"


@dataclass
class Sample:
    """CPU seconds and RSS of one process at one moment."""

    cpu: float
    rss_mb: float
    peak_mb: float


def sample(pid: int) -> Sample:
    """CPU time (user + system) and resident memory of ``pid``, from /proc."""
    cpu = cpu_seconds(pid)
    rss = peak = float("nan")
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return Sample(cpu, rss, peak)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, done: Callable[[], bool], limit: float) -> None:
    began = time.monotonic()
    while not done():
        if time.monotonic() - began > limit:
            raise TimeoutError(what)
        time.sleep(0.2)


def main() -> int:
    """Feed the log at the rate for the duration, then print the cost per million lines and RSS."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="lines appended per second")
    parser.add_argument("--duration", type=float, default=600, help="seconds of appending")
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="a real Postfix log to replicate")
    args = parser.parse_args()
    total = int(args.rate * args.duration)
    lines = corpus(source_lines(args.source), total)
    print(f"corpus: {total} lines from {args.source} ({100 * deferral_share(lines):.1f}% deferral lines), "
          f"appended at {args.rate} lines/s for {args.duration:.0f} s")
    agent_bin = os.path.join(os.path.dirname(sys.executable), "mtaq-exporter")
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "mail.log")
        config = os.path.join(tmp, "mtaq.yml")
        open(log, "w").close()
        with open(config, "w") as f:
            f.write(CONFIG)
        port = _port()
        url = f"http://127.0.0.1:{port}/metrics"
        procs = {"mtaq-exporter": subprocess.Popen(
            [agent_bin, "--config.file", config, "--log.path", log, "--log.from", "start",
             "--no-collector.postfix_queue", "--no-collector.exim_queue", "--no-collector.exim_log",
             "--no-collector.dnsbl", f"--web.listen-address=127.0.0.1:{port}", "--log.level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)}
        baseline = shutil.which("prometheus-postfix-exporter")
        base_port = _port()
        base_url = f"http://127.0.0.1:{base_port}/metrics"
        if baseline:
            procs["postfix_exporter"] = subprocess.Popen(
                [baseline, f"--web.listen-address=127.0.0.1:{base_port}", f"--postfix.logfile_path={log}",
                 f"--postfix.showq_path={tmp}/no-showq"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait("the agent did not answer", lambda: metric(url, "mtaq_log_lines_total") >= 0, 60)
            if baseline:
                _wait("postfix_exporter did not answer", lambda: metric(base_url, "postfix_up") >= 0, 60)
            time.sleep(1)  # let both open the log
            start = {name: sample(p.pid) for name, p in procs.items()}
            peaks = dict(start)
            per_tick = max(1, int(args.rate * _TICK))
            began = time.monotonic()
            next_sample = began + 1
            with open(log, "a") as f:
                for i in range(0, total, per_tick):
                    f.write("\n".join(lines[i:i + per_tick]) + "\n")
                    f.flush()
                    now = time.monotonic()
                    if now >= next_sample:
                        next_sample += 1
                        for name, p in procs.items():
                            peaks[name] = sample(p.pid)
                    target = began + (i + per_tick) / args.rate
                    if target > now:
                        time.sleep(target - now)
            fed = time.monotonic() - began
            _wait("the agent did not read every line", lambda: metric(url, "mtaq_log_lines_total") >= total, 600)
            caught_up = time.monotonic() - began
            end = {name: sample(p.pid) for name, p in procs.items()}
            tracked = metric(url, "mtaq_log_tracked_messages")
        finally:
            for p in procs.values():
                p.terminate()
                p.wait()
    print(f"fed {total} lines in {fed:.1f} s ({total / fed:,.0f} lines/s); the agent had them all after "
          f"{caught_up:.1f} s")
    mtaq_cpu = end["mtaq-exporter"].cpu - start["mtaq-exporter"].cpu
    for name in procs:
        cpu = end[name].cpu - start[name].cpu
        note = "" if name == "mtaq-exporter" or not cpu else f" (mtaq uses {mtaq_cpu / cpu:.2f}x this)"
        print(f"{name:<17} {cpu / total * 1e6:7.1f} CPU s per 1M lines{note}, {100 * cpu / caught_up:5.1f}% of a core; "
              f"RSS {end[name].rss_mb:.0f} MB at the end, peak {max(end[name].peak_mb, peaks[name].peak_mb):.0f} MB")
    if baseline:
        print("  (postfix_exporter's CPU covers the lines it tailed; it counts fewer things: no lanes, providers "
              "or reasons)")
    print(f"mtaq tracked messages at the end: {tracked:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

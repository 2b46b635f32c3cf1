"""How soon a log line shows in /metrics, and the agent's resident memory (SPEC §8).

    .venv/bin/python -m bench.latency_bench [--samples 30]

Starts the real agent tailing a fresh file (inotify wake-up plus the 250 ms poll), appends one
real Postfix delivery line at a time, and measures from the write until a scrape shows it in
``mtaq_log_lines_total``. Then prints the agent's RSS (target: a line within 1 s, RSS < 100 MB).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
LINE = ("Nov 27 17:52:39 mta postfix-lab/smtp[5708]: {qid}: to=<a@gmail.com>, relay=127.0.0.1[127.0.0.1]:25, "
        "delay=0.03, delays=0.01/0.01/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued)\n")


def lines_counted(url: str) -> float:
    """Total of mtaq_log_lines_total in one scrape (-1 while the agent is not answering)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return -1
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("mtaq_log_lines_total{"))


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "mail.log"
        log.touch()
        port = free_port()
        agent = subprocess.Popen([sys.executable, "-m", "exporter.cli", f"--web.listen-address=127.0.0.1:{port}",
                                  f"--log.path={log}", "--log.from=start"], cwd=ROOT,
                                 env={**os.environ, "MTAQ_POSTFIX__ENABLED": "false"},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/metrics"
        try:
            wait_until(lambda: lines_counted(url) >= 0, timeout=30, what="the agent")
            delays = []
            for i in range(args.samples):
                before = lines_counted(url)
                began = time.perf_counter()
                with open(log, "a") as f:
                    f.write(LINE.format(qid=f"{0xA0000 + i:X}"))
                wait_until(lambda before=before: lines_counted(url) > before, timeout=10, what="the line",
                           interval=0.005)
                delays.append(time.perf_counter() - began)
                time.sleep(0.1 + (i % 7) * 0.05)  # land at different points of the poll cycle
            delays.sort()
            print(f"log line -> /metrics over {len(delays)} lines: median {statistics.median(delays) * 1000:.0f} ms, "
                  f"max {delays[-1] * 1000:.0f} ms (target < 1000 ms)")
            print(f"agent RSS while tailing: {rss_mb(agent.pid):.0f} MiB (target < 100 MiB)")
        finally:
            agent.terminate()
            agent.wait()


if __name__ == "__main__":
    main()

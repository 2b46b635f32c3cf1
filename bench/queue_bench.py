"""Queue read benchmark: mtaq vs Debian's prometheus-postfix-exporter on the same real queue.

    sudo .venv/bin/python -m bench.queue_bench [--messages 100000] [--synthetic 1000000]

1. Builds a deferred queue of ``--messages`` messages in a private real Postfix (the lab, with
   ``defer_transports = smtp`` so nothing is attempted), injected over SMTP.
2. Times one full queue read by mtaq (showq socket → decode → classify → tally) against one
   ``/metrics`` scrape of ``prometheus-postfix-exporter`` reading the same showq socket, several
   times each, interleaved, and prints the medians and their ratio.
3. Measures ``/metrics`` latency of the running mtaq agent with that queue.
4. Memory at scale: decodes a synthetic showq stream of ``--synthetic`` messages (real records
   from the captured fixture, replicated with fresh queue ids) from a unix socket, in a child
   process, and prints its peak RSS.
"""

from __future__ import annotations

import argparse
import os
import resource
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tests.helpers import free_port
from tests.lab.postfix import PostfixLab, start_lab

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "postfix_queue" / "showq.bin"
SENDERS = ["ops@alerts.example.com", "billing@shop.example.com", "news@bulk.example.com"]
DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "icloud.com", "example.com", "gmx.de"]


def inject(port: int, count: int, threads: int = 4) -> float:
    """Submit ``count`` one-recipient messages over SMTP; returns messages/s."""
    body = "Subject: bench\r\n\r\nqueue benchmark\r\n"

    def worker(start: int, stop: int) -> None:
        client = smtplib.SMTP("127.0.0.1", port, timeout=60)
        for i in range(start, stop):
            if i % 500 == 0 and i != start:  # smtpd limits commands per session
                client.quit()
                client = smtplib.SMTP("127.0.0.1", port, timeout=60)
            client.sendmail(SENDERS[i % 3], [f"u{i}@{DOMAINS[i % len(DOMAINS)]}"], body)
        client.quit()

    began = time.monotonic()
    step = count // threads
    workers = [threading.Thread(target=worker, args=(i * step, count if i == threads - 1 else (i + 1) * step))
               for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return count / (time.monotonic() - began)


def queue_files(queue_dir: Path, name: str) -> int:
    """Files in one queue directory (cheap progress check while Postfix files the mail)."""
    return sum(len(files) for _, _, files in os.walk(queue_dir / name))


def timed_get(url: str) -> float:
    """Seconds for one complete HTTP GET."""
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        response.read()
    return time.perf_counter() - began


MTAQ_READ = """
import sys, time
from collectors.classify import Classifier, ClassificationConfig
from collectors.postfix.instance import PostfixInstance, PostfixQueueReader
from collectors.postfix.showq import POSTFIX_QUEUES
from collectors.queue_collector import QueueCollector
lanes = ClassificationConfig.model_validate({"lanes": {"rules": [
    {"lane": "high", "match": {"sender": "*@alerts.example.com"}},
    {"lane": "low", "match": {"sender_domain": "bulk.example.com"}}]}})
reader = PostfixQueueReader(PostfixInstance(name="bench", showq_path=sys.argv[1]))
c = QueueCollector("postfix_queue", "postfix", [reader], Classifier(lanes), POSTFIX_QUEUES, read_timeout=3600)
began = time.perf_counter()
assert c.run_refresh(), c.health.view().last_error
elapsed = time.perf_counter() - began
print(elapsed, c.snapshot("bench").total_messages, next(int(line.split()[1]) for line in open("/proc/self/status")
                                                     if line.startswith("VmHWM:")))
"""


def mtaq_read(showq: str) -> tuple[float, int, int]:
    """One full mtaq queue read in a fresh process: (seconds, messages, peak RSS KiB). The peak is
    the process's own (``VmHWM``): ``ru_maxrss`` would carry the parent's over fork and exec."""
    out = subprocess.run([sys.executable, "-c", MTAQ_READ, showq], capture_output=True, text=True, cwd=ROOT,
                         check=True).stdout.split()
    return float(out[0]), int(out[1]), int(out[2])


def showq_baselines(lab: PostfixLab, messages: int, repeat: int) -> tuple[subprocess.Popen, float, float, int]:
    """Start prometheus-postfix-exporter on the lab's showq socket, then time, interleaved,
    ``repeat`` full mtaq showq reads and ``repeat`` postfix_exporter scrapes. Returns the exporter
    (still running), the medians (mtaq, postfix_exporter) in seconds and mtaq's peak RSS in KiB."""
    showq = str(lab.showq_path)
    port = free_port()
    exporter = subprocess.Popen(
        ["prometheus-postfix-exporter", f"--web.listen-address=127.0.0.1:{port}",
         f"--postfix.showq_path={showq}", "--postfix.logfile_path=/dev/null"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        # listening, not a scrape: scraping a big queue takes longer than a readiness check may wait
        lab.wait_for(lambda: _listening(port), timeout=30, what="postfix_exporter")
        mtaq_times, baseline_times, rss = [], [], 0
        for _ in range(repeat):
            seconds, counted, peak = mtaq_read(showq)
            assert counted == messages, counted
            mtaq_times.append(seconds)
            rss = max(rss, peak)
            baseline_times.append(timed_get(url))
    except BaseException:
        exporter.terminate()
        exporter.wait()
        raise
    return exporter, statistics.median(mtaq_times), statistics.median(baseline_times), rss


def synthetic_server(path: str, count: int) -> threading.Thread:
    """Serve ``count`` real showq records (fresh queue ids) once on a unix socket."""
    raw = FIXTURE.read_bytes()
    header_end = raw.index(b"\0\0") + 2  # the protocol record
    records = [r + b"\0" for r in raw[header_end:].split(b"\0\0")[:-2]]
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    sock.listen(1)

    def serve() -> None:
        conn, _ = sock.accept()
        with conn:
            conn.sendall(raw[:header_end])
            batch = []
            for i in range(count):
                record = records[i % len(records)]
                qid_at = record.index(b"queue_id\0") + 9
                qid_end = record.index(b"\0", qid_at)
                batch.append(record[:qid_at] + f"{i:011X}".encode() + record[qid_end:] + b"\0")
                if len(batch) == 5000:
                    conn.sendall(b"".join(batch))
                    batch = []
            conn.sendall(b"".join(batch) + b"\0")
        sock.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--synthetic", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="mtaq-qbench-") as tmp:
        lab, provider = start_lab(Path(tmp), defer_transports="smtp", smtpd_client_connection_count_limit="0",
                                  in_flow_delay="0", qmgr_message_active_limit="50000")
        exporter = agent = None
        try:
            rate = inject(lab.smtp_port, args.messages)
            print(f"injected {args.messages} messages over SMTP at {rate:.0f} msg/s")
            lab.wait_for(lambda: queue_files(lab.queue_dir, "deferred") >= args.messages, timeout=1800,
                         what="all messages deferred")
            showq = str(lab.showq_path)
            exporter, mtaq_s, base_s, rss = showq_baselines(lab, args.messages, args.repeat)
            print(f"queue read, {args.messages} messages (median of {args.repeat}):")
            print(f"  mtaq (showq → classify → tally): {mtaq_s:.3f} s, peak RSS {rss / 1024:.0f} MiB")
            print(f"  prometheus-postfix-exporter 0.3.0 scrape: {base_s:.3f} s")
            print(f"  ratio baseline/mtaq: {base_s / mtaq_s:.2f}x (>= 1 means mtaq is no slower)")

            agent_port = free_port()
            agent = subprocess.Popen(
                [sys.executable, "-m", "exporter.cli", f"--web.listen-address=127.0.0.1:{agent_port}",
                 f"--postfix.showq-path={showq}"],
                cwd=ROOT, env={**os.environ, "MTAQ_POSTFIX__ENABLED": "true"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ready = f"http://127.0.0.1:{agent_port}/readyz"
            lab.wait_for(lambda: _answers(ready), timeout=120, what="agent ready")
            latencies = sorted(timed_get(f"http://127.0.0.1:{agent_port}/metrics") for _ in range(50))
            print(f"  mtaq /metrics latency with {args.messages} queued: median {latencies[25] * 1000:.1f} ms, "
                  f"max {latencies[-1] * 1000:.1f} ms (served from the last scan)")
        finally:
            for proc in (exporter, agent):
                if proc:
                    proc.terminate()
                    proc.wait()
            lab.abort()
            provider.stop()

    with tempfile.TemporaryDirectory(prefix="mtaq-qbench-syn-") as tmp:
        path = os.path.join(tmp, "showq")
        server = synthetic_server(path, args.synthetic)
        seconds, messages, peak = mtaq_read(path)
        server.join()
        print(f"synthetic showq stream, {messages} messages: {seconds:.2f} s "
              f"({messages / seconds:.0f} msg/s), peak RSS {peak / 1024:.0f} MiB (target < 300 MiB)")
    print(f"(bench process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except OSError:
        return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


if __name__ == "__main__":
    main()

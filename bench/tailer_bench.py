"""Raw tailer throughput: lines/s through ``Tailer.poll_once()`` with a sink that does nothing.

Generates a Postfix-like log of ``--lines`` lines (default 1M) in a temporary directory, then
reads it from the start ``--repeat`` times with a fresh tailer each time and prints the best run.
This measures the tailer alone (read, split, deliver); parsing and classification are measured
by their own benchmarks.

    .venv/bin/python bench/tailer_bench.py [--lines 1000000] [--repeat 3] [--checkpoint]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from collectors.tailer import Tailer  # after the sys.path line above, so it runs from a checkout

# Shaped like a real delivery line (about 200 bytes); the content does not matter to the tailer,
# only the line length does.
LINE = (
    "Jan 12 10:{m:02d}:{s:02d} mx1 postfix/smtp[{pid}]: {qid}: to=<user{n}@example.com>, "
    "relay=mx.example.net[192.0.2.10]:25, delay=1.2, delays=0.1/0/0.5/0.6, dsn=2.0.0, "
    "status=sent (250 2.0.0 Ok: queued as {qid})\n"
)


def generate(path: str, lines: int) -> int:
    """Write ``lines`` log lines to ``path``; return the file size."""
    with open(path, "w", encoding="ascii") as f:
        batch = []
        for n in range(lines):
            batch.append(LINE.format(m=n // 60 % 60, s=n % 60, pid=1000 + n % 5000, qid=f"{n:010X}", n=n))
            if len(batch) == 10_000:
                f.write("".join(batch))
                batch.clear()
        f.write("".join(batch))
    return os.path.getsize(path)


def run_once(path: str, checkpoint: str | None) -> tuple[float, int]:
    """Read the whole file once; return (seconds, lines delivered)."""
    tailer = Tailer([path], lambda source, lines: None, checkpoint_path=checkpoint, start_at="start", use_inotify=False)
    start = time.perf_counter()
    tailer.poll_once()
    elapsed = time.perf_counter() - start
    lines = tailer.stats[path].lines
    tailer.stop()
    return elapsed, lines


def main() -> None:
    """Generate the corpus, time the runs, print lines/s."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--checkpoint", action="store_true", help="also write a checkpoint (1 s interval)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mail.log")
        size = generate(path, args.lines)
        best = None
        for i in range(args.repeat):
            checkpoint = os.path.join(tmp, f"checkpoint-{i}.json") if args.checkpoint else None
            elapsed, lines = run_once(path, checkpoint)
            if lines != args.lines:
                raise SystemExit(f"delivered {lines} lines, expected {args.lines}")
            best = elapsed if best is None else min(best, elapsed)
        assert best is not None
        print(
            f"tailer: {args.lines} lines, {size / 1e6:.1f} MB, best of {args.repeat}: {best:.3f} s, "
            f"{args.lines / best:,.0f} lines/s, {size / best / 1e6:,.0f} MB/s"
        )


if __name__ == "__main__":
    main()

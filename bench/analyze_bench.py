"""``mtaq-exporter analyze`` against pflogsumm on the same 1M-line corpus, in the same run.

The corpus is ``bench/log_bench.py``'s (a real Postfix log replicated with fresh queue ids; its
share of deferral lines is printed). Each run is a fresh process, as an operator types it, timed
from start to exit (start-up included): pflogsumm, then ``analyze --json`` in one process
(``--jobs 1``) and split between two (``--jobs 2``, what the default chooses on an idle 2-core
machine), ``--repeat`` times each, interleaved; the best of each is printed with its ratio to
pflogsumm's best, and the load average before and after (two processes only pay off on idle
cores). The two ``analyze`` documents are compared: they must be equal.

What two cores can give at most is measured too: two ``--jobs 1`` runs side by side, each on the
whole corpus (twice the work, no splitting cost, both cores busy as in a split), and one on an
empty log (start-up and report: the part of a run no split shares). A split of one file can at
best take the empty run's time plus half of the rest of the pair's; its ratio to pflogsumm is the
ceiling of ``--jobs 2``'s ratio on this machine.

    .venv/bin/python bench/analyze_bench.py [--lines 1000000] [--repeat 3] [--source FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench.log_bench import DEFAULT_SOURCE, corpus, deferral_share, source_lines  # after the sys.path line

PFLOGSUMM = "/usr/sbin/pflogsumm"
# The lab's classification, as in log_bench: its provider simulator on loopback stands in for the providers.
CONFIG = "local_delivery:\n  loopback: false\n"
CEILING = "ceiling of a split on 2 cores"


def timed(command: list[str]) -> tuple[float, bytes]:
    """Wall seconds of ``command`` from start to exit, and what it printed."""
    began = time.perf_counter()
    out = subprocess.run(command, check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    return time.perf_counter() - began, out


def timed_pair(command: list[str]) -> float:
    """Wall seconds until two runs of ``command`` started together have both exited."""
    began = time.perf_counter()
    runs = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    for run in runs:
        if run.wait():
            raise subprocess.CalledProcessError(run.returncode, command)
    return time.perf_counter() - began


def main() -> int:
    """Time pflogsumm and analyze on the corpus; exit 1 if the analyze documents differ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="a real Postfix log to replicate")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the best is reported")
    args = parser.parse_args()
    lines = corpus(source_lines(args.source), args.lines)
    agent = os.path.join(os.path.dirname(sys.executable), "mtaq-exporter")
    with tempfile.TemporaryDirectory() as tmp:
        log = os.path.join(tmp, "mail.log")
        config = os.path.join(tmp, "mtaq.yml")
        with open(log, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        empty = os.path.join(tmp, "empty.log")
        with open(config, "w") as f:
            f.write(CONFIG)
        open(empty, "w").close()
        print(f"corpus: {len(lines)} lines from {os.path.relpath(args.source)} "
              f"({os.path.getsize(log) / 1e6:.0f} MB, {100 * deferral_share(lines):.1f}% status=deferred lines); "
              f"{len(os.sched_getaffinity(0))} cores")
        del lines
        analyze = {f"analyze --jobs {jobs}": [agent, "analyze", "--config.file", config, "--json", "--jobs",
                                              str(jobs), log] for jobs in (1, 2)}
        commands = {"pflogsumm": [PFLOGSUMM, log] if shutil.which(PFLOGSUMM) else None, **analyze}
        load = os.getloadavg()[0]
        best: dict[str, float] = {}
        documents: dict[str, bytes] = {}
        for _ in range(args.repeat):
            for name, command in commands.items():
                if command is not None:
                    seconds, documents[name] = timed(command)
                    best[name] = min(best.get(name, float("inf")), seconds)
            fixed, _ = timed([*analyze["analyze --jobs 1"][:-1], empty])
            ceiling = fixed + (timed_pair(analyze["analyze --jobs 1"]) - fixed) / 2
            best[CEILING] = min(best.get(CEILING, float("inf")), ceiling)
    print(f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
    reference = best.get("pflogsumm")
    for name, seconds in best.items():
        ratio = f"  {reference / seconds:4.2f}x pflogsumm" if reference and name != "pflogsumm" else ""
        print(f"{name:<34} {seconds:6.2f} s{ratio}")
    if reference is None:
        print("pflogsumm: not installed")
    print(f"--jobs 2 reaches {best[CEILING] / best['analyze --jobs 2']:.0%} of what two cores can give here")
    same = documents["analyze --jobs 1"] == documents["analyze --jobs 2"]
    print("analyze documents: identical" if same else "analyze documents: DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

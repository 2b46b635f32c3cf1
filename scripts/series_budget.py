#!/usr/bin/env python3
"""The series budget of one agent (one sidecar): how many time series Prometheus stores for it.

    python -m scripts.series_budget --demo                     # the demo, after one pass of its logs
    python -m scripts.series_budget --url http://HOST:10154    # a running agent, now
    python -m scripts.series_budget --config FILE              # the worst case that configuration allows

Measured counts are what ``/metrics`` shows (one series per sample line, histogram buckets
included). The worst case multiplies, per family of the metric catalogue, the number of values
each label can take under the configuration: lanes, providers (the table plus ``local`` and
``other``), reasons, queues, ... It is per MTA instance: the log collectors account up to
16 instances apart, and a sidecar beside one Postfix sees one.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from importlib import resources
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collectors.classify import REASONS, Classifier  # noqa: E402
from collectors.delivery_accounting import DELAY_BUCKETS, NOTIFICATION_TYPES  # noqa: E402
from collectors.dnsbl_catalogue import load_catalogue  # noqa: E402
from collectors.families import ACTIONS, CATALOGUE, DNSBL, Family  # noqa: E402
from collectors.postfix.showq import POSTFIX_QUEUES  # noqa: E402
from collectors.queue_collector import SKIP_REASONS  # noqa: E402
from collectors.table import COLLECTORS  # noqa: E402
from exporter.config import load_config  # noqa: E402

#: Values of labels whose set is fixed in the code, where the code has no constant to read.
STATUSES = 3  # delivery attempts: sent, deferred, bounced; delays: sent, bounced, expired; probes: 3 results
BOUNCE_TYPES = 2  # hard, soft
LOG_RESULTS = 3  # parsed, ignored, unparsed
ACTION_RESULTS = 6  # applied, extended, restored, ignored, failed, dry_run


def scrape(url: str) -> Counter[str]:
    """Series per family of a running agent's ``/metrics``."""
    with urllib.request.urlopen(url.rstrip("/") + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return Counter({family.name: len(family.samples) for family in text_string_to_metric_families(text)})


def measure_demo(lines_per_second: float = 2000) -> Counter[str]:
    """Run ``mtaq-exporter demo`` until its agent has read each bundled log (Postfix's and Exim's)
    once; its series."""
    import socket

    from exporter.commands.demo import EXIM_REPLAY, POSTFIX_REPLAY

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lines = {mta: len(resources.files("collectors").joinpath(f"data/{replay.file}").read_text().splitlines())
             for mta, replay in (("postfix", POSTFIX_REPLAY), ("exim", EXIM_REPLAY))}
    demo = subprocess.Popen([sys.executable, "-m", "exporter.cli", "demo", "--web.listen-address", f"127.0.0.1:{port}",
                             "--lines-per-second", str(lines_per_second), "--log.level", "warning"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                time.sleep(0.5)
                continue
            read: Counter[str] = Counter()
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    if sample.name == "mtaq_log_lines_total":
                        read[sample.labels["mta"]] += int(sample.value)
            if all(read[mta] >= count for mta, count in lines.items()):
                return scrape(f"http://127.0.0.1:{port}")
            time.sleep(0.5)
        raise SystemExit("the demo did not read its logs within 120 s")
    finally:
        demo.terminate()
        demo.wait(timeout=30)


def label_values(config_file: str | None) -> tuple[dict[str, int], dict[tuple[str, str], int], set[str]]:
    """(values per label, per-family exceptions, families of the collectors this config runs)."""
    config = load_config(config_file, environ={})
    classifier = Classifier(config)
    targets = len(config.dnsbl.targets.ips) + len(config.dnsbl.targets.domains)
    lists = len(load_catalogue(config.dnsbl)) if config.dnsbl.enabled else 0
    actions = len({rule.action for rule in config.actions.rules}) if config.actions.enabled else 0
    values = {
        "version": 1, "collector": len(COLLECTORS), "mta": 1, "mta_instance": 1,
        "queue": len(POSTFIX_QUEUES), "lane": len(classifier.lane_names), "provider": len(classifier.provider_names),
        "reason": len(REASONS), "status": STATUSES, "type": BOUNCE_TYPES, "source": max(1, len(config.log.paths)),
        "result": LOG_RESULTS, "path": 1, "target": targets, "list": lists, "code": 1, "meaning": 1,
        "delist_url": 1, "action": actions,
    }
    exceptions = {
        ("mtaq_lane_objective_messages", "objective"): 1, ("mtaq_lane_objective_seconds", "objective"): 2,
        ("mtaq_queue_skipped_messages", "reason"): len(SKIP_REASONS),
        ("mtaq_queue_source_info", "source"): 1,  # the source of the last read, one at a time
        ("mtaq_notifications_total", "type"): len(NOTIFICATION_TYPES),
        ("mtaq_actions_total", "result"): ACTION_RESULTS,
    }
    # A sidecar runs the queue and log collectors; blocklists and actions only when configured.
    off = (() if config.dnsbl.enabled else DNSBL) + (() if config.actions.enabled else ACTIONS)
    return values, exceptions, set(CATALOGUE) - {f.name for f in off}


def worst_case(family: Family, values: dict[str, int], exceptions: dict[tuple[str, str], int]) -> tuple[int, str]:
    """Series of ``family`` when every label takes every value it can, and the product spelled out."""
    counts = [(label, exceptions.get((family.name, label)) or values[label]) for label in family.labels]
    series = math.prod(count for _, count in counts)
    formula = " x ".join(f"{count} {label}" for label, count in counts)
    if family.kind == "histogram":
        series *= len(DELAY_BUCKETS) + 1 + 2
        formula += f" x ({len(DELAY_BUCKETS)} buckets + Inf + sum + count)"
    return series, formula


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--demo", action="store_true", help="measure the demo after one pass of each of its logs")
    group.add_argument("--url", help="measure a running agent (http://host:port)")
    group.add_argument("--config", metavar="FILE", nargs="?", const="",
                       help="the worst case of a configuration (none: the defaults)")
    args = parser.parse_args(argv)
    if args.config is not None:
        values, exceptions, running = label_values(args.config or None)
        rows = sorted(((*worst_case(f, values, exceptions), f.name) for f in CATALOGUE.values() if f.name in running),
                      reverse=True)
        for count, formula, name in rows:
            print(f"{count:7d}  {name}  {formula}")
        print(f"{sum(r[0] for r in rows):7d}  total mtaq_* series, worst case per MTA instance "
              f"({values['lane']} lanes, {values['provider']} providers, {values['reason']} reasons)")
        return 0
    counts = measure_demo() if args.demo else scrape(args.url)
    for name, count in counts.most_common():
        print(f"{count:7d}  {name}")
    mtaq = sum(c for n, c in counts.items() if n.startswith("mtaq_"))
    print(f"{mtaq:7d}  mtaq_* series\n{sum(counts.values()):7d}  all series (process_* and python_* included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
